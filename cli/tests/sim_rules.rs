//! AWS's rules as the sim enforces them, each shown catching what it exists for: the IAM gate
//! (both ways), Lambda's 6 MB response, dropped subscription deliveries, pushes answered 410
//! while a connection is inside `$connect`, the TTL sweeper; and API key rotation on the
//! deployed functions. And the CLI against a failing `$connect` and connections cut at once.

mod common;

use std::time::{Duration, Instant};

use common::{Kind, Stack, numbered, output, stdout_lines};
use serde_json::Value;

/// The rendered template as JSON, with `edit` applied.
fn template_with(dir: &std::path::Path, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let out = std::process::Command::new(common::bin_dir().join("deploy"))
        .args(["render", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut t: Value = serde_json::from_slice(&out.stdout).unwrap();
    edit(&mut t);
    let path = dir.join("template.json");
    std::fs::write(&path, t.to_string()).unwrap();
    path
}

/// The sim deployed from `template` (its IAM refusals are expected, not a test failure).
async fn sim_with_template(tag: &str, template: &std::path::Path) -> Stack {
    let args = vec!["--template".into(), template.display().to_string()];
    Stack::start_with(Kind::Sim, tag, None, args).await
}

/// Removes `action` from every statement of `role`'s policy.
fn drop_action(t: &mut Value, role: &str, action: &str) {
    let statements =
        t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array_mut()
            .unwrap();
    for st in statements {
        if let Some(actions) = st["Action"].as_array_mut() {
            actions.retain(|a| a != action);
        }
    }
}

/// The sim's counters once `done` holds of them (polled; 60 s at most).
async fn stats_once(s: &Stack, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = s.sim_stats().await;
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never {what}: {stats:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counters of the function whose name ends with `suffix`.
fn function<'a>(stats: &'a Value, suffix: &str) -> &'a Value {
    stats["functions"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with(suffix))
        .unwrap()
        .1
}

fn denied(stats: &Value) -> Vec<(String, String)> {
    stats["gate"]["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d[0].as_str().unwrap().to_string(),
                d[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_roles_grant_what_the_functions_call() {
    let s = Stack::start(Kind::Sim, "iam-ok", None).await;
    let run = output(s.runvoy(&["run", "--", "sh", "-c", "seq 1 2000; sleep 1; seq 1 10"])).await;
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(stdout_lines(&run).len(), 2010);
    let stats = s.sim_stats().await;
    assert_eq!(denied(&stats), vec![], "{stats:#}");
    // What no call needed, for the record (the grants of Lambda's own log delivery and of
    // paths this run did not take).
    eprintln!("unused grants: {:#}", stats["unused_grants"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_missing_from_a_role_is_refused_like_aws_does() {
    let dir = common::temp_dir("iam-broken");
    let template = template_with(&dir, |t| {
        drop_action(t, "ForwarderRole", "dynamodb:PutItem");
        // And the API's Query of the `recent` index (listing executions).
        t["Resources"]["ApiRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array_mut()
            .unwrap()
            .retain(|st| !st["Resource"].to_string().contains("/index/recent"));
    });
    let s = sim_with_template("iam-broken", &template).await;
    s.put_lines("denied-1", &numbered("d", 1, 50)).await;
    // The refusal is counted during the call, the failed invocation once it ended.
    stats_once(
        &s,
        "refused the forwarder's write and failed its invocation",
        |stats| {
            denied(stats)
                .iter()
                .any(|(f, a)| f.ends_with("-forwarder") && a == "dynamodb:PutItem")
                && function(stats, "-forwarder")["errors"].as_u64().unwrap() > 0
        },
    )
    .await;
    // The rest of the API's role is intact: reading populates the execution from CloudWatch.
    let logs = output(s.runvoy(&["logs", "denied-1", "--no-follow"])).await;
    assert_eq!(stdout_lines(&logs), numbered("d", 1, 50));
    // Listing needs the index grant: refused on the index's ARN, answered 503 (not a crash).
    let r = s.get("/api/v1/executions").await;
    assert_eq!(r.status(), 503);
    let stats = s.sim_stats().await;
    assert!(
        denied(&stats)
            .iter()
            .any(|(f, a)| f.ends_with("-api") && a == "dynamodb:Query"),
        "{stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_deliveries_are_recovered_by_reconciliation() {
    let s = Stack::start(Kind::Sim, "drop-all", Some("drop=1")).await;
    let run = output(s.runvoy(&["run", "--", "sh", "-c", "seq 1 3000"])).await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let want: Vec<String> = (1..=3000).map(|i| i.to_string()).collect();
    assert_eq!(stdout_lines(&run), want);
    // The functions' metric lines reach their logs after the run printed the last line.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.counter("events_reconciled") < 3000 {
        assert!(
            Instant::now() < deadline,
            "every line came through reconciliation: {} counted",
            s.counter("events_reconciled")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_below_lambdas_6_mb_response() {
    let s = Stack::start(Kind::Sim, "six-mb", None).await;
    let big = "y".repeat(7 * 1024);
    let lines: Vec<String> = (1..=1_000).map(|i| format!("{i} {big}")).collect();
    for chunk in lines.chunks(100) {
        s.put_lines("big-1", chunk).await;
    }
    s.complete("big-1", "SUCCEEDED", Some(0)).await;
    let r = s.get("/api/v1/executions/big-1/logs?limit=1000").await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert!(body.len() < 6 * 1024 * 1024, "{} bytes", body.len());
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["has_more"] == true && v["events"].as_array().unwrap().len() < 1_000);
    let all = output(s.runvoy(&["logs", "big-1"])).await;
    assert_eq!(all.status.code(), Some(0));
    assert_eq!(stdout_lines(&all), lines);
}

/// A line of 1,000,000 control characters escapes to 7 MB of JSON, more than a Lambda response
/// may hold: it is served base64-encoded (a third larger) and printed byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_escaping_would_blow_up_is_still_served() {
    let s = Stack::start(Kind::Sim, "escape", None).await;
    let hostile = "\u{1}".repeat(1_000_000);
    let lines = vec!["before".to_string(), hostile.clone(), "after".to_string()];
    for line in &lines {
        s.put_lines("esc-1", std::slice::from_ref(line)).await;
    }
    s.complete("esc-1", "SUCCEEDED", Some(0)).await;
    let r = s.get("/api/v1/executions/esc-1/logs").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["events"][1]["message_base64"].is_string(),
        "{}",
        v["events"][0]
    );
    let all = output(s.runvoy(&["logs", "esc-1"])).await;
    assert_eq!(
        all.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert!(all.stdout == expected.as_bytes(), "printed byte-exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_connect_is_refused_and_the_connection_survives_it() {
    // API Gateway opens connections a while after `$connect` succeeded: pushes meanwhile get
    // 410 (4 s here).
    let s = Stack::start(Kind::Sim, "connect", Some("connect-ms=4000")).await;
    s.put_lines("conn-1", &numbered("a", 1, 5)).await;
    let cmd = s.runvoy(&["logs", "conn-1"]);
    let follower = tokio::task::spawn_blocking({
        let mut cmd = cmd;
        move || cmd.output().unwrap()
    });
    // Lines written once `$connect` returned, while the follower's connection is still inside
    // its handshake.
    stats_once(&s, "ran $connect", |stats| {
        function(stats, "-websocket")["invocations"]
            .as_u64()
            .unwrap()
            >= 1
    })
    .await;
    s.put_lines("conn-1", &numbered("b", 1, 5)).await;
    // Pushes after the handshake reach the connection.
    stats_once(&s, "opened the connection", |stats| {
        stats["websocket"]["connections"].as_u64().unwrap() >= 1
    })
    .await;
    s.put_lines("conn-1", &numbered("c", 1, 5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.complete("conn-1", "SUCCEEDED", Some(0)).await;
    let out = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .unwrap()
        .unwrap();
    let mut want = numbered("a", 1, 5);
    want.extend(numbered("b", 1, 5));
    want.extend(numbered("c", 1, 5));
    assert_eq!(stdout_lines(&out), want);
    let stats = s.sim_stats().await;
    assert!(
        stats["websocket"]["gone_during_connect"].as_u64().unwrap() > 0,
        "no push met the handshake: {stats:#}"
    );
    assert!(
        stats["websocket"]["pushes"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
    assert_eq!(
        s.counter("connections_pruned"),
        0,
        "the new connection was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_sweeper_deletes_what_expired_and_nothing_else() {
    let s = Stack::start(Kind::Sim, "ttl", None).await;
    let run = output(s.runvoy(&["run", "--", "sh", "-c", "seq 1 100"])).await;
    assert_eq!(run.status.code(), Some(0));
    let sweep = |now: Option<i64>| {
        let (url, key) = (s.url(), s.key.clone());
        async move {
            let body = match now {
                Some(n) => serde_json::json!({ "now": n }),
                None => serde_json::json!({}),
            };
            let v: Value = reqwest::Client::new()
                .post(format!("{url}/local/v1/sim/ttl-sweep"))
                .header("X-API-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["deleted"].as_u64().unwrap()
        }
    };
    assert_eq!(sweep(None).await, 0, "nothing has expired yet");
    let in_eight_days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 8 * 86_400_000;
    // The head, the run and the idempotency record of the execution (the retention is 7 days).
    assert!(sweep(Some(in_eight_days)).await >= 3);
    assert_eq!(sweep(Some(in_eight_days)).await, 0, "deleted once");
}

/// `deploy rotate-key` on the sim's stack: the API function (warm, holding the old keys) accepts
/// the new key within seconds, keeps the old one until `--retire-old`, then refuses it and the
/// WebSocket tokens handed out under it; `--token-secret` kills every token handed out before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rotate_without_downtime() {
    let s = Stack::start(Kind::Sim, "rotate", None).await;
    s.put_lines("rot-1", &numbered("r", 1, 3)).await;
    s.complete("rot-1", "SUCCEEDED", Some(0)).await;
    let logs_with = |key: String| {
        let mut c = s.runvoy(&["logs", "rot-1"]);
        c.env("RUNVOY_API_KEY", key);
        output(c)
    };
    let old = s.key.clone();
    assert_eq!(stdout_lines(&logs_with(old.clone()).await).len(), 3);

    let rotate = |extra: &[&str]| {
        let mut args = vec!["rotate-key", "--no-config", "--output", "json"];
        args.extend_from_slice(extra);
        s.deploy_on_sim("simkeys", &args)
    };
    let json_of = |o: &std::process::Output| -> Value {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let added = json_of(&rotate(&[]));
    assert_eq!(
        (added["keys"].as_u64(), added["added"].as_bool()),
        (Some(2), Some(true))
    );
    let secret = std::process::Command::new("aws")
        .args([
            "secretsmanager",
            "get-secret-value",
            "--region",
            "us-east-1",
        ])
        .args(["--secret-id", &format!("{}/api", s.sim_stack())])
        .args(["--endpoint-url", s.moto_endpoint()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let secret: Value = serde_json::from_slice(&secret.stdout).unwrap();
    let keys: Value = serde_json::from_str(secret["SecretString"].as_str().unwrap()).unwrap();
    assert_eq!(keys["api_keys"][0], old.as_str(), "the old key is kept");
    let new = keys["api_keys"][1].as_str().unwrap().to_string();

    // The warm API function learns the new key on the first request that presents it (it may
    // have read the secret less than 5 s before).
    let start = Instant::now();
    while stdout_lines(&logs_with(new.clone()).await).len() != 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new key is never accepted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("new key accepted after {:?}", start.elapsed());
    assert_eq!(
        stdout_lines(&logs_with(old.clone()).await).len(),
        3,
        "the old key stays valid until it is retired"
    );

    // A WebSocket token handed out under the old key, before it is retired (for an execution
    // still running: a finished one gets no WebSocket URL).
    s.put_lines("rot-2", &numbered("r", 1, 3)).await;
    let token_url = |key: String| {
        let url = s.url();
        async move {
            let page: Value = reqwest::Client::new()
                .get(format!("{url}/api/v1/executions/rot-2/logs?since_index=0"))
                .header("X-API-Key", key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            format!("{}&since_index=3", page["websocket_url"].as_str().unwrap())
        }
    };
    let old_token = token_url(old.clone()).await;
    assert!(
        tokio_tungstenite::connect_async(&old_token).await.is_ok(),
        "the token works before the key is retired"
    );

    let retired = json_of(&rotate(&["--retire-old"]));
    assert_eq!(
        (retired["keys"].as_u64(), retired["retired"].as_u64()),
        (Some(1), Some(1))
    );
    let start = Instant::now();
    loop {
        let o = logs_with(old.clone()).await;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            assert!(err.contains("API key"), "refused as a bad key: {err}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the retired key still works"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("retired key refused after {:?}", start.elapsed());
    // Its tokens die with it (the functions read the token generation again within 30 s).
    let start = Instant::now();
    while tokio_tungstenite::connect_async(&old_token).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a token handed out under the retired key still connects"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("its token refused after {:?}", start.elapsed());
    let fresh = token_url(new.clone()).await;
    assert!(
        tokio_tungstenite::connect_async(&fresh).await.is_ok(),
        "a token handed out under the new key connects"
    );
    // A new token secret: every token handed out before is refused, new ones connect.
    let replaced = json_of(&rotate(&["--token-secret"]));
    assert_eq!(replaced["token_secret"], "replaced", "{replaced}");
    let start = Instant::now();
    while tokio_tungstenite::connect_async(&fresh).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a token signed with the replaced secret still connects"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "token of the replaced secret refused after {:?}",
        start.elapsed()
    );
    // The API function reads the new secret within 30 s of its own.
    let start = Instant::now();
    while tokio_tungstenite::connect_async(&token_url(new.clone()).await)
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a token signed with the new secret never connects"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(stdout_lines(&logs_with(new.clone()).await).len(), 3);
    let again = rotate(&["--retire-old"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("nothing to retire: the secret holds one API key"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// Two environments on one account (one moto): both pass `deploy smoke`; `deploy down` of one
/// leaves the other working; the first comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_coexist_on_one_account() {
    let mut blue = Stack::start(Kind::Sim, "env-blue", None).await;
    let green = Stack::start_beside(&blue, "env-green").await;
    assert_ne!(blue.sim_stack(), green.sim_stack());
    let smoke = |s: &Stack| {
        let mut c = std::process::Command::new(common::bin_dir().join("deploy"));
        c.args(["smoke", "--env", "sim", "--lines", "200", "--timeout", "60"])
            .args(["--api-url", &s.url(), "--api-key", &s.key])
            .env("XDG_CONFIG_HOME", s.dir.join("config"));
        output(c)
    };
    let passed = |o: &std::process::Output| {
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{t}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(t.contains("200 lines written, 200 committed"), "{t}");
    };
    passed(&smoke(&blue).await);
    passed(&smoke(&green).await);

    // `deploy down` of blue's stack, as an operator does it: an environment file naming it.
    blue.stop().await;
    let down = blue.deploy_on_sim("blue", &["down", "--yes", "--output", "json"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let v: Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(v["status"], "DELETE_COMPLETE");
    passed(&smoke(&green).await);

    blue.restart().await;
    passed(&smoke(&blue).await);
}

/// The websocket function cannot store connections (its role lacks `dynamodb:PutItem`), so
/// every `$connect` fails. The CLI follows by polling, prints every line, and tries the
/// handshake again ever less often: about every 2 s without backoff (a dozen attempts in the
/// 26 s below), four or five with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connect_is_retried_ever_less_often_while_lines_keep_coming() {
    let dir = common::temp_dir("connect-broken");
    let template = template_with(&dir, |t| {
        drop_action(t, "WebsocketRole", "dynamodb:PutItem")
    });
    let s = sim_with_template("connect-broken", &template).await;
    let out = follow_while_writing(&s, "wsfail-1", 6).await;
    let notices = String::from_utf8_lossy(&out.stderr);
    assert!(notices.contains("WebSocket unavailable"), "{notices}");
    let stats = s.sim_stats().await;
    assert!(
        denied(&stats)
            .iter()
            .any(|(f, a)| f.ends_with("-websocket") && a == "dynamodb:PutItem"),
        "{stats:#}"
    );
    let attempts = stats["websocket"]["refused_connects"].as_u64().unwrap();
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} handshakes in 28 s: {notices}"
    );
}

/// Every connection is cut 300 ms after it opened (`ws-cut-ms`): a connection the server ends
/// at once counts as a failed handshake, so the CLI does not reconnect every few hundred
/// milliseconds (about fifty connections in the 22 s below without backoff), and polling still
/// prints every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_once_are_reopened_ever_less_often() {
    let s = Stack::start(Kind::Sim, "cut-at-once", Some("ws-cut-ms=300")).await;
    follow_while_writing(&s, "cut-1", 5).await;
    let stats = s.sim_stats().await;
    let connections = stats["websocket"]["connections"].as_u64().unwrap();
    assert!(
        (2..=8).contains(&connections),
        "{connections} connections in 22 s: {stats:#}"
    );
}

/// `runvoy logs -v ID` while five lines are written every 4 s, `rounds` times; then the
/// execution completes. Every line is printed once, in order, and the CLI exits 0.
async fn follow_while_writing(s: &Stack, id: &str, rounds: usize) -> std::process::Output {
    s.put_lines(id, &numbered("a", 1, 5)).await;
    let follower = tokio::task::spawn_blocking({
        let mut cmd = s.runvoy(&["logs", id, "-v"]);
        move || cmd.output().unwrap()
    });
    let mut want = numbered("a", 1, 5);
    for i in 1..=rounds {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let more = numbered(&format!("b{i}"), 1, 5);
        s.put_lines(id, &more).await;
        want.extend(more);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.complete(id, "SUCCEEDED", Some(0)).await;
    let out = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(out.status.code(), Some(0));
    out
}

/// `runvoy logs --no-follow` against a stack whose store refuses every write (the API's role
/// without `dynamodb:PutItem`): "print what is there now" ends, in bounded time, with the
/// server's own sentence and exit 125 — not minutes of silent retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_follow_gives_up_on_a_failing_api_in_bounded_time() {
    let dir = common::temp_dir("no-writes");
    let template = template_with(&dir, |t| drop_action(t, "ApiRole", "dynamodb:PutItem"));
    // Every delivery dropped: the lines are in CloudWatch only, and the first read must write
    // them (lazy population), which the API's role may not.
    let args = vec!["--template".into(), template.display().to_string()];
    let s = Stack::start_with(Kind::Sim, "no-writes", Some("drop=1"), args).await;
    s.put_lines("nowrite-1", &numbered("n", 1, 10)).await;
    let started = Instant::now();
    let out = output(s.runvoy(&["logs", "nowrite-1", "--no-follow", "-v"])).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "gave up after {:?}",
        started.elapsed()
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the API answered 5") && last.len() > 40,
        "one sentence from the server: {err}"
    );
    assert!(
        err.contains("retrying in"),
        "it said it was retrying: {err}"
    );
}
