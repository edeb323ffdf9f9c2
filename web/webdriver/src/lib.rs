//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, which
//! `scripts/services` installs when missing): just the calls the page tests make.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// Where downloads land.
    pub downloads: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the browsers it started share its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

fn program(names: &[&str]) -> String {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return p.display().to_string();
            }
        }
    }
    panic!(
        "none of {names:?} is installed; scripts/test installs Debian's chromium and chromium-driver (scripts/services)"
    );
}

impl Browser {
    /// Starts chromedriver and one headless Chromium session with its own profile in `dir`.
    pub async fn start(dir: &Path) -> Browser {
        let port = free_port();
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(program(&["chromedriver"]))
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": program(&["chromium"]),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,800", "--enable-precise-memory-info", "--js-flags=--expose-gc",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    format!("--user-data-dir={}", dir.join("profile").display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            downloads,
        };
        let v = b.call("POST", "/session", caps).await;
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r = req.timeout(Duration::from_secs(120)).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// Runs `body` (a function body: `return …`) in the page with `args`.
    pub async fn script(&self, body: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": body, "args": args }),
        )
        .await
    }

    /// Waits until `body` returns something truthy; returns it.
    pub async fn wait_for(&self, what: &str, body: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let v = self.script(body, vec![]).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if started.elapsed() > timeout {
                let state = self
                    .script(
                        "return [document.body.dataset.last, document.body.dataset.connection, \
                         document.getElementById('notice').textContent, \
                         document.getElementById('error').textContent].join(' | ')",
                        vec![],
                    )
                    .await;
                panic!("waited {timeout:?} for {what}; page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Value {
        self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        )
        .await
    }

    fn element_id(el: &Value) -> String {
        el[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("not an element: {el}"))
            .to_string()
    }

    pub async fn click(&self, el: &Value) {
        let id = Self::element_id(el);
        self.call("POST", &format!("/element/{id}/click"), json!({}))
            .await;
    }

    pub async fn type_into(&self, el: &Value, text: &str) {
        let id = Self::element_id(el);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Waits for a finished download named `name` and returns its bytes.
    pub async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads.join(name);
        let started = Instant::now();
        loop {
            let partial = std::fs::read_dir(&self.downloads)
                .unwrap()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().ends_with(".crdownload"));
            if path.exists() && !partial {
                return std::fs::read(&path).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} was not downloaded"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
