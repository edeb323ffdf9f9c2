//! Where a logs page starts: `since_index`, `tail` (the last N lines), `since_time` (the first
//! line at or after a time, by index; every later line follows in index order).

mod common;

use std::sync::Arc;

use runvoy_core::api::{Api, ApiConfig, HttpRequest, SINCE_TIME_SCAN};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::memory::{MemoryMetrics, MemorySource, MemoryStore, SimClock};
use runvoy_core::services::{Completer, Reader, Reconciler};
use runvoy_core::wire::LogsResponse;
use serde_json::Value;

const KEY: &str = "k-start";
const T0: i64 = 1_800_000_000_000;

/// An API over lines of execution `ex` with these timestamps, read from the source in pages of
/// `page` (each committed in timestamp order, pages in order).
fn api_over(timestamps: &[i64]) -> Api {
    api_paged(timestamps, 5_000)
}

fn api_paged(timestamps: &[i64], page: usize) -> Api {
    let clock = Arc::new(SimClock::new(T0 + 3_600_000, 1));
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let source = Arc::new(MemorySource::new(page));
    for (i, t) in timestamps.iter().enumerate() {
        source.put("ex", *t, &format!("line {}", i + 1));
    }
    let metrics = Arc::new(MemoryMetrics::new());
    let (appender, fanout) = common::engine(store.clone(), clock.clone(), metrics.clone());
    let reconciler = Reconciler::new(source, appender, metrics);
    Api::new(
        Reader::new(store, clock.clone()),
        reconciler.clone(),
        Completer::new(reconciler, fanout.clone()),
        fanout,
        ApiKeys::new(vec![KEY.into()]),
        TokenSigner::new(b"s".to_vec(), 600),
        clock,
        ApiConfig {
            reconcile_interval_ms: 0,
            ..ApiConfig::default()
        },
    )
}

async fn get(api: &Api, query: &str) -> (u16, String) {
    let r = api
        .handle(HttpRequest {
            method: "GET".into(),
            path: "/api/v1/executions/ex/logs".into(),
            query: query.into(),
            api_key: Some(KEY.into()),
            accept: None,
            body: Vec::new(),
        })
        .await;
    (r.status, r.body)
}

async fn page(api: &Api, query: &str) -> LogsResponse {
    let (status, body) = get(api, query).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn indexes(p: &LogsResponse) -> Vec<u64> {
    p.events.iter().map(|e| e.index).collect()
}

#[tokio::test]
async fn tail_starts_at_the_last_lines() {
    let api = api_over(&(0..10).map(|i| T0 + i).collect::<Vec<_>>());
    let p = page(&api, "tail=3").await;
    assert_eq!(indexes(&p), vec![8, 9, 10]);
    assert_eq!((p.last_index, p.has_more), (10, false));
    // More than there is: from the first line.
    assert_eq!(indexes(&page(&api, "tail=50").await).len(), 10);
    // tail=0: nothing yet, follow from the end.
    let none = page(&api, "tail=0").await;
    assert!(none.events.is_empty());
    assert_eq!(none.last_index, 10);
    // With since_index, the later start wins; with limit, the rest follows with has_more.
    assert_eq!(
        indexes(&page(&api, "tail=5&since_index=8").await),
        vec![9, 10]
    );
    let first = page(&api, "tail=5&limit=2").await;
    assert_eq!((indexes(&first), first.has_more), (vec![6, 7], true));
}

#[tokio::test]
async fn since_time_starts_at_the_first_line_at_or_after_it_and_keeps_index_order() {
    // Line 4 is older than line 3: it was committed in a later batch with an older timestamp.
    let ts = [T0, T0 + 10, T0 + 20, T0 + 5, T0 + 30, T0 + 40];
    let api = api_paged(&ts, 3);
    let p = page(&api, &format!("since_time={}", T0 + 20)).await;
    assert_eq!(
        indexes(&p),
        vec![3, 4, 5, 6],
        "line 4 follows line 3, by index"
    );
    assert_eq!(
        indexes(&page(&api, &format!("since_time={}", T0 + 11)).await),
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        indexes(&page(&api, &format!("since_time={T0}")).await).len(),
        6
    );
    // After every line: nothing, and following continues from the end.
    let after = page(&api, &format!("since_time={}", T0 + 1_000)).await;
    assert!(after.events.is_empty());
    assert_eq!((after.last_index, after.has_more), (6, false));
}

#[tokio::test]
async fn a_long_search_answers_how_far_it_got_and_continues() {
    // The first line at or after the time is past one request's budget.
    let n = SINCE_TIME_SCAN + 20_000;
    let ts: Vec<i64> = (0..n as i64).map(|i| T0 - 3_000_000 + i).collect();
    let api = api_over(&ts);
    let want = T0 - 3_000_000 + SINCE_TIME_SCAN as i64 + 10_000;
    let first = page(&api, &format!("since_time={want}")).await;
    assert!(first.events.is_empty() && first.has_more);
    assert!(first.last_index >= SINCE_TIME_SCAN as u64);
    let next = page(
        &api,
        &format!("since_time={want}&since_index={}", first.last_index),
    )
    .await;
    assert_eq!(next.events[0].index, SINCE_TIME_SCAN as u64 + 10_001);
}

#[tokio::test]
async fn bad_start_parameters_are_refused_with_a_sentence() {
    let api = api_over(&[T0]);
    for q in [
        "tail=x",
        "since_time=yesterday",
        "tail=1&since_time=5",
        "tail=-1",
    ] {
        let (status, body) = get(&api, q).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("bad_request")),
            "{q}: {body}"
        );
    }
}
