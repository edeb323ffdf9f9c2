//! Test kit: a `moto_server` on 127.0.0.1 and SDK configurations pointed at it.
//!
//! `MOTO_ENDPOINT` (set by `scripts/test`) names a running server; without it the first test
//! starts `scripts/moto-server` on a free port, watched by a shell that stops it when the test
//! process exits.

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_dynamodb::config::Credentials;

static ENDPOINT: OnceLock<String> = OnceLock::new();

/// The moto endpoint, starting a server if needed. Panics with what to do if none can run.
pub fn moto_endpoint() -> String {
    ENDPOINT.get_or_init(start_or_find).clone()
}

fn start_or_find() -> String {
    if let Ok(url) = std::env::var("MOTO_ENDPOINT")
        && !url.is_empty()
    {
        wait_until_up(&url);
        return url;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1");
    let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/moto-server");
    let script = format!(
        "python3 {launcher} 127.0.0.1 {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $m",
        parent = std::process::id()
    );
    // Not waited on: the shell outlives this call and stops moto when the test process exits.
    // It must not hold this process's stdout or stderr: whoever reads them (a pipe to a script)
    // would wait for the shell too, and a parent that is never reaped stays "alive" for it.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting moto_server (install it with: pip install 'moto[server]')");
    let url = format!("http://127.0.0.1:{port}");
    wait_until_up(&url);
    url
}

fn wait_until_up(url: &str) {
    let addr = url.trim_start_matches("http://").to_string();
    for _ in 0..150 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not answer at {url}; install it with: pip install 'moto[server]'");
}

/// An SDK configuration for moto: fixed test credentials, us-east-1.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(moto_endpoint())
        .load()
        .await
}

/// A table-name suffix unique to this process.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{tag}-{}-{nanos:x}", std::process::id())
}
