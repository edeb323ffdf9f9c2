//! The local stack over real sockets: every endpoint's bad input, WebSocket access and close
//! frames, restarts, and the command runner.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use runvoy_local::{LocalConfig, LocalStack};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn state_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "runvoy-local-{tag}-{}-{}",
        std::process::id(),
        runvoy_runtime::random_hex(4)
    ))
}

async fn start(dir: &std::path::Path, port: u16) -> LocalStack {
    for _ in 0..50 {
        if let Ok(s) = LocalStack::start(LocalConfig {
            listen: ([127, 0, 0, 1], port).into(),
            state_dir: dir.to_path_buf(),
            reconcile_every: Duration::from_millis(300),
            ..LocalConfig::default()
        })
        .await
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stack did not start");
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    fn new(s: &LocalStack) -> Client {
        Client {
            base: s.http_url(),
            key: s.api_key.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET` of an execution's logs page with `Accept: {accept}`, the response as it came.
    async fn logs_as(&self, id: &str, query: &str, accept: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v1/executions/{id}/logs?{query}", self.base))
            .header("X-API-Key", &self.key)
            .header("Accept", accept)
            .send()
            .await
            .unwrap()
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self
            .call(
                method,
                path,
                Some(&self.key.clone()),
                Some(body.to_string()),
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_rejects_bad_input_with_the_error_json() {
    let dir = state_dir("bad");
    let s = start(&dir, 0).await;
    let c = Client::new(&s);
    let key = c.key.clone();
    c.ok(
        "POST",
        "/local/v1/streams/known/events",
        json!({"events":[{"message":"hi"}]}),
    )
    .await;
    let huge = "x".repeat(17 * 1024 * 1024);
    let big_event = json!({"events":[{"message": "y".repeat(1024 * 1024 + 1)}]}).to_string();
    // (method, path, key, body, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/api/v1/executions/known/logs",
            None,
            None,
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/api/v1/executions/known/logs",
            Some("wrong"),
            None,
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/api/v1/executions/known/logs?since_index=-1",
            Some(&key),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions/known/logs?since_index=abc",
            Some(&key),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions/unknown/logs",
            Some(&key),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/executions/unknown",
            Some(&key),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/executions/known/complete",
            Some(&key),
            Some("{oops".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/executions/known/complete",
            Some(&key),
            Some(huge.clone()),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/executions/unknown/complete",
            Some(&key),
            Some(r#"{"status":"FAILED"}"#.into()),
            404,
            "not_found",
        ),
        (
            "POST",
            "/local/v1/streams/known/events",
            None,
            Some("{}".into()),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/local/v1/streams/known/events",
            Some(&key),
            Some("{oops".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/local/v1/streams/known/events",
            Some(&key),
            Some(r#"{"events":[]}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/local/v1/streams/known/events",
            Some(&key),
            Some(r#"{"events":[{"msg":"x"}]}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/local/v1/streams/known/events",
            Some(&key),
            Some(huge.clone()),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/local/v1/streams/known/events",
            Some(&key),
            Some(big_event),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/local/v1/streams/bad%20id/events",
            Some(&key),
            Some(r#"{"events":[{"message":"x"}]}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/local/v1/executions",
            None,
            Some(r#"{"command":["true"]}"#.into()),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/local/v1/executions",
            Some(&key),
            Some(r#"{"command":[]}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/local/v1/executions",
            Some(&key),
            Some(r#"{"command":"true"}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/local/v1/executions",
            Some(&key),
            Some(r#"{"command":["/no/such/program"]}"#.into()),
            400,
            "bad_request",
        ),
        ("GET", "/nowhere", Some(&key), None, 404, "not_found"),
    ];
    for (method, path, k, body, status, code) in cases {
        let (got, v) = c.call(method, path, k, body).await;
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(v["code"], code, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.len() > 10),
            "{method} {path}: {v}"
        );
    }
    // Nothing was lost by the bad requests.
    let logs = c
        .ok("GET", "/api/v1/executions/known/logs", Value::Null)
        .await;
    assert_eq!(logs["events"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_requires_a_scoped_token_and_gets_a_close_frame_on_shutdown() {
    let dir = state_dir("ws");
    let s = start(&dir, 0).await;
    let c = Client::new(&s);
    c.ok(
        "POST",
        "/local/v1/streams/w1/events",
        json!({"events":[{"message":"one"}]}),
    )
    .await;
    c.ok(
        "POST",
        "/local/v1/streams/w2/events",
        json!({"events":[{"message":"other"}]}),
    )
    .await;
    let logs = c.ok("GET", "/api/v1/executions/w1/logs", Value::Null).await;
    let url = logs["websocket_url"].as_str().unwrap().to_string();
    let token = url.split("token=").nth(1).unwrap();

    let ws_base = s.websocket_url();
    for (query, status) in [
        (format!("execution_id=w2&token={token}"), 403),
        ("execution_id=w1&token=forged.token".to_string(), 401),
        ("execution_id=w1".to_string(), 401),
        (format!("execution_id=w1&token={token}&since_index=-4"), 400),
    ] {
        match tokio_tungstenite::connect_async(format!("{ws_base}?{query}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), status, "{query}")
            }
            other => panic!(
                "{query}: expected HTTP {status}, got {:?}",
                other.map(|_| ())
            ),
        }
    }

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}&since_index=0"))
        .await
        .unwrap();
    ws.send(Message::Text(
        r#"{"action":"resume","since_index":0}"#.into(),
    ))
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["events"][0]["message"].as_str()),
        (Some("logs"), Some("one"))
    );
    // A push of a new line.
    c.ok(
        "POST",
        "/local/v1/streams/w1/events",
        json!({"events":[{"message":"two"}]}),
    )
    .await;
    let pushed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(pushed.to_text().unwrap()).unwrap();
    assert_eq!(v["events"][0]["index"], 2);
    ws.send(Message::Text("nonsense".into())).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(err.to_text().unwrap()).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("bad_message"))
    );

    s.stop().await;
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_execution_loses_nothing() {
    let dir = state_dir("restart");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = start(&dir, port).await;
    let c = Client::new(&s);
    for i in 0..20 {
        let events: Vec<Value> = (0..50)
            .map(|j| json!({"message": format!("{}", i * 50 + j)}))
            .collect();
        c.ok(
            "POST",
            "/local/v1/streams/r1/events",
            json!({ "events": events }),
        )
        .await;
    }
    // A command still running when the process dies.
    let run = c
        .ok(
            "POST",
            "/local/v1/executions",
            json!({"command":["sh","-c","echo started; sleep 30"]}),
        )
        .await;
    let run_id = run["execution_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stop at once: lines still queued in the subscription emulator are lost with the process.
    s.stop().await;
    let s = start(&dir, port).await;
    let c = Client::new(&s);
    assert_eq!(c.key, s.api_key, "the API key survives restarts");
    let mut got = Vec::new();
    let mut since = 0;
    loop {
        let page = c
            .ok(
                "GET",
                &format!("/api/v1/executions/r1/logs?since_index={since}"),
                Value::Null,
            )
            .await;
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["index"].as_u64(), Some(since + 1));
            since += 1;
            got.push(e["message"].as_str().unwrap().parse::<u32>().unwrap());
        }
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    // The same lines as dense pages, asked for by `Accept`; a response says it varies by it.
    let mut dense = Vec::new();
    let mut since = 0;
    loop {
        let r = c
            .logs_as(
                "r1",
                &format!("since_index={since}&limit=300"),
                runvoy_core::lines::LINES_CONTENT_TYPE,
            )
            .await;
        assert_eq!(
            r.headers()["content-type"],
            runvoy_core::lines::LINES_CONTENT_TYPE
        );
        assert_eq!(r.headers()["vary"], "Accept");
        let page = runvoy_core::lines::LinesPage::parse(r.bytes().await.unwrap()).unwrap();
        assert_eq!(page.first_index(), since + 1);
        for record in page.records() {
            dense.push(
                std::str::from_utf8(page.message(&record))
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
        }
        since = page.meta.last_index;
        if !page.meta.has_more {
            break;
        }
    }
    assert_eq!(dense, got);
    let r = c.logs_as("r1", "since_index=0", "application/json").await;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["vary"], "Accept");
    // The interrupted run was settled as STOPPED, with the line it wrote.
    let status = c
        .ok("GET", &format!("/api/v1/executions/{run_id}"), Value::Null)
        .await;
    assert_eq!(
        (status["status"].as_str(), status["final_index"].as_u64()),
        (Some("STOPPED"), Some(1))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let dir = state_dir("metrics");
    let s = start(&dir, 0).await;
    let c = Client::new(&s);
    c.ok(
        "POST",
        "/local/v1/streams/m1/events",
        json!({"events":[{"message":"a"},{"message":"b"}]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = reqwest::get(format!("{}/metrics", s.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# TYPE runvoy_events_appended_total counter"));
    let appended: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("runvoy_events_appended_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(appended, 2);
    s.stop().await;
}

/// Reachable from other machines only by consent and with a long key; on loopback, only to
/// this machine's names (DNS rebinding); wrong keys from one address are refused for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_needs_consent_and_guessing_keys_is_stopped() {
    let dir = state_dir("exposure");
    let remote = |allow_remote: bool, api_key: Option<&str>| LocalConfig {
        listen: ([0, 0, 0, 0], 0).into(),
        state_dir: dir.clone(),
        api_key: api_key.map(str::to_string),
        allow_remote,
        ..LocalConfig::default()
    };
    let err = LocalStack::start(remote(false, None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "--listen 0.0.0.0:0 is reachable from other machines: anyone who reaches it with the key runs commands on this one, over plain HTTP; listen on 127.0.0.1, or pass --allow-remote to accept that"
    );
    let err = LocalStack::start(remote(true, Some("short-but-8+")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "--allow-remote needs an API key of at least 32 characters; omit --api-key to use the generated one (48)"
    );
    let open = LocalStack::start(remote(true, None)).await.unwrap();
    open.stop().await;
    // A short key saved by a run on loopback is not good enough once other machines reach
    // the stack, whoever chose it.
    let short_dir = state_dir("short-saved");
    let on_loopback = LocalStack::start(LocalConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        state_dir: short_dir.clone(),
        api_key: Some("eight-ch".into()),
        ..LocalConfig::default()
    })
    .await
    .unwrap();
    on_loopback.stop().await;
    let err = LocalStack::start(LocalConfig {
        listen: ([0, 0, 0, 0], 0).into(),
        state_dir: short_dir.clone(),
        allow_remote: true,
        ..LocalConfig::default()
    })
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("the one kept in") && err.contains("credentials.toml has 8"),
        "{err}"
    );

    let s = start(&state_dir("rebind"), 0).await;
    let http = reqwest::Client::new();
    let get = |host: &str, key: &str| {
        http.get(format!("{}/api/v1/executions/none", s.http_url()))
            .header("Host", host)
            .header("X-API-Key", key)
            .send()
    };
    let port = s.addr.port();
    let rebound = get("attacker.example", &s.api_key).await.unwrap();
    assert_eq!(rebound.status(), 421);
    let body: Value = rebound.json().await.unwrap();
    assert_eq!(body["code"], "wrong_host", "{body}");
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        assert_eq!(
            get(&host, &s.api_key).await.unwrap().status(),
            404,
            "{host}"
        );
    }
    let host = format!("127.0.0.1:{port}");
    // Requests without a key (any web page can send those) lock nobody out.
    for _ in 0..runvoy_local::guard::MAX_BAD_KEYS + 5 {
        let keyless = http
            .get(format!("{}/api/v1/executions/none", s.http_url()))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(keyless.status(), 401);
    }
    assert_eq!(get(&host, &s.api_key).await.unwrap().status(), 404);
    for _ in 0..runvoy_local::guard::MAX_BAD_KEYS {
        assert_eq!(get(&host, "wrong-key").await.unwrap().status(), 401);
    }
    let blocked = get(&host, &s.api_key).await.unwrap();
    assert_eq!(
        blocked.status(),
        429,
        "even the right key waits out the window"
    );
    let body: Value = blocked.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("more than 20 requests with a wrong API key from 127.0.0.1"),
        "{body}"
    );
}

/// What a command leaves running in the background ends with it, and a stopping stack ends the
/// commands it runs with everything they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_end_with_everything_they_started() {
    let dir = state_dir("groups");
    let s = start(&dir, 0).await;
    let c = Client::new(&s);
    // Running: /proc has it, and not as a zombie waiting for a parent to reap it.
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    };
    let pid_of = |name: &str| {
        let file = dir.join(name);
        async move {
            for _ in 0..100 {
                if let Ok(p) = std::fs::read_to_string(&file)
                    && !p.trim().is_empty()
                {
                    return p.trim().to_string();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{} never written", file.display());
        }
    };
    let background = |file: &str, then: &str| {
        json!({"command": ["sh", "-c", format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > {}; {then}",
            dir.join(file).display()
        )]})
    };
    // The main process exits at once; its background `sleep` is ended with it.
    c.ok(
        "POST",
        "/local/v1/executions",
        background("left", "echo done"),
    )
    .await;
    let left = pid_of("left").await;
    let mut gone = false;
    for _ in 0..100 {
        if !alive(&left) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the background process of a finished command still runs"
    );
    // A command still running when the stack stops ends with all it started.
    c.ok(
        "POST",
        "/local/v1/executions",
        background("running", "sleep 300"),
    )
    .await;
    let running = pid_of("running").await;
    assert!(alive(&running));
    s.stop().await;
    assert!(!alive(&running), "the stopped stack left a process behind");
}

/// At most `max_connections` at once, and a connection that sends nothing for `idle_timeout`
/// is closed (slow or stuck clients cannot hold the stack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_their_number_is_capped() {
    use tokio::io::AsyncReadExt;
    let s = LocalStack::start(LocalConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        state_dir: state_dir("cap"),
        max_connections: 2,
        idle_timeout: Duration::from_millis(800),
        ..LocalConfig::default()
    })
    .await
    .unwrap();
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = || {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(400))
            .build()
            .unwrap()
            .get(format!("{}/healthz", s.http_url()))
            .send()
    };
    assert!(
        health().await.is_err(),
        "a third connection waits while two are held"
    );
    // The idle ones are closed by the server...
    let mut buf = [0u8; 1];
    for c in &mut idle {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the server closes an idle connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // ... and their places serve others.
    assert_eq!(health().await.unwrap().status(), 200);
    s.stop().await;
}

/// A run damaged on disk (a message that is no longer UTF-8) is answered with an error, as a
/// dense page and as JSON, and the stack goes on serving everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_stored_run_is_an_error_not_a_crash() {
    let dir = state_dir("damaged");
    let s = start(&dir, 0).await;
    let c = Client::new(&s);
    for id in ["damaged", "healthy"] {
        let events: Vec<Value> = (0..10)
            .map(|i| json!({"message": format!("line {i}")}))
            .collect();
        c.ok(
            "POST",
            &format!("/local/v1/streams/{id}/events"),
            json!({ "events": events }),
        )
        .await;
        for _ in 0..100 {
            let page = c
                .ok(
                    "GET",
                    &format!("/api/v1/executions/{id}/logs?since_index=0"),
                    Value::Null,
                )
                .await;
            if page["last_index"].as_u64() == Some(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    {
        let db = runvoy_sqlite::rusqlite::Connection::open(dir.join("runvoy.db")).unwrap();
        let (rowid, mut run): (i64, Vec<u8>) = db
            .query_row(
                "SELECT rowid, lines FROM runs WHERE execution_id = 'damaged'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let at = run.windows(6).position(|w| w == b"line 3").unwrap();
        run[at] = 0xff;
        db.execute(
            "UPDATE runs SET lines = ?1 WHERE rowid = ?2",
            runvoy_sqlite::rusqlite::params![run, rowid],
        )
        .unwrap();
    }
    for accept in [runvoy_core::lines::LINES_CONTENT_TYPE, "application/json"] {
        let r = c.logs_as("damaged", "since_index=0", accept).await;
        assert!(r.status().is_server_error(), "{accept}: {}", r.status());
        // The error JSON of every failure (the detail goes to the stack's log).
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].is_string() && body["code"].is_string(),
            "{accept}: {body}"
        );
    }
    let page = c
        .ok(
            "GET",
            "/api/v1/executions/healthy/logs?since_index=0",
            Value::Null,
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    s.stop().await;
}
