//! docs/ci.md's deploy step as a pipeline runs it: `scripts/ci-deploy` unchanged, with web
//! identity credentials only (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, exchanged at moto's
//! STS as a CI's OIDC token is at AWS's), against moto. A `cargo` first on `PATH` runs the built
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

#[test]
fn the_documented_ci_step_deploys_with_web_identity_only() {
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
    let project = format!("ci{}", runvoy_local::state::random_hex(3));
    std::fs::write(
        dir.join("deployments/prod.toml"),
        format!("region = \"us-east-1\"\nproject = \"{project}\"\n"),
    )
    .unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, CARGO_SHIM).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("oidc-token"),
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln",
    )
    .unwrap();

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
            .env(
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/runvoy-deploy",
            )
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", dir.join("oidc-token"))
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("HOME", &dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
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

    // An error is an error: exit status 1, the pipeline stops.
    std::fs::write(dir.join("deployments/prod.toml"), "regoin = \"x\"\n").unwrap();
    let broken = run("apply", "v2");
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    assert!(text(&broken).contains("unknown field"), "{}", text(&broken));
}
