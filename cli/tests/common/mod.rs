//! Shared helpers of the end-to-end tests: a stack on a free port with its own state — the local
//! stack (in process), or the sim (the `deploy up --env sim` binary on a moto of its own, which
//! outlives the sim's restarts as AWS outlives a client's) — the real `runvoy` binary, and a
//! producer that writes through the stack's `/local/v1` endpoints.

#![allow(dead_code)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runvoy_local::{Chaos, LocalConfig, LocalStack};
use serde_json::{Value, json};

/// Which stack a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Sim,
}

pub struct Stack {
    pub kind: Kind,
    pub stack: Option<LocalStack>,
    sim: Option<Child>,
    moto: Option<Child>,
    moto_endpoint: String,
    pub dir: PathBuf,
    pub port: u16,
    /// The sim's WebSocket API port (0: the sim picks one).
    ws_port: u16,
    pub key: String,
    pub chaos: String,
    project: String,
    /// More `deploy up` arguments (sim), e.g. `--template FILE`.
    extra: Vec<String>,
    /// The test refuses a grant on purpose.
    pub expect_denials: bool,
    /// The sim runs the moto it keeps in its state directory (no `--endpoint-url`).
    own_moto: bool,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in [self.sim.as_mut(), self.moto.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.own_moto {
            // The sim's own moto outlives the sim by design: the test stops it.
            let _ = Command::new(bin_dir().join("deploy"))
                .args(["down", "--env", "sim", "--state-dir"])
                .arg(self.dir.join("state"))
                .stdout(Stdio::null())
                .status();
        }
        // Every test on the sim runs with the rendered roles: not one call may be refused.
        if self.kind == Kind::Sim && !self.expect_denials && !std::thread::panicking() {
            for f in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with("sim-") {
                    let log = std::fs::read_to_string(f.path()).unwrap_or_default();
                    let denied: Vec<&str> =
                        log.lines().filter(|l| l.contains("IAM denied")).collect();
                    assert!(
                        denied.is_empty(),
                        "the IAM gate refused calls:\n{}",
                        denied.join("\n")
                    );
                }
            }
        }
        // A passed test leaves nothing behind (a failed one keeps its logs and state to read).
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two free ports in a row (the sim's WebSocket API listens on the port after the HTTP API).
fn free_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "runvoy-e2e-{tag}-{}-{}",
        std::process::id(),
        runvoy_runtime::random_hex(4)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The directory of the workspace's binaries (`target/debug`), built before the tests by
/// `scripts/test` (`cargo build --profile test --bins`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Stack {
    pub async fn start(kind: Kind, tag: &str, chaos: Option<&str>) -> Stack {
        Stack::start_with(kind, tag, chaos, Vec::new()).await
    }

    /// A stack started with more `deploy up` arguments (sim).
    pub async fn start_with(
        kind: Kind,
        tag: &str,
        chaos: Option<&str>,
        extra: Vec<String>,
    ) -> Stack {
        let dir = temp_dir(tag);
        let mut s = Stack {
            kind,
            stack: None,
            sim: None,
            moto: None,
            moto_endpoint: String::new(),
            dir,
            port: if kind == Kind::Sim {
                free_pair()
            } else {
                free_port()
            },
            ws_port: 0,
            key: String::new(),
            chaos: chaos.unwrap_or("").to_string(),
            project: format!("e{}", runvoy_runtime::random_hex(4)),
            expect_denials: extra.iter().any(|a| a == "--template"),
            own_moto: false,
            extra,
        };
        if kind == Kind::Sim {
            s.start_moto();
            s.start_sim().await;
            return s;
        }
        s.restart().await;
        s
    }

    /// A second sim (another project, so another stack) on the same moto as `other`, as a
    /// second environment in the same account and region.
    pub async fn start_beside(other: &Stack, tag: &str) -> Stack {
        let mut s = Stack {
            kind: Kind::Sim,
            stack: None,
            sim: None,
            moto: None,
            moto_endpoint: other.moto_endpoint.clone(),
            dir: temp_dir(tag),
            port: free_pair(),
            ws_port: 0,
            key: String::new(),
            chaos: String::new(),
            project: format!("e{}", runvoy_runtime::random_hex(4)),
            expect_denials: false,
            own_moto: false,
            extra: Vec::new(),
        };
        s.start_sim().await;
        s
    }

    /// A sim on the moto it starts and keeps in its state directory, as `up --env sim` runs
    /// without `--endpoint-url`.
    pub async fn start_own_moto(tag: &str) -> Stack {
        let mut s = Stack {
            kind: Kind::Sim,
            stack: None,
            sim: None,
            moto: None,
            moto_endpoint: String::new(),
            dir: temp_dir(tag),
            port: free_pair(),
            ws_port: 0,
            key: String::new(),
            chaos: String::new(),
            project: format!("e{}", runvoy_runtime::random_hex(4)),
            expect_denials: false,
            own_moto: true,
            extra: Vec::new(),
        };
        s.start_sim().await;
        s
    }

    async fn start_sim(&mut self) {
        // A free port may be taken by another test before the sim binds it: pick again.
        for _ in 0..5 {
            match self.try_start_sim().await {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => self.port = free_pair(),
                Err(log) => panic!("the sim did not start:\n{log}"),
            }
        }
        panic!("no free ports for the sim");
    }

    /// Starts moto on a free port. A port taken between the pick and moto's bind, or a moto
    /// that exits at once, is retried on another port; a slow start (a busy machine importing
    /// moto) is waited for, up to a minute and a half.
    fn start_moto(&mut self) {
        let path = self.dir.join("moto.log");
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(&path).unwrap();
            let mut child = Command::new("python3")
                .arg(workspace().join("scripts/moto-server"))
                .args(["127.0.0.1", &port.to_string()])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting scripts/moto-server (pip install 'moto[server]')");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(90) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.moto = Some(child);
                    self.moto_endpoint = format!("http://127.0.0.1:{port}");
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let printed = std::fs::read_to_string(&path).unwrap_or_default();
            if !printed.contains("in use") {
                panic!(
                    "moto did not start on port {port} within {:?}: {}:\n{printed}",
                    started.elapsed(),
                    path.display()
                );
            }
        }
        panic!("no free port for moto: see {}", path.display());
    }

    /// (Re)starts on the same port and state directory.
    pub async fn restart(&mut self) {
        match self.kind {
            Kind::Local => self.restart_local().await,
            Kind::Sim => self.restart_sim().await,
        }
    }

    async fn restart_local(&mut self) {
        let chaos: Chaos = self.chaos.parse().unwrap();
        let config = LocalConfig {
            listen: ([127, 0, 0, 1], self.port).into(),
            state_dir: self.dir.join("state"),
            api_key: None,
            chaos,
            reconcile_every: Duration::from_millis(500),
            ..LocalConfig::default()
        };
        let mut last = None;
        for _ in 0..50 {
            match LocalStack::start(config.clone()).await {
                Ok(s) => {
                    self.key = s.api_key.clone();
                    self.stack = Some(s);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("stack did not start: {last:?}");
    }

    async fn restart_sim(&mut self) {
        for _ in 0..5 {
            match self.try_start_sim().await {
                Ok(()) => return,
                // Another test took the WebSocket port while the sim was down: clients find
                // the new one in the `websocket_url` the HTTP API hands out, as on AWS.
                Err(log) if log.contains("(--websocket-listen)") => {
                    self.ws_port = free_port();
                }
                Err(log) => panic!("the sim did not restart:\n{log}"),
            }
        }
        panic!("no free port for the sim's WebSocket API");
    }

    /// Starts `deploy up --env sim`; `Err` holds what it printed when it did not come up.
    async fn try_start_sim(&mut self) -> Result<(), String> {
        let log_path = self
            .dir
            .join(format!("sim-{}.log", runvoy_runtime::random_hex(2)));
        let mut cmd = Command::new(bin_dir().join("deploy"));
        cmd.current_dir(workspace())
            .args(["up", "--env", "sim", "--no-config", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--functions")
            .arg(bin_dir())
            .args(["--project", &self.project]);
        if !self.own_moto {
            cmd.args(["--endpoint-url", &self.moto_endpoint]);
        }
        cmd.env("XDG_CONFIG_HOME", self.dir.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap());
        if !self.chaos.is_empty() {
            cmd.args(["--chaos", &self.chaos]);
        }
        if self.ws_port != 0 {
            cmd.arg("--websocket-listen")
                .arg(format!("127.0.0.1:{}", self.ws_port));
        }
        cmd.args(&self.extra);
        let mut child = cmd
            .spawn()
            .expect("starting `deploy up --env sim` (run scripts/test, which builds it)");
        let stdout = child.stdout.take().unwrap();
        let (key, child) = tokio::task::spawn_blocking(move || {
            let mut key = None;
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if let Some(k) = line.trim().strip_prefix("API key:") {
                    key = Some(k.trim().to_string());
                }
                if line.starts_with("Press Ctrl+C") {
                    return (key, child);
                }
            }
            (None, child)
        })
        .await
        .unwrap();
        match key {
            Some(k) => {
                self.sim = Some(child);
                self.key = k;
                if self.own_moto {
                    let record: Value = serde_json::from_str(
                        &std::fs::read_to_string(self.dir.join("state").join("moto.json")).unwrap(),
                    )
                    .unwrap();
                    self.moto_endpoint = record["endpoint"].as_str().unwrap().to_string();
                }
                Ok(())
            }
            None => {
                let mut child = child;
                let _ = child.wait();
                Err(std::fs::read_to_string(&log_path).unwrap_or_default())
            }
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stack.take() {
            s.stop().await;
        }
        if let Some(mut c) = self.sim.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            tokio::task::spawn_blocking(move || {
                for _ in 0..100 {
                    if c.try_wait().unwrap().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
            })
            .await
            .unwrap();
        }
    }

    /// The moto the sim runs on (sim).
    pub fn moto_endpoint(&self) -> &str {
        &self.moto_endpoint
    }

    /// The sim's CloudFormation stack (sim).
    pub fn sim_stack(&self) -> String {
        format!("{}-sim", self.project)
    }

    /// `deploy <args> --env <env>` against the sim's stack as an operator runs it on AWS: an
    /// environment file naming the stack, the sim's moto as the endpoint, access keys.
    pub fn deploy_on_sim(&self, env: &str, args: &[&str]) -> std::process::Output {
        let deployments = self.dir.join("deployments");
        std::fs::create_dir_all(&deployments).unwrap();
        std::fs::write(
            deployments.join(format!("{env}.toml")),
            format!(
                "stack_name = \"{}\"\nregion = \"us-east-1\"\n",
                self.sim_stack()
            ),
        )
        .unwrap();
        Command::new(bin_dir().join("deploy"))
            .args(args)
            .args(["--env", env, "--deployments-dir"])
            .arg(&deployments)
            .args(["--endpoint-url", &self.moto_endpoint])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The stack's answer to `GET {path}` (with the key).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url()))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .unwrap()
    }

    /// The stack's answer to `POST {path}` with a JSON body (with the key).
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .header("X-API-Key", &self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The API's JSON answer to `GET {path}` (with the key).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// Waits until the API serves line `n` (1-based) of `id`: a read reconciles for a bounded
    /// time and serves what is committed, so a long stream is committed over several reads.
    pub async fn wait_committed(&self, id: &str, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let page = self
                .get_json(&format!(
                    "/api/v1/executions/{id}/logs?since_index={}&limit=1",
                    n - 1
                ))
                .await;
            if page["events"].as_array().is_some_and(|e| !e.is_empty()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "line {n} of {id} was not committed within 300 s: {page}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The real binary, configured by environment only (no config file is read).
    pub fn runvoy(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runvoy"));
        c.args(args)
            .env("RUNVOY_API_URL", self.url())
            .env("RUNVOY_API_KEY", &self.key)
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env_remove("RUNVOY_PROFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// A counter of the stack: the local stack's Prometheus metric, or on the sim the sum of the
    /// functions' EMF metrics (what CloudWatch would chart).
    pub fn counter(&self, name: &str) -> u64 {
        match self.kind {
            Kind::Local => {
                let metrics = self.stack.as_ref().unwrap().metrics();
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("runvoy_{name}_total ")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }
            Kind::Sim => {
                let mut total = 0;
                let logs = self.dir.join("state").join("logs");
                for f in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    for line in text.lines().filter(|l| l.starts_with('{')) {
                        if let Ok(v) = serde_json::from_str::<Value>(line) {
                            total += v[name].as_u64().unwrap_or(0);
                        }
                    }
                }
                total
            }
        }
    }

    /// The sim's counters (`GET /local/v1/sim/stats`).
    pub async fn sim_stats(&self) -> Value {
        self.get_json("/local/v1/sim/stats").await
    }

    pub async fn put_lines(&self, id: &str, lines: &[String]) {
        let events: Vec<Value> = lines.iter().map(|m| json!({ "message": m })).collect();
        let r = self
            .post(
                &format!("/local/v1/streams/{id}/events"),
                &json!({ "events": events }),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Writes lines with the given timestamps (ms).
    pub async fn put_lines_at(&self, id: &str, lines: &[(i64, String)]) {
        let events: Vec<Value> = lines
            .iter()
            .map(|(t, m)| json!({ "timestamp": t, "message": m }))
            .collect();
        let r = self
            .post(
                &format!("/local/v1/streams/{id}/events"),
                &json!({ "events": events }),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Completes an execution as a producer would: a long re-read answers 503 `in_progress`
    /// with its progress saved, and asking again continues it.
    pub async fn complete(&self, id: &str, status: &str, code: Option<i32>) {
        for _ in 0..30 {
            let r = self
                .post(
                    &format!("/api/v1/executions/{id}/complete"),
                    &json!({ "status": status, "exit_code": code }),
                )
                .await;
            let (code_, body) = (r.status(), r.text().await.unwrap());
            if code_ == 200 {
                return;
            }
            assert!(
                code_ == 503 && body.contains("in_progress"),
                "{code_}: {body}"
            );
        }
        panic!("completing {id} never finished");
    }
}

/// RFC 3339 (UTC, milliseconds) of a time in ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    runvoy_core::time::rfc3339_ms(ms)
}

/// `prefix 1` … `prefix n`.
pub fn numbered(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("{prefix} {i}")).collect()
}

/// Spawns a blocking child and waits for it off the async runtime.
pub async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn stdout_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
