//! The moto the sim runs on: an existing one (`--endpoint-url`), or its own, started from the
//! project's `scripts/moto-server` (embedded here) on a free loopback port, after installing
//! `moto[server]` with pip when it is missing.
//!
//! AWS never loses its state when a client restarts, so the sim's own moto outlives the sim:
//! it runs in a process group of its own, and `<state>/moto.json` records where it listens.
//! The next start in the same state directory finds it there and carries on with the same
//! tables, streams and queues; `deploy down --env sim` stops it. Only when that moto is gone
//! (the machine restarted, someone killed it) does a start begin an empty world, and it says so.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::SimError;

/// The launcher every test and the sim use (request-serial moto with the sim's feed).
pub const LAUNCHER: &str = include_str!("../../scripts/moto-server");

/// Where the state directory's moto listens, and the launcher it runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    endpoint: String,
    pid: u32,
    /// sha256 of the launcher: a moto started by another version of the sim lacks what this
    /// one needs.
    launcher: String,
}

fn launcher_digest() -> String {
    use sha2::Digest;
    sha2::Sha256::digest(LAUNCHER.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The moto of `state_dir`: the one an earlier start left running (its state kept), or a new
/// one. Returns its endpoint.
pub async fn own(state_dir: &Path) -> Result<String, SimError> {
    let path = state_dir.join("moto.json");
    if let Some(r) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Record>(&t).ok())
    {
        let answers = tokio::net::TcpStream::connect(r.endpoint.trim_start_matches("http://"))
            .await
            .is_ok();
        if answers && alive(r.pid) && r.launcher == launcher_digest() {
            eprintln!(
                "sim: carrying on with the moto at {} (pid {}): tables, log streams and queues as they were",
                r.endpoint, r.pid
            );
            return Ok(r.endpoint);
        }
        if answers && alive(r.pid) {
            eprintln!(
                "sim: the moto at {} (pid {}) was started by another version of the sim; stopping it",
                r.endpoint, r.pid
            );
            stop_pid(r.pid).await;
        }
        eprintln!(
            "sim: the moto this state directory used ({}, pid {}) is gone, and the AWS state it held with it: starting an empty one; executions from before are unknown to it",
            r.endpoint, r.pid
        );
    }
    let (endpoint, pid) = start(state_dir).await?;
    let record = Record {
        endpoint: endpoint.clone(),
        pid,
        launcher: launcher_digest(),
    };
    std::fs::write(
        &path,
        serde_json::to_string(&record).expect("a record serializes"),
    )
    .map_err(|e| SimError::Moto(format!("{}: {e}", path.display())))?;
    Ok(endpoint)
}

/// Stops the moto `state_dir` recorded, if it runs; returns whether there was one.
pub async fn stop(state_dir: &Path) -> bool {
    let path = state_dir.join("moto.json");
    let Some(r) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Record>(&t).ok())
    else {
        return false;
    };
    let _ = std::fs::remove_file(&path);
    if !alive(r.pid) {
        return false;
    }
    stop_pid(r.pid).await;
    true
}

async fn stop_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    for _ in 0..50 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await;
}

/// Starts moto on a free port, in a process group of its own (a Ctrl+C of the sim does not
/// reach it); its output goes to `<state_dir>/moto.log`. Returns its endpoint and pid.
async fn start(state_dir: &Path) -> Result<(String, u32), SimError> {
    let python = "python3";
    let has = Command::new(python)
        .args(["-c", "import moto.moto_server.werkzeug_app, flask_cors"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|e| SimError::Moto(format!("cannot run {python}: {e}; install Python 3")))?;
    if !has.success() {
        eprintln!("installing moto[server] with pip");
        let ok = Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "moto[server]>=5,<6"])
            .status()
            .await
            .map_err(|e| SimError::Moto(e.to_string()))?;
        if !ok.success() {
            return Err(SimError::Moto(
                "pip could not install moto[server]; install it yourself (pip install 'moto[server]') or pass --endpoint-url".into(),
            ));
        }
    }
    let script = state_dir.join("moto-server.py");
    std::fs::write(&script, LAUNCHER).map_err(|e| SimError::Moto(e.to_string()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| SimError::Moto(e.to_string()))?
        .port();
    let log = std::fs::File::create(state_dir.join("moto.log"))
        .map_err(|e| SimError::Moto(e.to_string()))?;
    let child = Command::new(python)
        .arg(&script)
        .args(["127.0.0.1", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| SimError::Moto(e.to_string()))?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| SimError::Moto(format!("cannot start moto: {e}")))?;
    let pid = child.id().unwrap_or(0);
    // Not waited on: it outlives this process (the kernel's init reaps it).
    drop(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_up(&endpoint).await?;
    Ok((endpoint, pid))
}

/// Waits for a moto to answer, up to 60 s (importing moto on a busy machine takes a while).
pub async fn wait_until_up(endpoint: &str) -> Result<(), SimError> {
    let addr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(SimError::Moto(format!(
        "moto did not answer at {endpoint} within 60 s (see moto.log in the state directory)"
    )))
}

/// Makes lines written to `group` readable only `ms` after `PutLogEvents` returned
/// (`--chaos ingest-lag-ms`; 0: at once). Set on every start, so a moto that outlived an
/// earlier sim forgets that sim's lag.
pub async fn set_ingest_lag(
    endpoint: &str,
    place: &crate::template::Place,
    group: &str,
    ms: u64,
) -> Result<(), SimError> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/_sim/lag", endpoint.trim_end_matches('/')),
        &[
            ("group", group),
            ("ms", &ms.to_string()),
            ("account", &place.account),
            ("region", &place.region),
        ],
    )
    .map_err(|e| SimError::Moto(e.to_string()))?;
    let r = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .map_err(|e| SimError::Moto(format!("setting the ingestion lag: {e}")))?;
    if !r.status().is_success() {
        return Err(SimError::Moto(format!(
            "{endpoint} does not take an ingestion lag ({}); start moto with scripts/moto-server",
            r.status()
        )));
    }
    Ok(())
}
