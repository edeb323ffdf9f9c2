//! The CloudWatch Logs source against moto: paging across GetLogEvents pages and millisecond
//! boundaries, identical lines, unknown streams, and agreement with subscription payloads.

use std::sync::Arc;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use runvoy_aws::testkit::{sdk_config, unique};
use runvoy_aws::{CloudWatchSource, StreamNames, identity, subscription};
use runvoy_core::memory::{MemoryMetrics, MemoryStore, SimClock};
use runvoy_core::ports::LogSource;
use runvoy_core::services::{Appender, EngineConfig, Reconciler};

async fn source_with(
    exec: &str,
    lines: &[(i64, String)],
) -> (CloudWatchSource, aws_sdk_cloudwatchlogs::Client, String) {
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk_config().await);
    let group = format!("/aws/ecs/{}/runner", unique("cw"));
    client
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    let names = StreamNames::default();
    client
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name(names.stream(exec))
        .send()
        .await
        .unwrap();
    for chunk in lines.chunks(5_000) {
        let events: Vec<InputLogEvent> = chunk
            .iter()
            .map(|(ts, m)| {
                InputLogEvent::builder()
                    .timestamp(*ts)
                    .message(m)
                    .build()
                    .unwrap()
            })
            .collect();
        client
            .put_log_events()
            .log_group_name(&group)
            .log_stream_name(names.stream(exec))
            .set_log_events(Some(events))
            .send()
            .await
            .unwrap();
    }
    // A read that follows begins after every line was ingested, in a later millisecond: a line
    // ingested in the millisecond a read begins counts as being written (`live_end`), and the
    // read would end before its last millisecond, as on a stream still being written.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    (
        CloudWatchSource::new(client.clone(), group.clone(), names),
        client,
        group,
    )
}

/// A reconciler from `source` into an in-memory store.
fn reconciler_of(source: &CloudWatchSource) -> (Arc<MemoryStore>, Reconciler) {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        Arc::new(SimClock::new(now_ms(), 3)),
        metrics.clone(),
        EngineConfig::default(),
    );
    let reconciler = Reconciler::new(Arc::new(source.clone()), appender, metrics);
    (store, reconciler)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 12,000 lines: every millisecond holds three lines, two of them identical.
fn lines() -> Vec<(i64, String)> {
    let base = now_ms() - 3_600_000;
    (0..12_000)
        .map(|i| {
            let ts = base + (i / 3) as i64;
            let m = if i % 3 == 2 {
                format!("distinct {i}")
            } else {
                "same".to_string()
            };
            (ts, m)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_commits_every_line_once_across_pages() {
    let lines = lines();
    let (source, _, _) = source_with("exec-a", &lines).await;
    let (store, reconciler) = reconciler_of(&source);

    let first = reconciler.reconcile("exec-a").await.unwrap();
    assert!(
        first.pages >= 2,
        "12,000 lines should be cut into pages, took {}",
        first.pages
    );
    let committed = store.all_events("exec-a");
    assert_eq!(committed.len(), 12_000);
    assert!(
        committed
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i as u64 + 1)
    );
    let mut got: Vec<(i64, String)> = committed
        .iter()
        .map(|e| (e.timestamp, e.message.clone()))
        .collect();
    let mut want = lines.clone();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "every line, identical ones included, exactly once"
    );

    // Again from the saved cursor, and again from the start: nothing new.
    assert!(
        reconciler
            .reconcile("exec-a")
            .await
            .unwrap()
            .recovered
            .is_empty()
    );
    assert!(
        reconciler
            .sweep("exec-a", 0, 0, None)
            .await
            .unwrap()
            .0
            .recovered
            .is_empty()
    );
    assert_eq!(store.all_events("exec-a").len(), 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_ids_match_reconciliation_ids() {
    let lines = lines()[..30].to_vec();
    let (source, _, _) = source_with("exec-b", &lines).await;
    let page = source.page("exec-b", None).await.unwrap();
    // A subscription batch carrying the same lines decodes to the same ids.
    let events: Vec<serde_json::Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (ts, m))| serde_json::json!({"id": format!("cw-{i}"), "timestamp": ts, "message": m}))
        .collect();
    let payload = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/g",
        "logStream": "task/runner/exec-b", "subscriptionFilters": ["f"], "logEvents": events,
    });
    let decoded = subscription::decode(&subscription::encode(&payload.to_string())).unwrap();
    let from_subscription = identity::with_ids(
        decoded
            .log_events
            .into_iter()
            .map(|e| (e.timestamp, e.message))
            .collect(),
    );
    assert_eq!(from_subscription, page.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_and_bad_tokens_are_told_apart() {
    let (source, _, _) = source_with("exec-c", &lines()[..3]).await;
    assert!(source.exists("exec-c").await.unwrap());
    assert!(!source.exists("no-such-execution").await.unwrap());
    assert_eq!(
        source.page("exec-c", Some("garbage")).await,
        Err(runvoy_core::StoreError::InvalidToken)
    );
    // At the end the same token comes back.
    let p = source.page("exec-c", None).await.unwrap();
    let again = source.page("exec-c", Some(&p.next_token)).await.unwrap();
    assert_eq!(again.next_token, p.next_token);
}

/// A producer writes lines one call after another while the execution is populated: the forward
/// read ends at the lines being written (the token at the end moves with every new line, so it
/// never comes back) while the producer is still writing. A completion sweep does not stop
/// there (what it meets may be a late line in the middle of the stream): it reads until the
/// token comes back, so it ends with every line committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_being_written_is_read_to_its_end_and_no_further() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const LIVE: usize = 1_500;
    let backlog: Vec<(i64, String)> = (0..3_000)
        .map(|i| (now_ms() - 60_000 + i / 10, format!("backlog {i}")))
        .collect();
    let (source, client, group) = source_with("exec-d", &backlog).await;
    let writing = Arc::new(AtomicBool::new(true));
    let producer = tokio::spawn({
        let writing = writing.clone();
        async move {
            let stream = StreamNames::default().stream("exec-d");
            for i in 0..LIVE {
                let event = InputLogEvent::builder()
                    .timestamp(now_ms())
                    .message(format!("live {i}"))
                    .build()
                    .unwrap();
                client
                    .put_log_events()
                    .log_group_name(&group)
                    .log_stream_name(&stream)
                    .log_events(event)
                    .send()
                    .await
                    .unwrap();
            }
            writing.store(false, Ordering::SeqCst);
        }
    });
    // Let the producer get going.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (store, reconciler) = reconciler_of(&source);
    let first = reconciler.reconcile("exec-d").await.unwrap();
    assert!(
        writing.load(Ordering::SeqCst),
        "the read chased the producer until it stopped ({} pages)",
        first.pages
    );
    assert!(first.caught_up);
    let populated = store.all_events("exec-d").len();
    assert!(populated > backlog.len(), "{populated}");
    let (swept, complete) = reconciler.sweep("exec-d", 0, 0, None).await.unwrap();
    assert!(complete, "{swept:?}");
    assert!(
        !writing.load(Ordering::SeqCst),
        "the sweep stopped at a line written during it"
    );
    producer.await.unwrap();
    let all = store.all_events("exec-d");
    assert_eq!(all.len(), backlog.len() + LIVE);
    assert!(all.iter().enumerate().all(|(i, e)| e.index == i as u64 + 1));
}

/// `PutLogEvents` takes lines stamped up to 2 h ahead. One of them must not carry the forward
/// cursor past the lines written after it, nor leave a cursor that an older read put there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_stamped_in_the_future_does_not_carry_the_cursor_past_later_lines() {
    let now = now_ms();
    let exec = "exec-future";
    let (source, client, group) = source_with(
        exec,
        &[
            (now - 1_000, "before".into()),
            (now + 3_600_000, "from the future".into()),
        ],
    )
    .await;
    let first = source.page(exec, None).await.unwrap();
    assert_eq!(first.events.len(), 2);
    let cursor: i64 = first.next_token["t:".len()..].parse().unwrap();
    assert!(cursor <= now_ms(), "cursor {cursor} is ahead of the read");
    // A line written now, stamped now: the next read from the cursor finds it.
    client
        .put_log_events()
        .log_group_name(&group)
        .log_stream_name(StreamNames::default().stream(exec))
        .log_events(
            InputLogEvent::builder()
                .timestamp(now_ms())
                .message("after")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let next = source.page(exec, Some(&first.next_token)).await.unwrap();
    let messages: Vec<&str> = next.events.iter().map(|e| e.message.as_str()).collect();
    assert!(messages.contains(&"after"), "{messages:?}");
    // A cursor an older read left in the future is brought back.
    let old = source
        .page(exec, Some(&format!("t:{}", now + 3_000_000)))
        .await
        .unwrap();
    let back: i64 = old.next_token["t:".len()..].parse().unwrap();
    assert!(back <= now_ms(), "{}", old.next_token);
}
