//! The moto the sim runs on: an existing one (`--endpoint-url`), or its own, started from the
//! project's `scripts/moto-server` (embedded here) on a free loopback port, after installing
//! `moto[server]` with pip when it is missing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::SimError;

/// The launcher every test and the sim use (request-serial moto with the sim's feed).
pub const LAUNCHER: &str = include_str!("../../scripts/moto-server");

/// A moto the sim started; stopped when dropped.
pub struct OwnMoto {
    pub endpoint: String,
    _child: Child,
}

/// Starts moto on a free port; its output goes to `<state_dir>/moto.log`.
pub async fn start(state_dir: &Path) -> Result<OwnMoto, SimError> {
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
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SimError::Moto(format!("cannot start moto: {e}")))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_up(&endpoint).await?;
    Ok(OwnMoto {
        endpoint,
        _child: child,
    })
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
