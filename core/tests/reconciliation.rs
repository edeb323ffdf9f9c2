//! Reconciliation driven by reads on the in-memory ports: a stream being written read to the
//! end it reached, expired executions never indexed again, and the read-triggered schedule.

mod common;

use std::sync::Arc;

use common::{KEY, Tapped, call, env, error_code, reconciler_of_25_lines, write};
use runvoy_core::api::{Api, ApiConfig};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::memory::{MemoryMetrics, MemorySource, MemoryStore, SimClock};
use runvoy_core::ports::{LogStore, Metric};
use runvoy_core::services::{Completer, Reader, Reconciler};

#[tokio::test]
async fn reconciling_a_stream_being_written_stops_at_the_end_it_read() {
    // The token at the end of a growing stream never repeats: reconciliation must stop at the
    // end of what it read, not chase the producer until its deadline (a first read of a live
    // execution took the whole 5 s budget, twice, before this).
    // A stream its producer keeps writing: a new line lands after every read.
    let (store, reconciler) = reconciler_of_25_lines("live", |src, id, n, _| {
        src.put(
            id,
            1_700_000_000_000 + n as i64,
            &format!("written during read {n}"),
        );
    });
    let outcome = reconciler.reconcile("live").await.unwrap();
    assert!(outcome.caught_up);
    assert_eq!(
        outcome.pages, 3,
        "25 lines in pages of 10 (and one line written after each read)"
    );
    assert_eq!(store.head("live").await.unwrap().unwrap().last_index, 27);
    // The next reconciliation continues from there.
    let again = reconciler.reconcile("live").await.unwrap();
    assert!(again.caught_up);
    assert_eq!(
        again.recovered.len(),
        1,
        "the line written after the last read"
    );
    assert_eq!(store.head("live").await.unwrap().unwrap().last_index, 28);
}

#[tokio::test]
async fn an_execution_whose_lines_expired_is_never_indexed_again() {
    let e = env();
    // The source still holds lines of an execution eight days old; its stored lines (and head)
    // are gone, as TTL leaves them: reading it answers 410, it does not come back RUNNING.
    let eight_days_ago = 1_700_000_000_000 - 8 * 86_400_000;
    for i in 0..3 {
        e.source.put("old", eight_days_ago + i, &format!("old {i}"));
    }
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/old/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (410, "expired"),
        "{}",
        r.body
    );
    let r = call(&e.api, "GET", "/api/v1/executions/old", "", Some(KEY), "").await;
    assert_eq!(r.status, 410, "{}", r.body);
    // A late subscription batch of it is refused and counted, not committed as a fragment.
    let forwarder = runvoy_core::services::Forwarder::new(
        e.appender.clone(),
        e.fanout.clone(),
        e.metrics.clone(),
    );
    let late = e.source.events("old");
    let out = forwarder.forward("old", late).await.unwrap();
    assert!(out.committed.is_empty());
    assert_eq!(e.metrics.get(Metric::ExpiredEvents), 3);
    assert!(e.appender.store().head("old").await.unwrap().is_none());
    // A recent execution is populated as before.
    write(&e, "new", 2);
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/new/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn idle_reads_reconcile_ever_less_often_until_lines_go_missing() {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let inner = Arc::new(MemorySource::new(100));
    let source = Arc::new(Tapped::counting(inner.clone(), clock.clone(), 0));
    let metrics = Arc::new(MemoryMetrics::new());
    let (appender, fanout) = common::engine(store.clone(), clock.clone(), metrics.clone());
    let reconciler = Reconciler::new(source.clone(), appender, metrics.clone());
    let api = Api::new(
        Reader::new(store.clone(), clock.clone()),
        reconciler.clone(),
        Completer::new(reconciler, fanout.clone()),
        fanout,
        ApiKeys::new(vec![KEY.into()]),
        TokenSigner::new(b"s".to_vec(), 600),
        clock.clone(),
        ApiConfig {
            reconcile_interval_ms: 5_000,
            reconcile_max_interval_ms: 20_000,
            ..ApiConfig::default()
        },
    );
    inner.put("idle", 1_699_999_990_000, "first");
    // Whether a read at `after_ms` from now reads the source.
    let read_after = |after_ms: i64| {
        let (api, clock, source) = (&api, &clock, &source);
        async move {
            clock.advance(after_ms);
            let before = source.pages();
            let r = call(
                api,
                "GET",
                "/api/v1/executions/idle/logs",
                "",
                Some(KEY),
                "",
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            source.pages() > before
        }
    };
    // Each wait is spread over ±25 %: not due before 3/4 of it, due after 5/4.
    assert!(read_after(0).await, "the first read populates");
    assert!(!read_after(0).await, "at once again: nothing is due");
    assert!(
        !read_after(3_700).await,
        "nothing is due before 5 s (less 25 %)"
    );
    assert!(read_after(2_600).await, "after 5 s (plus 25 %)");
    assert!(!read_after(7_400).await, "the wait doubled to 10 s");
    assert!(read_after(5_200).await);
    assert!(!read_after(14_900).await, "then 20 s");
    assert!(read_after(10_200).await);
    assert!(!read_after(14_900).await, "20 s at most");
    // A line the subscription never delivered: found at the next reconcile, and the wait goes
    // back to the minimum.
    inner.put("idle", 1_699_999_995_000, "dropped");
    assert!(read_after(10_200).await);
    assert!(
        read_after(6_300).await,
        "back to 5 s after lines went missing"
    );
}
