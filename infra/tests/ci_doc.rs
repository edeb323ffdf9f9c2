//! docs/ci.md's deploy step as a pipeline runs it: `scripts/ci-deploy` unchanged, with the
//! credentials of one exchange of a CI's OIDC token (at moto's STS, as the workflow's
//! configure-aws-credentials step does at AWS's) and CloudFormation's own role, against moto;
//! every AWS call it makes held against `deployments/ci-policy.json`; and the page's workflow
//! checked by `actionlint` and `zizmor`. A `cargo` first on `PATH` runs the built
//! deploy tool with `--endpoint-url`, and stands in for cargo-lambda (zips whose `bootstrap` is
//! fixed; building arm64 functions is not what this tests).

use std::path::Path;
use std::process::{Command, Output};

use runvoy_aws::testkit::{moto_endpoint, unique};

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

const CARGO_SHIM: &str = r#"#!/bin/sh
if [ "$1" = lambda ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = --lambda-dir ]; then dir=$2; fi
    shift
  done
  for f in forwarder api websocket completion; do
    mkdir -p "$dir/$f" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z: z.writestr("bootstrap", sys.argv[2])' \
      "$dir/$f/bootstrap.zip" "$f ${CODE_VERSION:-v1}"
  done
  exit 0
fi
while [ "$1" != "--" ]; do shift; done
shift
exec "$DEPLOY_BIN" "$@" --endpoint-url "$MOTO"
"#;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The role credentials one `AssumeRoleWithWebIdentity` gives (what the workflow's
/// configure-aws-credentials step exports for the rest of the job).
fn exchange_once(token: &str) -> (String, String, String) {
    let o = Command::new("aws")
        .args([
            "sts",
            "assume-role-with-web-identity",
            "--role-arn",
            "arn:aws:iam::123456789012:role/runvoy-deploy",
            "--role-session-name",
            "ci",
            "--web-identity-token",
            token,
            "--endpoint-url",
            &moto_endpoint(),
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env("AWS_ACCESS_KEY_ID", "none")
        .env("AWS_SECRET_ACCESS_KEY", "none")
        .output()
        .expect("the aws CLI (scripts/services installs it)");
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &v["Credentials"];
    let get = |k: &str| c[k].as_str().unwrap().to_string();
    (
        get("AccessKeyId"),
        get("SecretAccessKey"),
        get("SessionToken"),
    )
}

/// Starts or stops recording moto's requests (scripts/moto-server); stopping returns them.
fn recording(on: bool) -> Vec<serde_json::Value> {
    let o = Command::new("curl")
        .args(["-sf", "-X", "POST"])
        .arg(format!(
            "{}/_sim/record?on={}&clear=1",
            moto_endpoint(),
            u8::from(on)
        ))
        .output()
        .expect("curl");
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["requests"].as_array().cloned().unwrap_or_default()
}

/// The IAM checks AWS makes for one recorded request: `(action, resource)`.
fn checks_of(r: &serde_json::Value, region: &str, account: &str) -> Vec<(String, String)> {
    let p = &r["params"];
    let param = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    let target = r["target"].as_str().unwrap_or_default();
    let service = r["service"].as_str().unwrap_or_default();
    if let Some((prefix, op)) = target.split_once('.') {
        return match prefix {
            "secretsmanager" => {
                let id = param("SecretId");
                let arn = if id.starts_with("arn:") {
                    id
                } else {
                    format!("arn:aws:secretsmanager:{region}:{account}:secret:{id}-AbCdEf")
                };
                vec![(format!("secretsmanager:{op}"), arn)]
            }
            p if p.starts_with("Logs_") => vec![(
                format!("logs:{op}"),
                format!(
                    "arn:aws:logs:{region}:{account}:log-group:{}",
                    param("logGroupName")
                ),
            )],
            other => panic!("a call of {other}.{op} the policy test does not know"),
        };
    }
    let action = param("Action");
    match service {
        "sts" => vec![(format!("sts:{action}"), "*".into())],
        "cloudformation" => {
            let name = param("StackName");
            let arn = if name.starts_with("arn:") {
                name
            } else {
                format!("arn:aws:cloudformation:{region}:{account}:stack/{name}/0")
            };
            let mut out = vec![(format!("cloudformation:{action}"), arn)];
            let role = param("RoleARN");
            if !role.is_empty() {
                out.push(("iam:PassRole".into(), role));
            }
            out
        }
        "s3" => {
            let path = r["path"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/');
            let query = r["query"].as_str().unwrap_or_default();
            let method = r["method"].as_str().unwrap_or_default();
            let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
            let action = match (method, key.is_empty(), query) {
                ("HEAD" | "GET", true, "") => "s3:ListBucket",
                ("PUT", true, "") => "s3:CreateBucket",
                ("PUT", true, q) if q.starts_with("publicAccessBlock") => {
                    "s3:PutBucketPublicAccessBlock"
                }
                ("PUT", true, q) if q.starts_with("encryption") => "s3:PutEncryptionConfiguration",
                ("HEAD" | "GET", false, _) => "s3:GetObject",
                ("PUT", false, _) => "s3:PutObject",
                other => panic!("an S3 call the policy test does not know: {other:?} {path}"),
            };
            let resource = if key.is_empty() {
                format!("arn:aws:s3:::{bucket}")
            } else {
                format!("arn:aws:s3:::{bucket}/{key}")
            };
            vec![(action.into(), resource)]
        }
        other => panic!("a call of {other} ({action}) the policy test does not know"),
    }
}

/// The page's workflow passes `actionlint` and `zizmor` (both from PyPI; scripts/services
/// installs them).
#[test]
fn the_documented_workflow_passes_actionlint_and_zizmor() {
    let doc = std::fs::read_to_string(workspace().join("docs/ci.md")).unwrap();
    let section = doc
        .split("## A GitHub Actions workflow")
        .nth(1)
        .expect("the workflow section");
    let workflow = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block");
    let dir = std::env::temp_dir().join(unique("workflow"));
    std::fs::create_dir_all(dir.join(".github/workflows")).unwrap();
    std::fs::write(dir.join(".github/workflows/deploy.yml"), workflow).unwrap();
    // actionlint wants a git work tree.
    assert!(
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(&dir)
            .status()
            .unwrap()
            .success()
    );
    for (tool, args) in [
        ("actionlint", vec![]),
        (
            "zizmor",
            vec!["--no-progress", ".github/workflows/deploy.yml"],
        ),
    ] {
        let o = Command::new(tool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("{tool} must be installed (scripts/services installs it): {e}")
            });
        assert!(o.status.success(), "{tool} found problems:\n{}", text(&o));
    }
    assert!(
        workflow.contains("aws-actions/configure-aws-credentials@")
            && !workflow.contains("runner.temp"),
        "one credential exchange for the whole job"
    );
}

/// The pipeline's policy as documented: the audience check and the subject check in one
/// `StringEquals` (JSON keeps only the last of two), and `iam:PassRole` only to CloudFormation.
#[test]
fn the_documented_policies_are_whole_and_narrow() {
    let doc = std::fs::read_to_string(workspace().join("docs/ci.md")).unwrap();
    let trust = doc
        .split("## The roles")
        .nth(1)
        .and_then(|s| s.split("```json\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("the trust policy block");
    let v: serde_json::Value = serde_json::from_str(trust).expect("the trust policy is JSON");
    assert_eq!(v["Version"], "2012-10-17");
    let cond = &v["Statement"][0]["Condition"]["StringEquals"];
    assert_eq!(
        cond["token.actions.githubusercontent.com:aud"],
        "sts.amazonaws.com"
    );
    assert!(cond["token.actions.githubusercontent.com:sub"].is_string());
    assert_eq!(
        trust.matches("StringEquals").count(),
        1,
        "one StringEquals key"
    );
    for file in ["ci-policy.json", "cloudformation-role-policy.json"] {
        let text = std::fs::read_to_string(workspace().join("deployments").join(file)).unwrap();
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(p["Version"], "2012-10-17", "{file}");
        for st in p["Statement"].as_array().unwrap() {
            let actions: Vec<String> = match &st["Action"] {
                serde_json::Value::String(a) => vec![a.clone()],
                a => a
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
            };
            assert!(
                actions.iter().all(|a| !a.ends_with(":*") && a != "*"),
                "{file}: {st}"
            );
            if actions.iter().any(|a| a == "iam:PassRole") {
                assert!(
                    st["Condition"]["StringEquals"]["iam:PassedToService"].is_string(),
                    "{file}: PassRole names the service it passes to: {st}"
                );
            }
        }
    }
}

#[test]
fn the_documented_ci_step_deploys_with_one_credential_exchange() {
    let script = std::fs::read_to_string(workspace().join("scripts/ci-deploy")).unwrap();
    let doc = std::fs::read_to_string(workspace().join("docs/ci.md")).unwrap();
    // The script without its shebang and leading comment.
    let body: String = script
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        doc.contains(&format!("```sh\n{body}```")),
        "docs/ci.md shows scripts/ci-deploy as it is"
    );

    let dir = std::env::temp_dir().join(unique("ci-doc"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.join("deployments")).unwrap();
    let project = format!("ci{}", runvoy_runtime::random_hex(3));
    std::fs::write(
        dir.join("deployments/prod.toml"),
        format!("region = \"us-east-1\"\nproject = \"{project}\"\n"),
    )
    .unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, CARGO_SHIM).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (key_id, secret, session) = exchange_once("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln");

    let run = |phase: &str, code: &str| {
        Command::new("bash")
            .arg(workspace().join("scripts/ci-deploy"))
            .arg(phase)
            .env("CODE_VERSION", code)
            .current_dir(&dir)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("ENVIRONMENT", "prod")
            .env("DEPLOY_BIN", env!("CARGO_BIN_EXE_deploy"))
            .env("MOTO", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", &key_id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_SESSION_TOKEN", &session)
            .env(
                "CLOUDFORMATION_ROLE_ARN",
                "arn:aws:iam::123456789012:role/runvoy-cloudformation",
            )
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("HOME", &dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env_remove("AWS_ROLE_ARN")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    };
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };

    let built = run("build", "v1");
    assert!(built.status.success(), "{}", text(&built));
    assert!(dir.join("dist/api/bootstrap.zip").exists());

    // Every call of the deploy step, held against the pipeline's documented policy.
    recording(true);
    let first = run("apply", "v1");
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("prod deployed"), "{}", text(&first));
    assert_eq!(json("diff.json")["pending"], true, "nothing deployed yet");
    assert_eq!(json("up.json")["status"], "CREATE_COMPLETE");
    let status: serde_json::Value = serde_json::from_slice(
        first
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["stack"], format!("{project}-prod"));
    assert!(
        !dir.join("config").exists(),
        "--no-config leaves no key on the runner"
    );

    let second = run("apply", "v1");
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("prod is up to date"),
        "{}",
        text(&second)
    );
    assert_eq!(json("diff.json")["pending"], false);

    // A change of code alone is pending, and deployed.
    assert!(run("build", "v2").status.success());
    let third = run("apply", "v2");
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(json("diff.json")["pending"], true, "{}", text(&third));
    assert!(text(&third).contains("prod deployed"), "{}", text(&third));
    assert!(
        text(&third).contains("uploaded"),
        "the new zips went up: {}",
        text(&third)
    );

    let calls = recording(false);
    let policy_text = std::fs::read_to_string(workspace().join("deployments/ci-policy.json"))
        .unwrap()
        .replace("REGION", "us-east-1")
        .replace("ACCOUNT", "123456789012")
        .replace("CLOUDFORMATION_ROLE", "runvoy-cloudformation")
        .replace(
            "BUCKET",
            &format!("{project}-artifacts-123456789012-us-east-1"),
        )
        .replace("STACK", &format!("{project}-prod"));
    let policy: serde_json::Value = serde_json::from_str(&policy_text).unwrap();
    let policy = runvoy_sim::iam::Policy::from_statements("ci", &policy["Statement"]);
    let mut checked = std::collections::BTreeSet::new();
    for r in &calls {
        for (action, resource) in checks_of(r, "us-east-1", "123456789012") {
            if let Err(why) = policy.check(&runvoy_sim::iam::Check::new(&action, &resource)) {
                panic!(
                    "deployments/ci-policy.json does not allow a call of the deploy step: {why}"
                );
            }
            checked.insert(action);
        }
    }
    for needed in [
        "cloudformation:CreateChangeSet",
        "cloudformation:ExecuteChangeSet",
        "iam:PassRole",
        "s3:PutObject",
        "sts:GetCallerIdentity",
    ] {
        assert!(
            checked.contains(needed),
            "{needed} was called and checked: {checked:?}"
        );
    }

    // An error is an error: exit status 1, the pipeline stops.
    std::fs::write(dir.join("deployments/prod.toml"), "regoin = \"x\"\n").unwrap();
    let broken = run("apply", "v2");
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    assert!(text(&broken).contains("unknown field"), "{}", text(&broken));
}
