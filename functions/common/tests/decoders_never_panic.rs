//! The decoders that face the outside get arbitrary input: they answer with a typed error or a
//! value, never a panic (and, with bounded input, never hang).

use std::sync::Arc;

use proptest::prelude::*;
use runvoy_aws::subscription;
use runvoy_core::api::{Api, ApiConfig, HttpRequest, parse_query};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemorySource, MemoryStore, RecordingPusher, SimClock,
};
use runvoy_core::services::{EngineConfig, Ports, Services};
use runvoy_core::ws::WsService;

fn services() -> Services {
    Services::new(
        Ports {
            store: Arc::new(MemoryStore::new()),
            connections: Arc::new(MemoryConnections::new()),
            source: Arc::new(MemorySource::new(10)),
            pusher: Arc::new(RecordingPusher::new()),
            clock: Arc::new(SimClock::new(0, 1)),
            metrics: Arc::new(MemoryMetrics::new()),
        },
        EngineConfig::default(),
    )
}

fn api_and_ws() -> (Api, WsService) {
    let s = services();
    let signer = TokenSigner::new(b"k".to_vec(), 60);
    (
        s.api(
            ApiKeys::new(vec!["key".into()]),
            signer.clone(),
            ApiConfig::default(),
        ),
        s.ws(signer),
    )
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn subscription_payloads(data in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = subscription::decode(&data);
        use base64::Engine;
        let _ = subscription::decode(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        // Valid gzip around arbitrary JSON-ish text.
        let _ = subscription::decode(&subscription::encode(&data));
    }

    #[test]
    fn http_parameters(path in "/api/v1/executions/[^?]{0,40}(/logs|/complete)?", query in ".{0,80}", method in "(GET|POST|PUT|)", body in ".{0,100}") {
        let _ = parse_query(&query);
        let (api, _) = api_and_ws();
        let r = block(api.handle(HttpRequest { method, path, query, api_key: Some("key".into()), accept: None, body: body.into_bytes() }));
        prop_assert!(matches!(r.status, 200 | 400 | 404 | 405 | 409 | 410 | 413), "status {}", r.status);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if r.status != 200 {
            prop_assert!(v["error"].is_string() && v["code"].is_string());
        }
    }

    #[test]
    fn websocket_messages_and_queries(text in ".{0,120}", query in ".{0,120}") {
        let (_, ws) = api_and_ws();
        block(async {
            let _ = ws.connect("c1", &query).await;
            ws.message("c1", &text).await.unwrap();
        });
    }
}
