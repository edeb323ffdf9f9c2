//! The DynamoDB store behind the gate's timing (`--chaos txn-skew-ms, sdk-retry,
//! throttle-wcu`): the engine's real adapter, on moto, meeting what DynamoDB does and moto does
//! not — a transaction's records seen after its head, a success answered 500 and sent again, a
//! partition key out of write units. Each test checks that the timing was really played, so it
//! cannot pass by the timing being idle.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::config::Credentials;
use runvoy_aws::testkit::{moto_endpoint, unique};
use runvoy_aws::{DynamoStore, create_tables};
use runvoy_core::SourceEvent;
use runvoy_core::memory::MemoryMetrics;
use runvoy_core::ports::{HeadReader, LogReader};
use runvoy_core::services::{Appender, EngineConfig};
use runvoy_runtime::SystemClock;
use runvoy_sim::gate::{self, Caller, Gate};
use runvoy_sim::iam::Policy;
use runvoy_sim::template::Place;
use runvoy_sim::timing::{DynamoChaos, DynamoTiming, TimingStats};
use serde_json::json;

const KEY: &str = "ASIATIMINGTEST";

/// A gate playing `chaos` in front of moto, tables made for this test, and the store on them.
async fn store_behind(chaos: DynamoChaos) -> (Arc<DynamoStore>, Arc<Gate>) {
    let place = Place {
        region: "us-east-1".into(),
        account: "123456789012".into(),
        stack_name: "timing".into(),
    };
    let callers = HashMap::from([(
        KEY.to_string(),
        Caller {
            function: "engine".into(),
            policy: Arc::new(Policy::from_statements(
                "arn:aws:sts::123456789012:assumed-role/engine/test",
                &json!([{"Effect": "Allow", "Action": ["dynamodb:*"], "Resource": ["*"]}]),
            )),
        },
    )]);
    let gate = Arc::new(
        Gate::new(moto_endpoint(), Arc::new(callers), place, 25.0)
            .with_timing(DynamoTiming::new(chaos)),
    );
    let (listener, addr) = gate::bind().await.unwrap();
    std::mem::forget(gate.clone().serve(listener));
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(KEY, "secret", None, None, "test"))
        .endpoint_url(format!("http://{addr}"))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let (logs, conns) = (unique("timing-logs"), unique("timing-conns"));
    create_tables(&client, &logs, &conns).await.unwrap();
    (Arc::new(DynamoStore::new(client, logs)), gate)
}

fn appender(store: Arc<DynamoStore>) -> Appender {
    Appender::new(
        store,
        Arc::new(SystemClock),
        Arc::new(MemoryMetrics::default()),
        EngineConfig::default(),
    )
}

fn batch(n: usize, ts: i64) -> Vec<SourceEvent> {
    (0..n)
        .map(|i| SourceEvent {
            event_id: format!("{ts}-{i}-line"),
            timestamp: ts,
            message: format!("line {i}"),
        })
        .collect()
}

/// Every committed event id of `exec`, in index order.
async fn committed(store: &DynamoStore, exec: &str) -> Vec<String> {
    let head = store.head(exec).await.unwrap().expect("a head");
    let events = store
        .read_range(exec, 0, head.last_index, usize::MAX)
        .await
        .unwrap();
    assert_eq!(events.len() as u64, head.last_index, "I1: 1..=last_index");
    events.into_iter().map(|e| e.event_id).collect()
}

fn timing(gate: &Gate) -> TimingStats {
    gate.timing_stats().expect("timing is played")
}

/// One batch handed to two invocations at once (Lambda async), and again right after the first
/// commit, while its records are not visible yet: each event is committed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_twice_while_its_records_are_not_visible_commits_once() {
    let (store, gate) = store_behind(DynamoChaos {
        txn_skew_ms: 400,
        ..DynamoChaos::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for round in 0..12 {
        let exec = format!("skew-{round}");
        let events = batch(20, now + round);
        let (a, b) = (appender(store.clone()), appender(store.clone()));
        let (ea, eb) = (events.clone(), events.clone());
        let (ra, rb) = tokio::join!(a.append(&exec, ea, None), b.append(&exec, eb, None));
        ra.unwrap();
        rb.unwrap();
        // And once more, at once: the head covers the batch, its records may be hidden.
        appender(store.clone())
            .append(&exec, events.clone(), None)
            .await
            .unwrap();
        let ids = committed(&store, &exec).await;
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            ids.len(),
            unique.len(),
            "round {round}: an event committed twice"
        );
        assert_eq!(
            ids.len(),
            events.len(),
            "round {round}: every event committed"
        );
    }
    let t = timing(&gate);
    assert!(
        t.items_skewed > 0 && t.reads_behind > 0,
        "the skew was played: {t:?}"
    );
}

/// A successful transaction answered 500: the SDK sends it again, it fails its condition, and
/// the engine finds its own commit instead of committing the events a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_answered_500_and_sent_again_commits_once() {
    let (store, gate) = store_behind(DynamoChaos {
        txn_skew_ms: 100,
        sdk_retry: 0.5,
        ..DynamoChaos::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let exec = "sdk-retry";
    let mut all = Vec::new();
    for round in 0..30 {
        let events = batch(5, now + round);
        all.extend(events.iter().map(|e| e.event_id.clone()));
        appender(store.clone())
            .append(exec, events, None)
            .await
            .unwrap();
    }
    let ids = committed(&store, exec).await;
    let twice = ids.len() - {
        let mut u = ids.clone();
        u.sort();
        u.dedup();
        u.len()
    };
    assert_eq!(twice, 0, "{twice} events committed twice");
    assert!(ids == all, "each once, in order");
    let t = timing(&gate);
    assert!(t.successes_answered_500 > 0, "the 500s were played: {t:?}");
}

/// A partition key out of write units: the engine slows down and commits every line, instead
/// of failing the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_partition_slows_the_writer_down_and_loses_nothing() {
    let (store, gate) = store_behind(DynamoChaos {
        throttle_wcu: Some(40),
        ..DynamoChaos::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let exec = "throttled";
    // Three writers at once, 12 commits of 2,000 lines (about 50 units each): several seconds
    // of the partition's units.
    let mut tasks = Vec::new();
    for w in 0..3i64 {
        let a = appender(store.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..4i64 {
                a.append(exec, batch(2_000, now + w * 10 + round), None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let ids = committed(&store, exec).await;
    assert_eq!(ids.len(), 3 * 4 * 2_000);
    let t = timing(&gate);
    assert!(t.writes_throttled > 0, "throttling was played: {t:?}");
}
