//! Shared helpers of the end-to-end tests: a local stack on a free port with its own state, the
//! real `runvoy` binary, and a producer that writes through the local HTTP endpoints.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use runvoy_local::{Chaos, LocalConfig, LocalStack};
use serde_json::{Value, json};

pub struct Stack {
    pub stack: Option<LocalStack>,
    pub dir: PathBuf,
    pub port: u16,
    pub key: String,
    pub chaos: Chaos,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "runvoy-e2e-{tag}-{}-{}",
        std::process::id(),
        runvoy_local::state::random_hex(4)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Stack {
    pub async fn start(tag: &str, chaos: Option<&str>) -> Stack {
        let dir = temp_dir(tag);
        let chaos: Chaos = chaos.unwrap_or("").parse().unwrap();
        let mut s = Stack {
            stack: None,
            dir,
            port: free_port(),
            key: String::new(),
            chaos,
        };
        s.restart().await;
        s
    }

    /// (Re)starts on the same port and state directory.
    pub async fn restart(&mut self) {
        let config = LocalConfig {
            listen: ([127, 0, 0, 1], self.port).into(),
            state_dir: self.dir.join("state"),
            api_key: None,
            chaos: self.chaos.clone(),
            reconcile_every: Duration::from_millis(500),
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

    pub async fn stop(&mut self) {
        if let Some(s) = self.stack.take() {
            s.stop().await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    pub async fn put_lines(&self, id: &str, lines: &[String]) {
        let events: Vec<Value> = lines.iter().map(|m| json!({ "message": m })).collect();
        let r = reqwest::Client::new()
            .post(format!("{}/local/v1/streams/{id}/events", self.url()))
            .header("X-API-Key", &self.key)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn complete(&self, id: &str, status: &str, code: Option<i32>) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/executions/{id}/complete", self.url()))
            .header("X-API-Key", &self.key)
            .json(&json!({ "status": status, "exit_code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
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
