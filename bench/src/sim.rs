//! A sim (`deploy up --env sim`) for the benches of the AWS path: the binaries of `target/debug`
//! (profile `test`, as `bench/sim.sh` and the sim's tests run them; `RUNVOY_BENCH_SIM_BIN=DIR`
//! for others), in a fresh state directory with a moto of its own; stopped, moto included, when
//! dropped. Followers are the `runvoy` CLI (`target/release/runvoy`, as the other benches).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Sim {
    child: Option<Child>,
    dir: PathBuf,
    bin: PathBuf,
    pub url: String,
    pub key: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts a sim and waits until it serves.
    pub async fn start(project: &str) -> Sim {
        let bin = PathBuf::from(
            std::env::var("RUNVOY_BENCH_SIM_BIN").unwrap_or_else(|_| "target/debug".into()),
        );
        assert!(
            bin.join("deploy").exists() && bin.join("forwarder").exists(),
            "the sim's binaries are missing in {}: cargo build --profile test --bins",
            bin.display()
        );
        let dir =
            std::env::temp_dir().join(runvoy_aws::testkit::unique(&format!("bench-{project}")));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("sim.log")).unwrap();
        let child = Command::new(bin.join("deploy"))
            .args(["up", "--env", "sim", "--functions"])
            .arg(&bin)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--project",
                project,
            ])
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sim = Sim {
            child: Some(child),
            dir,
            bin,
            url: format!("http://127.0.0.1:{port}"),
            key: String::new(),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(sim.dir.join("sim.log")).unwrap_or_default();
            if text.contains("Press Ctrl+C") {
                sim.key = text
                    .lines()
                    .find(|l| l.trim_start().starts_with("API key:"))
                    .and_then(|l| l.split_whitespace().nth(2))
                    .expect("the sim prints its API key")
                    .to_string();
                break;
            }
            let exited = sim.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(300),
                "the sim did not start: {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sim
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs `body`; returns the status and the answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-API-Key", &self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `billing` counters of `/local/v1/sim/stats`.
    pub async fn billing(&self) -> Value {
        self.get("/local/v1/sim/stats").await["billing"].clone()
    }

    /// Writes lines (`{"message", "timestamp"}`) to an execution's stream, as a producer.
    pub async fn write(&self, id: &str, events: Vec<Value>) {
        let (status, answer) = self
            .post(
                &format!("/local/v1/streams/{id}/events"),
                json!({ "events": events }),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Completes an execution through the HTTP API (retried while its sweep is in progress).
    pub async fn complete(&self, id: &str) {
        let started = Instant::now();
        loop {
            let (status, answer) = self
                .post(
                    &format!("/api/v1/executions/{id}/complete"),
                    json!({"status": "SUCCEEDED"}),
                )
                .await;
            if status == 200 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "completing {id}: {status} {answer}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// `runvoy logs ID ARGS…` against the sim, its stdout piped.
    pub fn follower(&self, id: &str, args: &[&str]) -> Child {
        Command::new(crate::e2e::bin("runvoy"))
            .args(["logs", id])
            .args(args)
            .env("RUNVOY_API_URL", &self.url)
            .env("RUNVOY_API_KEY", &self.key)
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Open WebSocket connections, as API Gateway counts them.
    pub async fn open_connections(&self) -> u64 {
        self.billing().await["websocket"]["open_connections"]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the sim stops its function environments and closes its connections.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its moto outlives it by design.
        let _ = Command::new(self.bin.join("deploy"))
            .args(["down", "--env", "sim", "--state-dir"])
            .arg(self.dir.join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::env::var_os("RUNVOY_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept the sim's directory: {}", self.dir.display());
        }
    }
}

/// Counts the lines a follower prints, on a thread of its own; `lines` is updated as they come.
pub fn count_lines(
    child: &mut Child,
    lines: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                return;
            }
            let newlines = buf[..n].iter().filter(|b| **b == b'\n').count();
            lines.fetch_add(newlines, std::sync::atomic::Ordering::Relaxed);
        }
    })
}

/// Waits for every child to exit, up to `limit`; kills the rest. Returns how many were killed.
pub async fn reap(children: &mut [Child], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let mut running = 0;
        for c in children.iter_mut() {
            if c.try_wait().ok().flatten().is_none() {
                running += 1;
            }
        }
        if running == 0 {
            return 0;
        }
        if Instant::now() > deadline {
            for c in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
