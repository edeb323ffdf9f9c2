//! What the service tests share: the in-memory world every API, WebSocket and fan-out test
//! runs in, a call to the API, and a log source that counts and taps its reads.

// Each test file uses some of these, never all.
#![allow(dead_code)]

use std::sync::Arc;

use runvoy_core::api::{Api, ApiConfig, HttpRequest, HttpResponse};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemorySource, MemoryStore, RecordingPusher, SimClock,
};
use runvoy_core::ports::{LogStore, SourcePage};
use runvoy_core::services::{Appender, Completer, EngineConfig, FanOut, Reader, Reconciler};
use runvoy_core::ws::WsService;
use serde_json::Value;

pub const KEY: &str = "k-123";

/// An appender and a fan-out that pushes to nobody, on the memory ports: what reconciliation
/// and completion need when a test does not look at pushes.
pub fn engine(
    store: Arc<dyn LogStore>,
    clock: Arc<SimClock>,
    metrics: Arc<MemoryMetrics>,
) -> (Appender, FanOut) {
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let fanout = FanOut::new(
        store,
        Arc::new(MemoryConnections::new()),
        Arc::new(RecordingPusher::new()),
        metrics,
        clock,
    );
    (appender, fanout)
}

pub struct Env {
    pub clock: Arc<SimClock>,
    pub source: Arc<MemorySource>,
    pub pusher: Arc<RecordingPusher>,
    pub metrics: Arc<MemoryMetrics>,
    pub appender: Appender,
    pub fanout: FanOut,
    pub api: Api,
    pub ws: WsService,
    pub signer: TokenSigner,
}

pub fn env() -> Env {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let source = Arc::new(MemorySource::new(3));
    let pusher = Arc::new(RecordingPusher::new());
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let reader = Reader::new(store.clone(), clock.clone());
    let fanout = FanOut::new(
        store.clone(),
        Arc::new(MemoryConnections::new()),
        pusher.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let reconciler = Reconciler::new(source.clone(), appender.clone(), metrics.clone());
    let completer = Completer::new(reconciler.clone(), fanout.clone());
    let signer = TokenSigner::new(b"s".to_vec(), 600);
    let api = Api::new(
        reader.clone(),
        reconciler,
        completer,
        fanout.clone(),
        ApiKeys::new(vec![KEY.into()]),
        signer.clone(),
        clock.clone(),
        ApiConfig {
            websocket_url: Some("ws://127.0.0.1:8787/ws".into()),
            reconcile_interval_ms: 0,
            ..ApiConfig::default()
        },
    );
    let ws = WsService::new(
        reader,
        fanout.clone(),
        pusher.clone(),
        signer.clone(),
        clock.clone(),
    );
    Env {
        clock,
        source,
        pusher,
        metrics,
        appender,
        fanout,
        api,
        ws,
        signer,
    }
}

pub async fn call(
    api: &Api,
    method: &str,
    path: &str,
    query: &str,
    key: Option<&str>,
    body: &str,
) -> HttpResponse {
    api.handle(HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        api_key: key.map(str::to_string),
        accept: None,
        body: body.as_bytes().to_vec(),
    })
    .await
}

pub fn error_code(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["error"].as_str().is_some_and(|s| !s.is_empty()),
        "no sentence in {}",
        r.body
    );
    v["code"].as_str().unwrap().to_string()
}

pub fn write(e: &Env, exec: &str, n: usize) {
    for i in 0..n {
        // A minute before the clock: recent lines (older ones would be expired).
        e.source
            .put(exec, 1_699_999_940_000 + i as i64, &format!("line {i}"));
    }
}

/// What a [`Tapped`] source does after each read: given the source, the execution, the read's
/// number and the page it read.
pub type Tap = Box<dyn Fn(&MemorySource, &str, usize, &mut SourcePage) + Send + Sync>;

/// A memory source that counts the pages read from it and runs a tap after each read (to move
/// a clock, write to the stream while it is read, or change what the page says).
pub struct Tapped {
    inner: Arc<MemorySource>,
    reads: std::sync::atomic::AtomicUsize,
    tap: Tap,
}

impl Tapped {
    pub fn new(
        inner: Arc<MemorySource>,
        tap: impl Fn(&MemorySource, &str, usize, &mut SourcePage) + Send + Sync + 'static,
    ) -> Tapped {
        Tapped {
            inner,
            reads: Default::default(),
            tap: Box::new(tap),
        }
    }

    /// Each read takes `page_ms` of (simulated) time.
    pub fn counting(inner: Arc<MemorySource>, clock: Arc<SimClock>, page_ms: i64) -> Tapped {
        Tapped::new(inner, move |_, _, _, _| clock.advance(page_ms))
    }

    pub fn pages(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl runvoy_core::ports::LogSource for Tapped {
    async fn exists(&self, id: &str) -> Result<bool, runvoy_core::StoreError> {
        self.inner.exists(id).await
    }
    async fn newest_timestamp(&self, id: &str) -> Result<Option<i64>, runvoy_core::StoreError> {
        self.inner.newest_timestamp(id).await
    }
    async fn page(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> Result<SourcePage, runvoy_core::StoreError> {
        let mut page = self.inner.page(id, token).await?;
        let n = self
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.tap)(&self.inner, id, n, &mut page);
        Ok(page)
    }
}

/// 25 lines of `id` in a source read in pages of 10 through `tap`, and a reconciler from it
/// into an empty store.
pub fn reconciler_of_25_lines(
    id: &str,
    tap: impl Fn(&MemorySource, &str, usize, &mut SourcePage) + Send + Sync + 'static,
) -> (Arc<dyn LogStore>, Reconciler) {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let inner = Arc::new(MemorySource::new(10));
    for i in 0..25 {
        inner.put(id, 1_699_999_000_000 + i, &format!("line {i}"));
    }
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock,
        metrics.clone(),
        EngineConfig::default(),
    );
    let source = Arc::new(Tapped::new(inner, tap));
    (store, Reconciler::new(source, appender, metrics))
}
