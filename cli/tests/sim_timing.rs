//! The CLI on the sim playing AWS's timing (`--chaos ingest-lag-ms, txn-skew-ms, throttle-wcu,
//! lambda-dup, sdk-retry`): lines readable seconds after they were written while the task's
//! stop is known at once, transactions seen in parts, a partition at its write ceiling, events
//! handled twice at once, successes answered 500. Every line printed once, in order, and the
//! execution's exit code. Each test checks that the timing it names was really played.

mod common;

use common::{Kind, Stack, output, stdout_lines};
use serde_json::Value;

/// How many asynchronous events of any function ended in its on-failure queue.
fn exhausted(stats: &Value) -> u64 {
    stats["functions"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["async_exhausted"].as_u64().unwrap_or(0))
        .sum()
}

/// `runvoy run -- sh -c 'echo first; echo last'` when lines become readable 3 s after they
/// were written and the STOPPED event is not delayed: both lines and exit 0, twenty times
/// (run at once, as twenty tasks would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_lines_of_a_short_task_survive_a_3s_ingestion_lag() {
    let s = Stack::start(Kind::Sim, "lag", Some("ingest-lag-ms=3000")).await;
    let runs: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(output(s.runvoy(&[
                "run",
                "--",
                "sh",
                "-c",
                "echo first; echo last",
            ])))
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.await.unwrap();
        assert_eq!(
            (out.status.code(), stdout_lines(&out)),
            (Some(0), vec!["first".to_string(), "last".to_string()]),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(exhausted(&s.sim_stats().await), 0);
}

/// 200,000 lines through every timing key at once, with duplicated deliveries: exactly
/// 1..=200000 in order, exit 0, nothing in the on-failure queues. With reordered and dropped
/// deliveries as well: every number exactly once, exit 0.
async fn two_hundred_thousand_lines(chaos: &str, in_order: bool) {
    let s = Stack::start(Kind::Sim, "timing-volume", Some(chaos)).await;
    let out = output(s.runvoy(&["run", "--", "sh", "-c", "seq 1 200000"])).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 200_000, "{err}");
    let numbers: Vec<u32> = lines.iter().map(|l| l.parse().unwrap()).collect();
    if in_order {
        assert!(
            numbers.iter().enumerate().all(|(i, n)| *n == i as u32 + 1),
            "1..=200000 in order"
        );
    } else {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert!(
            sorted.iter().enumerate().all(|(i, n)| *n == i as u32 + 1),
            "every number exactly once"
        );
    }
    let stats = s.sim_stats().await;
    eprintln!(
        "{chaos}: timing {}, duplicates dropped {}, reconciled {}",
        stats["dynamodb_timing"],
        s.counter("duplicates_dropped"),
        s.counter("events_reconciled")
    );
    assert_eq!(exhausted(&stats), 0, "{stats:#}");
    let t = &stats["dynamodb_timing"];
    assert!(
        t["items_skewed"].as_u64() > Some(0) && t["successes_answered_500"].as_u64() > Some(0),
        "the timing was played: {t}"
    );
}

const EVERY_KEY: &str =
    "dup=0.3,ingest-lag-ms=2000,txn-skew-ms=50,throttle-wcu=1000,lambda-dup=0.2,sdk-retry=0.05";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_lines_under_every_timing_key_print_in_order() {
    two_hundred_thousand_lines(EVERY_KEY, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_lines_reordered_and_dropped_print_once_each() {
    two_hundred_thousand_lines(&format!("{EVERY_KEY},reorder=0.3,drop=0.05"), false).await;
}
