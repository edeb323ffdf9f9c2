//! Completion on the in-memory ports: the final index published after the tail is reconciled,
//! the sweep reading past lines written during it, and a completion out of time continuing
//! where it stopped.

mod common;

use std::sync::Arc;

use common::{KEY, Tapped, call, env, error_code, reconciler_of_25_lines, write};
use runvoy_core::memory::{MemoryMetrics, MemorySource, MemoryStore, SimClock};
use runvoy_core::ports::{Clock, LogStore};
use runvoy_core::services::{Completer, Reconciler};
use runvoy_core::wire::LogsResponse;
use runvoy_core::{SourceEvent, Status};
use serde_json::Value;

#[tokio::test]
async fn completion_publishes_final_index_after_the_tail() {
    let e = env();
    write(&e, "ex3", 5);
    // Only two lines were delivered by the subscription; completion must reconcile the rest.
    let first: Vec<SourceEvent> = e.source.events("ex3").into_iter().take(2).collect();
    e.appender.append("ex3", first, None).await.unwrap();
    let r = call(
        &e.api,
        "POST",
        "/api/v1/executions/ex3/complete",
        "",
        Some(KEY),
        r#"{"status":"FAILED","exit_code":4}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["final_index"].as_u64(), v["exit_code"].as_i64()),
        (Some(5), Some(4))
    );
    // Same status again: idempotent. Another status: conflict.
    let again = call(
        &e.api,
        "POST",
        "/api/v1/executions/ex3/complete",
        "",
        Some(KEY),
        r#"{"status":"FAILED","exit_code":4}"#,
    )
    .await;
    assert_eq!(again.status, 200);
    let other = call(
        &e.api,
        "POST",
        "/api/v1/executions/ex3/complete",
        "",
        Some(KEY),
        r#"{"status":"SUCCEEDED"}"#,
    )
    .await;
    assert_eq!(
        (other.status, error_code(&other).as_str()),
        (409, "conflict")
    );
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex3/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (page.status, page.final_index, page.exit_code),
        (Status::Failed, Some(5), Some(4))
    );
    assert!(page.websocket_url.is_none());
    let r = call(
        &e.api,
        "POST",
        "/api/v1/executions/ghost/complete",
        "",
        Some(KEY),
        r#"{"status":"FAILED"}"#,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_completion_sweep_reads_past_lines_written_during_it() {
    // Every page meets a line written during the read, as a CloudWatch read does when a late
    // line with an old timestamp lands in the middle of the stream.
    let (store, reconciler) = reconciler_of_25_lines("late", |_, _, _, page| page.live_end = true);
    // A forward read stops there: the rest is the subscription's (or the next read's).
    let forward = reconciler.reconcile("late").await.unwrap();
    assert_eq!((forward.pages, forward.recovered.len()), (1, 10));
    // The sweep that completion waits for reads on until the token comes back.
    let (swept, complete) = reconciler.sweep("late", 0, 0, None).await.unwrap();
    assert!(complete);
    assert_eq!(swept.recovered.len(), 15);
    assert_eq!(store.head("late").await.unwrap().unwrap().last_index, 25);
}

#[tokio::test]
async fn completion_that_runs_out_of_time_continues_where_it_stopped() {
    use runvoy_core::CoreError;
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let inner = Arc::new(MemorySource::new(10));
    for i in 0..100 {
        inner.put("long", 1_699_999_000_000 + i, &format!("line {i}"));
    }
    let source = Arc::new(Tapped::counting(inner, clock.clone(), 1_000));
    let metrics = Arc::new(MemoryMetrics::new());
    let (appender, fanout) = common::engine(store.clone(), clock.clone(), metrics.clone());
    let completer = Completer::new(
        Reconciler::new(source.clone(), appender, metrics.clone()),
        fanout,
    );
    let mut progress = Vec::new();
    for _ in 0..2 {
        let deadline = clock.now_ms() + 3_500;
        let r = completer
            .complete("long", Status::Succeeded, Some(0), None, Some(deadline))
            .await;
        assert!(matches!(r, Err(CoreError::Unfinished(_))), "{r:?}");
        let head = store.head("long").await.unwrap().unwrap();
        assert_eq!(
            head.status,
            Status::Running,
            "not terminal before the re-read ends"
        );
        assert!(head.sweep_cursor.is_some(), "progress is saved");
        progress.push(head.last_index);
    }
    assert!(progress[0] > 0 && progress[1] > progress[0], "{progress:?}");
    let head = completer
        .complete("long", Status::Succeeded, Some(0), None, None)
        .await
        .unwrap();
    assert_eq!(
        (head.status, head.final_index),
        (Status::Succeeded, Some(100))
    );
    let pages = source.pages();
    assert!(
        pages <= 12,
        "a retry continues instead of starting over: {pages} pages for 10"
    );
}
