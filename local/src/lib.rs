//! The whole runvoy stack in one process: the spec's HTTP API and WebSocket protocol on the same
//! core services the Lambda functions run, over SQLite, with a local log source, a subscription
//! emulator (optionally chaotic), a command runner and Prometheus metrics.

pub mod chaos;
mod emulator;
pub mod guard;
pub mod http;
mod listener;
mod pusher;
mod response;
pub mod runner;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runvoy_core::api::{Api, ApiConfig, ApiError};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::memory::MemoryMetrics;
use runvoy_core::services::{Completer, EngineConfig, FanOut, Ports, Reconciler, Services};
use runvoy_core::ws::WsService;
use runvoy_core::{SourceEvent, Status, StoreError};
use runvoy_sqlite::{Db, SqliteSource, SqliteStore};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

pub use chaos::Chaos;
pub use runvoy_runtime::SystemClock;

#[derive(Debug, Error)]
pub enum LocalError {
    #[error(
        "cannot listen on {0}: {1}; is another stack running? choose another address with --listen"
    )]
    Listen(SocketAddr, String),
    #[error("state directory {0}: {1}")]
    State(PathBuf, String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How to run the local stack.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub api_key: Option<String>,
    pub chaos: Chaos,
    /// How often running executions that someone watches are reconciled from the source.
    pub reconcile_every: Duration,
    /// Accept listening on an address other machines reach (`--allow-remote`).
    pub allow_remote: bool,
    /// Connections served at once; more wait until one closes.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// The shortest API key accepted when the stack is reachable from other machines.
pub const MIN_REMOTE_KEY: usize = 32;

/// Refuses an address other machines reach unless `allow_remote`, and then a short key
/// (`key` `None`: generated, 48 characters); warns loudly when it is allowed.
pub fn check_exposure(
    listen: SocketAddr,
    allow_remote: bool,
    key: Option<&str>,
) -> Result<(), LocalError> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        return Err(LocalError::Usage(format!(
            "--listen {listen} is reachable from other machines: anyone who reaches it with the key runs commands on this one, over plain HTTP; listen on 127.0.0.1, or pass --allow-remote to accept that"
        )));
    }
    if key.is_some_and(|k| k.len() < MIN_REMOTE_KEY) {
        return Err(LocalError::Usage(format!(
            "--allow-remote needs an API key of at least {MIN_REMOTE_KEY} characters; omit --api-key to use the generated one (48)"
        )));
    }
    eprintln!(
        "WARNING: listening on {listen}, reachable from other machines over plain HTTP; whoever has the API key can run commands here"
    );
    Ok(())
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            state_dir: PathBuf::from(".runvoy/local"),
            api_key: None,
            chaos: Chaos::default(),
            reconcile_every: Duration::from_secs(2),
            allow_remote: false,
            max_connections: 512,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Everything the handlers share.
pub struct App {
    pub(crate) db: Db,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) source: SqliteSource,
    pub(crate) api: Api,
    pub(crate) ws: WsService,
    pub(crate) reconciler: Reconciler,
    pub(crate) completer: Completer,
    pub(crate) fanout: FanOut,
    pub(crate) pusher: Arc<pusher::LocalPusher>,
    pub(crate) metrics: Arc<MemoryMetrics>,
    pub(crate) clock: Arc<SystemClock>,
    pub(crate) emulator: mpsc::UnboundedSender<emulator::Batch>,
    pub(crate) keys: ApiKeys,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// `--chaos ws-cut-ms=N`: WebSocket sessions are cut this long after they open.
    pub(crate) ws_cut: Option<Duration>,
    /// `--chaos connect-ms=N`: the WebSocket handshake answers this long after the connection
    /// was stored (a slow `$connect`).
    pub(crate) connect_delay: Option<Duration>,
    /// The commands it runs, each in a process group of its own.
    pub(crate) groups: runner::ProcessGroups,
}

impl App {
    /// Appends lines to the local source and hands them to the subscription emulator.
    pub(crate) fn write_source(
        &self,
        execution_id: &str,
        lines: Vec<(i64, String)>,
    ) -> Vec<SourceEvent> {
        use runvoy_core::ports::Clock;
        match self
            .source
            .append(execution_id, &lines, self.clock.now_ms())
        {
            Ok(events) => {
                let _ = self
                    .emulator
                    .send((execution_id.to_string(), events.clone()));
                events
            }
            Err(e) => {
                eprintln!("runvoy-local: writing to the log source failed: {e}");
                Vec::new()
            }
        }
    }

    pub(crate) fn record_run(
        &self,
        id: &str,
        command: &[String],
        now: i64,
    ) -> Result<(), ApiError> {
        let cmd = serde_json::to_string(command).expect("strings serialize");
        self.db
            .lock_conn()
            .execute(
                "INSERT INTO local_runs (execution_id, command, started_at) VALUES (?1, ?2, ?3)",
                (id, cmd, now),
            )
            .map_err(|e| ApiError::from(StoreError::backend("the local stack's runs table", e)))?;
        Ok(())
    }

    pub(crate) fn finish_run(&self, id: &str) -> Result<(), StoreError> {
        self.db
            .lock_conn()
            .execute(
                "UPDATE local_runs SET finished = 1 WHERE execution_id = ?1",
                [id],
            )
            .map_err(|e| StoreError::backend("the local stack's runs table", e))?;
        Ok(())
    }

    fn unfinished_runs(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.db.lock_conn();
        let mut stmt = conn
            .prepare("SELECT execution_id FROM local_runs WHERE finished = 0")
            .map_err(|e| StoreError::backend("the local stack's runs table", e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| StoreError::backend("the local stack's runs table", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| StoreError::backend("the local stack's runs table", e))
    }
}

/// A running local stack.
pub struct LocalStack {
    pub addr: SocketAddr,
    pub api_key: String,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    app: Arc<App>,
}

impl LocalStack {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn websocket_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Prometheus text of the stack's counters.
    pub fn metrics(&self) -> String {
        self.app.metrics.prometheus()
    }

    /// Opens the state, binds the address and serves until [`LocalStack::stop`].
    pub async fn start(config: LocalConfig) -> Result<LocalStack, LocalError> {
        check_exposure(
            config.listen,
            config.allow_remote,
            config.api_key.as_deref(),
        )?;
        let creds = state::credentials(&config.state_dir, config.api_key.as_deref())?;
        // The key in use, whoever chose it: one saved by an earlier run on loopback (where
        // short keys are allowed) must not guard a stack other machines reach.
        if !config.listen.ip().is_loopback() && creds.api_key.len() < MIN_REMOTE_KEY {
            return Err(LocalError::Usage(format!(
                "--allow-remote needs an API key of at least {MIN_REMOTE_KEY} characters, and the one kept in {} has {}; pass a longer --api-key, or remove that file to have one generated (48)",
                config.state_dir.join("credentials.toml").display(),
                creds.api_key.len()
            )));
        }
        let db = Db::open(&state::database_path(&config.state_dir))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| LocalError::Listen(config.listen, e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LocalError::Listen(config.listen, e.to_string()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let app = Arc::new(wire(db, &creds, addr, &config, shutdown_rx));

        // Sessions of a previous process are gone; runs it was executing were killed with it.
        app.clear_connections().await;
        for id in app.unfinished_runs()? {
            if app
                .completer
                .complete(&id, Status::Stopped, None, None, None)
                .await
                .is_ok()
            {
                let _ = app.finish_run(&id);
            }
        }
        tokio::spawn(reconcile_loop(app.clone(), config.reconcile_every));

        let router = http::router(app.clone(), Arc::new(guard::Guard::new(addr)));
        let (max_connections, idle_timeout) = (config.max_connections, config.idle_timeout);
        let rx = shutdown_tx.subscribe();
        let server = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            // `tap_io` only so that the peer address reaches the guard (`ConnectInfo`).
            let listener =
                listener::Limited::new(listener, max_connections, idle_timeout).tap_io(|_| {});
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopped(rx))
            .await;
        });
        Ok(LocalStack {
            addr,
            api_key: creds.api_key,
            shutdown: shutdown_tx,
            server,
            app,
        })
    }

    /// Stops accepting, sends close frames to every session and waits for them to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.app.groups.end_all().await;
    }
}

fn wire(
    db: Db,
    creds: &state::Credentials,
    addr: SocketAddr,
    config: &LocalConfig,
    shutdown: watch::Receiver<bool>,
) -> App {
    let clock = Arc::new(SystemClock);
    let metrics = Arc::new(MemoryMetrics::new());
    let store = Arc::new(SqliteStore::new(db.clone()));
    let source = SqliteSource::new(db.clone());
    let pusher = Arc::new(pusher::LocalPusher::default());
    let services = Services::new(
        Ports {
            store: store.clone(),
            connections: store.clone(),
            source: Arc::new(source.clone()),
            pusher: pusher.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
        },
        EngineConfig::default(),
    );
    let signer = TokenSigner::new(creds.token_secret.as_bytes().to_vec(), 3600);
    let keys = ApiKeys::new(vec![creds.api_key.clone()]);
    let api = services.api(
        keys.clone(),
        signer.clone(),
        ApiConfig {
            websocket_url: Some(format!("ws://{addr}/ws")),
            ..ApiConfig::default()
        },
    );
    let ws = services.ws(signer);
    let emulator = emulator::start(
        services.forwarder.clone(),
        metrics.clone(),
        config.chaos.clone(),
    );
    App {
        db,
        store,
        source,
        api,
        ws,
        reconciler: services.reconciler,
        completer: services.completer,
        fanout: services.fanout,
        pusher,
        metrics,
        clock,
        emulator,
        keys,
        shutdown,
        ws_cut: config.chaos.ws_cut_ms.map(Duration::from_millis),
        connect_delay: config.chaos.connect_ms.map(Duration::from_millis),
        groups: runner::ProcessGroups::default(),
    }
}

impl App {
    async fn clear_connections(&self) {
        let _ = self.db.lock_conn().execute("DELETE FROM connections", []);
    }
}

/// Resolves once shutdown is signalled.
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Reconciles running executions that someone is watching (spec §3.2: dropped batches; §6.2).
async fn reconcile_loop(app: Arc<App>, every: Duration) {
    let mut stop = std::pin::pin!(stopped(app.shutdown.clone()));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
        let Ok(running) = app.store.running_executions() else {
            continue;
        };
        for id in running {
            let watched = app
                .fanout
                .connections()
                .list(&id)
                .await
                .is_ok_and(|c| !c.is_empty());
            if !watched {
                continue;
            }
            if let Ok(out) = app.reconciler.reconcile(&id).await
                && let Some(head) = out.head
            {
                let _ = app.fanout.notify(&head, &out.recovered).await;
            }
        }
    }
}
