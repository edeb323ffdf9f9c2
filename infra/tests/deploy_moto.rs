//! `deploy up|diff|status|down` against moto's CloudFormation and S3: create, update through a
//! change set, no change, failure reporting, delete — and the errors that must stop it before
//! anything changes.
//!
//! moto creates the tables, roles, functions, queue, secret, log groups, rule and alarms, but
//! skips ApiGatewayV2 and Logs::SubscriptionFilter resources and returns no outputs for this
//! template; so these tests check stack status, uploads and change sets, not outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runvoy_aws::testkit::{moto_endpoint, unique};
use runvoy_core::function::Function;

struct Env {
    dir: PathBuf,
    name: String,
    project: String,
}

impl Env {
    fn new(parameters: &str) -> Env {
        let dir = std::env::temp_dir().join(unique("deploy"));
        std::fs::create_dir_all(dir.join("deployments")).unwrap();
        let name = "itest".to_string();
        let project = format!("rv{}", &runvoy_runtime::random_hex(3));
        std::fs::write(
            dir.join("deployments").join(format!("{name}.toml")),
            format!("region = \"us-east-1\"\nproject = \"{project}\"\n[parameters]\n{parameters}"),
        )
        .unwrap();
        let e = Env { dir, name, project };
        e.artifacts("v1");
        e
    }

    /// Function zips whose `bootstrap` (and so hash) depends on `version`.
    fn artifacts(&self, version: &str) {
        self.artifacts_zipped_at(version, "artifacts", 0);
    }

    /// The zips of `version` in `dir`, zipped at minute `minute` of a day (as cargo-lambda
    /// writes the build time into them).
    fn artifacts_zipped_at(&self, version: &str, dir: &str, minute: u8) -> PathBuf {
        use std::io::Write;
        let when = zip::DateTime::from_date_and_time(2026, 12, 7, 12, minute, 0).unwrap();
        for f in Function::ALL.map(Function::name) {
            let d = self.dir.join(dir).join(f);
            std::fs::create_dir_all(&d).unwrap();
            let file = std::fs::File::create(d.join("bootstrap.zip")).unwrap();
            let mut z = zip::ZipWriter::new(file);
            z.start_file(
                "bootstrap",
                zip::write::SimpleFileOptions::default().last_modified_time(when),
            )
            .unwrap();
            z.write_all(format!("{f} {version}").as_bytes()).unwrap();
            z.finish().unwrap();
        }
        self.dir.join(dir)
    }

    fn deploy(&self, args: &[&str], with_endpoint: bool) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
        c.args(args)
            .args(["--env", &self.name, "--deployments-dir"])
            .arg(self.dir.join("deployments"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env_remove("AWS_PROFILE");
        if with_endpoint {
            c.args(["--endpoint-url", &moto_endpoint()]);
        }
        c.output().unwrap()
    }

    fn up(&self) -> Output {
        let artifacts = self.dir.join("artifacts");
        self.deploy(
            &["up", "--yes", "--artifacts", artifacts.to_str().unwrap()],
            true,
        )
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    t
}

#[test]
fn create_update_no_change_and_delete() {
    let env = Env::new("RetentionDays = \"3\"\n");
    let created = ok(env.up());
    assert!(
        created.contains("change set for") && created.contains("(CREATE)"),
        "{created}"
    );
    assert!(
        created.contains("Add      LogsTable") && created.contains("AWS::DynamoDB::Table"),
        "{created}"
    );
    assert!(
        created.contains("CREATE_COMPLETE"),
        "progress shows stack events: {created}"
    );
    assert_eq!(created.matches("uploaded     s3://").count(), 4);
    // The on-failure queues hold log lines: kept as long as the stack's retention (3 days).
    let q = Command::new("aws")
        .args([
            "sqs",
            "get-queue-url",
            "--queue-name",
            &format!("{}-forwarder-failures", env.stack()),
            "--endpoint-url",
            &moto_endpoint(),
            "--region",
            "us-east-1",
            "--output",
            "text",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let url = String::from_utf8(q.stdout).unwrap().trim().to_string();
    let attrs = Command::new("aws")
        .args([
            "sqs",
            "get-queue-attributes",
            "--queue-url",
            &url,
            "--attribute-names",
            "MessageRetentionPeriod",
            "--endpoint-url",
            &moto_endpoint(),
            "--region",
            "us-east-1",
            "--output",
            "text",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&attrs.stdout).contains("259200"),
        "{}",
        text(&attrs)
    );

    let again = ok(env.up());
    assert!(again.contains("no changes"), "{again}");
    assert_eq!(
        again.matches("unchanged    s3://").count(),
        4,
        "artifacts are uploaded once: {again}"
    );

    env.artifacts("v2");
    let updated = ok(env.up());
    assert!(
        updated.contains("(UPDATE)") && updated.contains("UPDATE_COMPLETE"),
        "{updated}"
    );
    assert_eq!(
        updated.matches("uploaded     s3://").count(),
        4,
        "{updated}"
    );

    assert!(ok(env.deploy(&["status"], true)).contains("UPDATE_COMPLETE"));
    let deleted = ok(env.deploy(&["down", "--yes"], true));
    assert!(deleted.contains("deleted"), "{deleted}");
    assert!(ok(env.deploy(&["status"], true)).contains("not deployed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_resource_fails_the_deploy_without_claiming_success() {
    let env = Env::new("");
    // The logs table exists already (say, retained from an earlier stack): creation must fail.
    let dynamo = aws_sdk_dynamodb::Client::new(&runvoy_aws::testkit::sdk_config().await);
    runvoy_aws::create_tables(
        &dynamo,
        &format!("{}-itest-execution-logs", env.project),
        &unique("other"),
    )
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || env.up()).await.unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    // moto creates resources inside ExecuteChangeSet and answers 500 when one fails (AWS
    // reports it in stack events instead; that path is tested at the SDK boundary in
    // src/aws/cloudformation.rs). Either way the tool must fail and never claim success.
    assert!(t.contains("error:") && t.contains("change set"), "{t}");
    assert!(!t.contains("CREATE_COMPLETE"), "{t}");
}

#[test]
fn bad_input_stops_before_anything_changes() {
    let env = Env::new("");
    let missing = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["up", "--yes", "--env", "nope", "--deployments-dir"])
        .arg(env.dir.join("deployments"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let t = text(&missing);
    assert!(t.contains("cannot read") && t.lines().count() == 1, "{t}");

    std::fs::write(env.dir.join("deployments/itest.toml"), "region = [oops").unwrap();
    let malformed = env.deploy(&["status"], true);
    assert!(!malformed.status.success());
    assert!(text(&malformed).contains("not a valid environment file"));

    let env = Env::new("");
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    let no_creds = c
        .args(["status", "--env", "itest", "--deployments-dir"])
        .arg(env.dir.join("deployments"))
        .args(["--endpoint-url", &moto_endpoint()])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", Path::new("/nonexistent"))
        .env("AWS_SHARED_CREDENTIALS_FILE", Path::new("/nonexistent"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(!no_creds.status.success());
    let t = text(&no_creds);
    assert!(
        t.contains("no AWS credentials could be loaded (") && t.contains("aws sso login"),
        "the provider's own reason and what to do: {t}"
    );
    assert_eq!(t.lines().count(), 1, "{t}");

    // Names CloudFormation or S3 would refuse stop before any call.
    let bad_name = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["up", "--yes", "--env", "my_env", "--deployments-dir"])
        .arg(env.dir.join("deployments"))
        .output()
        .unwrap();
    assert_eq!(
        text(&bad_name).trim(),
        "error: environment name 'my_env' must be 1-20 lowercase letters, digits or '-', starting with a letter (it becomes part of every resource name, and CloudFormation and S3 refuse '_')"
    );
    // No region anywhere: one sentence saying where to set it.
    std::fs::write(
        env.dir.join("deployments/noregion.toml"),
        format!("project = \"{}\"\n", env.project),
    )
    .unwrap();
    let no_region = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["status", "--env", "noregion", "--deployments-dir"])
        .arg(env.dir.join("deployments"))
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_CONFIG_FILE", Path::new("/nonexistent"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(
        text(&no_region).trim(),
        "error: no region for environment 'noregion': set `region` in deployments/noregion.toml, pass --region, or set AWS_REGION"
    );
    // An endpoint that does not answer: the cause, not a dump.
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    let unreachable = c
        .args(["status", "--env", "itest", "--deployments-dir"])
        .arg(env.dir.join("deployments"))
        .args(["--endpoint-url", "http://127.0.0.1:9"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let t = text(&unreachable);
    assert!(
        t.starts_with(&format!(
            "error: describing stack {}-itest failed: no answer from AWS (",
            env.project
        )) && t.contains("check the network, --region and --endpoint-url"),
        "{t}"
    );
    assert_eq!(t.lines().count(), 1, "{t}");

    let dry = env.deploy(&["up", "--dry-run"], false);
    let t = ok(dry);
    assert!(
        t.contains("nothing is called") && t.contains("stack:"),
        "{t}"
    );
}

/// An environment file of `project` named `env`.
fn env_file(dir: &Path, env: &str, project: &str) {
    std::fs::write(
        dir.join("deployments").join(format!("{env}.toml")),
        format!("region = \"us-east-1\"\nproject = \"{project}\"\n"),
    )
    .unwrap();
}

fn json(o: Output) -> serde_json::Value {
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

#[test]
fn environments_coexist_and_rotate() {
    let base = Env::new("");
    let artifacts = base.dir.join("artifacts");
    let env = |name: &str| Env {
        dir: base.dir.clone(),
        name: name.into(),
        project: base.project.clone(),
    };
    let (blue, green) = (env("blue"), env("green"));
    env_file(&base.dir, "blue", &base.project);
    env_file(&base.dir, "green", &base.project);
    let up = |e: &Env| {
        json(e.deploy(
            &[
                "up",
                "--yes",
                "--output",
                "json",
                "--artifacts",
                artifacts.to_str().unwrap(),
            ],
            true,
        ))
    };
    let b = up(&blue);
    assert_eq!(b["stack"], format!("{}-blue", base.project));
    assert_eq!(b["status"], "CREATE_COMPLETE");
    assert!(b["changes"].as_array().unwrap().len() > 10, "{b}");
    let g = up(&green);
    assert_eq!(
        g["status"], "CREATE_COMPLETE",
        "a second environment in the same account"
    );
    let status = |e: &Env| json(e.deploy(&["status", "--output", "json"], true));
    assert_eq!(status(&blue)["status"], "CREATE_COMPLETE");
    assert_eq!(status(&green)["status"], "CREATE_COMPLETE");
    // The runner container's logConfiguration for this environment, ready to paste.
    let logging = &status(&green)["log_configuration"];
    assert_eq!(logging["logDriver"], "awslogs");
    assert_eq!(logging["options"]["mode"], "blocking", "{logging}");
    assert_eq!(
        logging["options"]["awslogs-group"].as_str(),
        Some(format!("/aws/ecs/{}-green/runner", base.project).as_str())
    );
    let down = json(blue.deploy(&["down", "--yes", "--output", "json"], true));
    assert_eq!(down["status"], "DELETE_COMPLETE");
    assert_eq!(status(&blue)["status"], serde_json::Value::Null);
    assert_eq!(
        status(&green)["status"],
        "CREATE_COMPLETE",
        "green is left intact"
    );
    // Green is usable: its tables are there under its own names.
    let tables = std::process::Command::new("aws")
        .args([
            "dynamodb",
            "list-tables",
            "--endpoint-url",
            &moto_endpoint(),
            "--region",
            "us-east-1",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).to_string();
    assert!(
        tables.contains(&format!("{}-green-execution-logs", base.project)),
        "{tables}"
    );
    assert!(
        !tables.contains(&format!("{}-blue-execution-logs", base.project)),
        "{tables}"
    );
    assert_eq!(up(&blue)["status"], "CREATE_COMPLETE", "blue comes back");
}

#[test]
fn diff_tells_ci_whether_changes_are_pending() {
    let env = Env::new("");
    assert!(env.up().status.success());
    let diff = |e: &Env| e.deploy(&["diff", "--output", "json"], true);
    let same = diff(&env);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    let v: serde_json::Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(v["pending"], false);
    // The same code built again (zipped at another time, as a fresh CI build is): no change.
    let rebuilt = env.artifacts_zipped_at("v1", "rebuilt", 42);
    let bytes = |d: &Path| std::fs::read(d.join("api/bootstrap.zip")).unwrap();
    assert_ne!(bytes(&rebuilt), bytes(&env.dir.join("artifacts")));
    let again = env.deploy(
        &[
            "diff",
            "--output",
            "json",
            "--artifacts",
            rebuilt.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    // Other code: pending.
    let other = env.artifacts_zipped_at("v2", "other", 42);
    let changed_code = env.deploy(
        &[
            "diff",
            "--output",
            "json",
            "--artifacts",
            other.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(
        changed_code.status.code(),
        Some(2),
        "{}",
        text(&changed_code)
    );
    std::fs::write(
        env.dir.join("deployments/itest.toml"),
        format!(
            "region = \"us-east-1\"\nproject = \"{}\"\n[parameters]\nRetentionDays = \"14\"\n",
            env.project
        ),
    )
    .unwrap();
    let changed = diff(&env);
    assert_eq!(changed.status.code(), Some(2), "{}", text(&changed));
    let v: serde_json::Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(v["pending"], true);
    let text_diff = env.deploy(&["diff"], true);
    assert_eq!(text_diff.status.code(), Some(2));
    assert!(
        !String::from_utf8_lossy(&text_diff.stdout).contains('\x1b'),
        "no ANSI off a terminal"
    );
}

/// `aws` (CLI v1) against moto with the given credentials; stdout as JSON (null when empty).
fn aws_cli(creds: (&str, &str, Option<&str>), args: &[&str]) -> serde_json::Value {
    let mut c = Command::new("aws");
    c.args(args)
        .args(["--endpoint-url", &moto_endpoint(), "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", creds.0)
        .env("AWS_SECRET_ACCESS_KEY", creds.1)
        .env_remove("AWS_PROFILE");
    match creds.2 {
        Some(t) => c.env("AWS_SESSION_TOKEN", t),
        None => c.env_remove("AWS_SESSION_TOKEN"),
    };
    let o = c.output().unwrap();
    assert!(o.status.success(), "aws {args:?}: {}", text(&o));
    if o.stdout.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

#[test]
fn a_bucket_of_another_account_is_never_written_to() {
    let env = Env::new("");
    // Someone in another account creates the bucket name `deploy` would choose first.
    let assumed = aws_cli(
        ("testing", "testing", None),
        &[
            "sts",
            "assume-role",
            "--role-arn",
            "arn:aws:iam::111111111111:role/sniper",
            "--role-session-name",
            "sniper",
        ],
    );
    let c = &assumed["Credentials"];
    let sniper = (
        c["AccessKeyId"].as_str().unwrap(),
        c["SecretAccessKey"].as_str().unwrap(),
        c["SessionToken"].as_str(),
    );
    let bucket = format!("{}-artifacts-123456789012-us-east-1", env.project);
    aws_cli(sniper, &["s3api", "create-bucket", "--bucket", &bucket]);

    let up = env.up();
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    let expected = format!(
        "error: the artifacts bucket s3://{bucket} exists but does not belong to account 123456789012 (or these credentials may not list it: s3:ListBucket), so no function code is uploaded to it; set artifacts_bucket in deployments/itest.toml to a bucket of this account"
    );
    assert!(
        String::from_utf8_lossy(&up.stderr).contains(&expected),
        "{}",
        text(&up)
    );
    let listed = aws_cli(sniper, &["s3api", "list-objects-v2", "--bucket", &bucket]);
    assert!(listed["Contents"].is_null(), "nothing uploaded: {listed}");

    // A bucket `deploy` creates itself is private and encrypted.
    let own = Env::new("");
    assert!(own.up().status.success());
    let bucket = format!("{}-artifacts-123456789012-us-east-1", own.project);
    let me = ("testing", "testing", None);
    let block = aws_cli(
        me,
        &["s3api", "get-public-access-block", "--bucket", &bucket],
    );
    assert_eq!(
        block["PublicAccessBlockConfiguration"]["BlockPublicPolicy"],
        true
    );
    let sse = aws_cli(me, &["s3api", "get-bucket-encryption", "--bucket", &bucket]);
    assert_eq!(
        sse["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256"
    );
}

#[test]
fn the_functions_clients_invoke_can_have_their_concurrency_capped() {
    let env = Env::new("WebsocketReservedConcurrency = \"5\"\n");
    ok(env.up());
    let me = ("testing", "testing", None);
    let of = |f: &str| {
        aws_cli(
            me,
            &[
                "lambda",
                "get-function-concurrency",
                "--function-name",
                &format!("{}-itest-{f}", env.project),
            ],
        )
    };
    assert_eq!(of("websocket")["ReservedConcurrentExecutions"], 5);
    assert_eq!(of("api"), serde_json::Value::Null, "empty reserves none");
}

impl Env {
    fn stack(&self) -> String {
        format!("{}-{}", self.project, self.name)
    }

    /// Makes moto's CloudFormation answer like CloudFormation for this stack (scripts/moto-server):
    /// operations finish `delay_ms` after they were asked for (until then reads show the stack as
    /// it was, then busy), and the next creation fails and rolls back.
    fn cfn(&self, query: &str) {
        let url = format!(
            "{}/_sim/cfn?stack={}&{query}",
            moto_endpoint(),
            self.stack()
        );
        let out = Command::new("curl")
            .args(["-sf", "-X", "POST", &url])
            .output()
            .expect("curl");
        assert!(out.status.success(), "{}", text(&out));
    }

    fn status_now(&self) -> serde_json::Value {
        let o = self.deploy(&["status", "--output", "json"], true);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// On a CloudFormation whose operations take time (and whose first answers after one still
/// describe the stack as it was), `up` returns only once the update ran and `down` only once
/// the stack is gone; a first creation that fails and rolls back is retried by the next `up`
/// without any cleanup by hand (the logs table is not retained on a failed create).
#[test]
fn up_and_down_wait_for_cloudformation_and_a_failed_create_is_retried() {
    let env = Env::new("RetainLogsTable = \"true\"\n");
    env.cfn("delay_ms=3000&fail_create=1");
    let failed = env.up();
    assert!(!failed.status.success());
    let said = text(&failed);
    assert!(
        said.contains("ROLLBACK_COMPLETE") && said.contains("CompletionFunction"),
        "the failure names the resource: {said}"
    );
    let retried = ok(env.up());
    assert!(
        retried.contains("to create it again") && retried.contains("CREATE_COMPLETE"),
        "{retried}"
    );
    assert_eq!(env.status_now()["status"], "CREATE_COMPLETE");

    env.artifacts("v2");
    let updated = ok(env.up());
    assert!(updated.contains("UPDATE_COMPLETE"), "{updated}");
    // `up` returned after the update ran: the stack says so at once.
    assert_eq!(env.status_now()["status"], "UPDATE_COMPLETE");

    ok(env.deploy(&["down", "--yes"], true));
    // `down` returned after the stack was gone: nothing left to describe.
    assert!(env.status_now()["status"].is_null());
}

/// A template over CloudFormation's inline limit (51,200 bytes) goes by S3 (`TemplateURL`).
#[test]
fn a_template_over_the_inline_limit_is_passed_by_url() {
    let env = Env::new("");
    let padding: String = (0..600)
        .map(|i| format!("  # {i:04} a comment that makes the rendered template long enough\n"))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .arg("render")
        .output()
        .unwrap();
    let mut template = String::from_utf8(out.stdout).unwrap();
    template.push_str(&padding);
    assert!(template.len() > 51_200);
    let path = env.dir.join("big.yaml");
    std::fs::write(&path, &template).unwrap();
    let artifacts = env.dir.join("artifacts");
    let created = ok(env.deploy(
        &[
            "up",
            "--yes",
            "--artifacts",
            artifacts.to_str().unwrap(),
            "--template",
            path.to_str().unwrap(),
        ],
        true,
    ));
    assert!(
        created.contains("over CloudFormation's 51200 inline")
            && created.contains("CREATE_COMPLETE"),
        "{created}"
    );
}

/// A log group takes two subscription filters: a stack pointed at a full one is refused before
/// anything changes, naming them.
#[test]
fn a_runner_group_without_room_for_a_subscription_filter_is_refused() {
    let group = format!("/external/{}", unique("full"));
    let stream = unique("sink");
    let aws = |args: &[&str]| {
        let o = Command::new("aws")
            .args(args)
            .args(["--endpoint-url", &moto_endpoint(), "--region", "us-east-1"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .expect("the aws CLI (scripts/services installs it)");
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    aws(&["logs", "create-log-group", "--log-group-name", &group]);
    aws(&[
        "kinesis",
        "create-stream",
        "--stream-name",
        &stream,
        "--shard-count",
        "1",
    ]);
    let arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}");
    for name in ["audit", "siem"] {
        aws(&[
            "logs",
            "put-subscription-filter",
            "--log-group-name",
            &group,
            "--filter-name",
            name,
            "--filter-pattern",
            "",
            "--destination-arn",
            &arn,
        ]);
    }
    let env = Env::new(&format!("RunnerLogGroupName = \"{group}\"\n"));
    let refused = env.up();
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("already has 2 subscription filters (audit, siem)")
            && said.contains("nothing was changed"),
        "{said}"
    );
    assert!(env.status_now()["status"].is_null(), "no stack was made");
}

/// RetainLogsTable is chosen at creation: switching it on a live stack is refused with what to
/// do, before any change set.
#[test]
fn switching_where_the_lines_are_kept_on_a_live_stack_is_refused() {
    let env = Env::new("");
    ok(env.up());
    std::fs::write(
        env.dir.join("deployments/itest.toml"),
        format!(
            "region = \"us-east-1\"\nproject = \"{}\"\n[parameters]\nRetainLogsTable = \"true\"\n",
            env.project
        ),
    )
    .unwrap();
    let refused = env.up();
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("created with RetainLogsTable = \"false\"")
            && said.contains("chosen at creation"),
        "{said}"
    );
    ok(env.deploy(&["down", "--yes"], true));
}
