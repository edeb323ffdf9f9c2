//! `sim`: the AWS path of runvoy on one machine. The rendered template is deployed to moto by
//! the deploy tool's own code; what moto skips is emulated from the template's definitions:
//! Lambda (the real function binaries behind a Runtime API), the HTTP and WebSocket APIs, the
//! subscription filter and the EventBridge rule. AWS's rules are enforced where the product can
//! break: IAM per action and resource, response and message sizes, timeouts, `$connect`, TTL
//! and the `GetLogEvents` quota. See ARCHITECTURE.md for what it cannot reproduce.

pub mod apigw;
mod deployed;
pub mod events;
mod functions;
pub mod gate;
pub mod iam;
pub mod lambda;
pub mod ledger;
pub mod moto;
mod package;
mod producer;
pub mod subscription;
pub mod template;
pub mod timing;
pub mod trace;
mod triggers;
pub mod ttl;
mod wiring;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runvoy_core::auth::ApiKeys;
use runvoy_local::Chaos;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::watch;

use crate::apigw::websocket::WebSocketApi;
use crate::events::EventBus;
use crate::gate::Gate;
use crate::iam::Policy;
use crate::lambda::Function;
use crate::subscription::Subscription;
use crate::template::Place;
use crate::ttl::Sweeper;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("template: {0}")]
    Template(String),
    #[error("moto: {0}")]
    Moto(String),
    #[error("deploying the stack to moto failed: {0}")]
    Deploy(String),
    #[error("function binaries: {0}")]
    Functions(String),
    #[error(
        "cannot listen on {0}: {1}; is another stack running? choose another address with --listen"
    )]
    Listen(SocketAddr, String),
    #[error("state directory: {0}")]
    State(String),
}

/// How to run the sim.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The HTTP API (and the producer endpoints).
    pub listen: SocketAddr,
    /// The WebSocket API; default: the port this state directory used last, else a free one.
    pub websocket_listen: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub api_key: Option<String>,
    pub chaos: Chaos,
    /// The template text to deploy.
    pub template: String,
    /// An existing moto (started with scripts/moto-server); default: start one.
    pub endpoint_url: Option<String>,
    /// Where the function binaries built for this machine are (`<dir>/forwarder`, …).
    pub functions_dir: PathBuf,
    /// Where function code unpacked from S3 is kept, by S3 key (which names the content).
    pub cache_dir: PathBuf,
    pub project: String,
    pub region: String,
    /// The account's `GetLogEvents` quota shared by every function (calls per second).
    pub get_log_events_per_sec: f64,
    /// Waits before the retries of an asynchronous invocation (AWS: about 1 and 2 minutes).
    pub retry_delays: Vec<Duration>,
    /// How often expired items are deleted.
    pub ttl_every: Duration,
    /// Execution environments per function at most.
    pub max_concurrency: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            websocket_listen: None,
            state_dir: PathBuf::from(".runvoy/sim"),
            api_key: None,
            chaos: Chaos::default(),
            template: String::new(),
            endpoint_url: None,
            functions_dir: PathBuf::from("target/debug"),
            cache_dir: std::env::temp_dir().join("runvoy-sim-functions"),
            project: "runvoy".into(),
            region: "us-east-1".into(),
            get_log_events_per_sec: 25.0,
            retry_delays: vec![Duration::from_secs(1), Duration::from_secs(2)],
            ttl_every: Duration::from_secs(60),
            max_concurrency: 10,
        }
    }
}

/// What the deploy tool is asked to deploy (through the code path of `up --env NAME`).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub endpoint: String,
    pub region: String,
    pub project: String,
    pub stack_name: String,
    pub template: String,
    /// `<dir>/<bin>/bootstrap.zip` for every function.
    pub artifacts_dir: PathBuf,
    pub api_key: String,
}

/// The deploy tool's `up`, handed to the sim (which cannot depend on the tool).
#[async_trait::async_trait]
pub trait Deployer: Send + Sync {
    async fn deploy(&self, d: &Deployment) -> Result<(), String>;
}

/// Credentials the sim's own calls to moto use (as the AWS services themselves).
pub const SERVICE_KEY: &str = "AKIASIMSERVICE000000";

/// What the handlers share.
pub(crate) struct Shared {
    pub keys: ApiKeys,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub group: String,
    pub stream_template: String,
    pub cluster: String,
    /// Tasks running commands: `<id>` files, removed when the task stopped.
    pub runs: PathBuf,
    pub place: Place,
    pub bus: EventBus,
    pub subscription: Option<Subscription>,
    pub sweeper: Sweeper,
    pub gate: Arc<Gate>,
    pub functions: Vec<Arc<Function>>,
    pub policies: Vec<(String, Arc<Policy>)>,
    pub ws: Arc<WebSocketApi>,
    /// The commands it runs as tasks, each in a process group of its own.
    pub groups: runvoy_local::runner::ProcessGroups,
    /// What the traffic is billed on AWS.
    pub ledger: Arc<ledger::Ledger>,
    /// The delivery trace (off until asked for).
    pub trace: Arc<trace::Trace>,
}

impl Shared {
    /// Counters of every emulated service and the IAM grants nobody used.
    pub(crate) fn stats(&self) -> Value {
        let functions: BTreeMap<String, Value> = self
            .functions
            .iter()
            .map(|f| (f.spec.name.clone(), json!(f.stats())))
            .collect();
        let unused: BTreeMap<String, Vec<String>> = self
            .policies
            .iter()
            .map(|(f, p)| {
                (
                    f.clone(),
                    p.unused()
                        .into_iter()
                        .map(|c| format!("{} on {}", c.action, c.resource))
                        .collect(),
                )
            })
            .collect();
        let gate = self.gate.stats();
        let lambda: Vec<ledger::LambdaUsage> = self
            .functions
            .iter()
            .map(|f| {
                let s = f.stats();
                ledger::LambdaUsage {
                    name: f.spec.name.clone(),
                    invocations: s.invocations,
                    billed_ms: s.billed_ms,
                    memory_mb: s.memory_mb,
                    log_events: s.log_events,
                    log_bytes: s.log_bytes,
                }
            })
            .collect();
        json!({
            "billing": self.ledger.snapshot(lambda::now_ms(), &lambda, &gate.calls),
            "gate": gate,
            "dynamodb_timing": self.gate.timing_stats(),
            "functions": functions,
            "websocket": self.ws.stats(),
            "unused_grants": unused,
        })
    }
}

/// A running sim.
pub struct SimStack {
    pub addr: SocketAddr,
    pub websocket_addr: SocketAddr,
    pub api_key: String,
    pub moto_endpoint: String,
    pub stack_name: String,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl SimStack {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counters of the emulated services (also `GET /local/v1/sim/stats`).
    pub fn stats(&self) -> Value {
        self.shared.stats()
    }

    /// Deploys the template to moto and serves it until [`SimStack::stop`].
    pub async fn start(config: SimConfig, deployer: &dyn Deployer) -> Result<SimStack, SimError> {
        wiring::start(config, deployer).await
    }

    /// Stops serving, closes WebSocket connections and stops every function environment.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        self.shared.groups.end_all().await;
    }
}
