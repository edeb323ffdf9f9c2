//! Builds every service from one set of ports, the same way for the Lambdas and the local stack.

use std::sync::Arc;

use crate::api::{Api, ApiConfig};
use crate::auth::{ApiKeys, TokenSigner};
use crate::ports::{Clock, ConnectionStore, LogSource, LogStore, Metrics, Pusher};
use crate::services::{Appender, Completer, EngineConfig, FanOut, Forwarder, Reader, Reconciler};
use crate::ws::WsService;

/// The adapters a deployment provides.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn LogStore>,
    pub connections: Arc<dyn ConnectionStore>,
    pub source: Arc<dyn LogSource>,
    pub pusher: Arc<dyn Pusher>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
}

/// Every service, wired.
#[derive(Clone)]
pub struct Services {
    pub ports: Ports,
    pub appender: Appender,
    pub reader: Reader,
    pub reconciler: Reconciler,
    pub fanout: FanOut,
    pub completer: Completer,
    pub forwarder: Forwarder,
}

impl Services {
    pub fn new(ports: Ports, config: EngineConfig) -> Services {
        let grace_ms = config.completion_grace_ms;
        let appender = Appender::new(
            ports.store.clone(),
            ports.clock.clone(),
            ports.metrics.clone(),
            config,
        );
        let reader = Reader::new(ports.store.clone(), ports.clock.clone());
        let fanout = FanOut::new(
            ports.store.clone(),
            ports.connections.clone(),
            ports.pusher.clone(),
            ports.metrics.clone(),
            ports.clock.clone(),
        );
        let reconciler = Reconciler::new(
            ports.source.clone(),
            appender.clone(),
            ports.metrics.clone(),
        );
        let completer = Completer::new(reconciler.clone(), fanout.clone()).with_grace(grace_ms);
        let forwarder = Forwarder::new(appender.clone(), fanout.clone(), ports.metrics.clone());
        Services {
            ports,
            appender,
            reader,
            reconciler,
            fanout,
            completer,
            forwarder,
        }
    }

    pub fn api(&self, keys: ApiKeys, signer: TokenSigner, config: ApiConfig) -> Api {
        Api::new(
            self.reader.clone(),
            self.reconciler.clone(),
            self.completer.clone(),
            self.fanout.clone(),
            keys,
            signer,
            self.ports.clock.clone(),
            config,
        )
    }

    pub fn ws(&self, signer: TokenSigner) -> WsService {
        WsService::new(
            self.reader.clone(),
            self.fanout.clone(),
            self.ports.pusher.clone(),
            signer,
            self.ports.clock.clone(),
        )
    }
}
