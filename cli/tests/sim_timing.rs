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

/// One SQS call to the sim's moto (JSON protocol).
async fn sqs(s: &Stack, op: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(s.moto_endpoint())
        .header("x-amz-target", format!("AmazonSQS.{op}"))
        .header("content-type", "application/x-amz-json-1.0")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{op}: {}", r.status());
    r.json().await.unwrap()
}

/// What Lambda puts in an on-failure queue once every attempt at `event` failed.
fn on_failure_record(function: &str, event: Value) -> String {
    serde_json::json!({
        "version": "1.0",
        "timestamp": "2026-12-07T12:00:00.000Z",
        "requestContext": {
            "requestId": "0",
            "functionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{function}:$LATEST"),
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "retryable failure: throttled"}
    })
    .to_string()
}

/// A completion whose every attempt failed, and a forwarder batch likewise, sit in their
/// on-failure queues: the janitor (the schedule, fired now) completes the execution — its
/// follower exits with the task's code — commits the batch's lines, and empties both queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_finishes_what_lambda_gave_up_on() {
    use base64::Engine;
    use std::io::Write;
    let s = Stack::start(Kind::Sim, "janitor", Some("drop=1")).await;
    s.put_lines("stuck-1", &common::numbered("stuck", 1, 50))
        .await;
    let follower = tokio::spawn(output(s.runvoy(&["logs", "stuck-1"])));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let queue = |name: &str| format!("{}-{name}", s.sim_stack());
    let url = |v: Value| v["QueueUrl"].as_str().unwrap().to_string();
    let completion_q = url(sqs(
        &s,
        "GetQueueUrl",
        serde_json::json!({"QueueName": queue("completion-failures")}),
    )
    .await);
    let forwarder_q = url(sqs(
        &s,
        "GetQueueUrl",
        serde_json::json!({"QueueName": queue("forwarder-failures")}),
    )
    .await);
    let task = format!(
        "arn:aws:ecs:us-east-1:123456789012:task/{}/stuck-1",
        s.sim_stack()
    );
    let stopped = serde_json::json!({
        "version": "0", "id": "1", "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": "123456789012", "time": "2026-12-07T12:00:00Z", "region": "us-east-1",
        "resources": [task],
        "detail": {"taskArn": task, "lastStatus": "STOPPED", "stoppedAt": "2026-12-07T12:00:00.000Z",
                   "containers": [{"name": "runner", "exitCode": 3}]}
    });
    sqs(&s, "SendMessage", serde_json::json!({"QueueUrl": completion_q, "MessageBody": on_failure_record("completion", stopped)})).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let doc = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": format!("/aws/ecs/{}/runner", s.sim_stack()),
        "logStream": "task/runner/stuck-2", "subscriptionFilters": ["f"],
        "logEvents": (1..=30).map(|i| serde_json::json!({
            "id": format!("{:056}", i), "timestamp": now, "message": format!("batch {i}")
        })).collect::<Vec<_>>(),
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(doc.to_string().as_bytes()).unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let batch = serde_json::json!({"awslogs": {"data": data}});
    sqs(&s, "SendMessage", serde_json::json!({"QueueUrl": forwarder_q, "MessageBody": on_failure_record("forwarder", batch)})).await;

    let fired: Value = s
        .post(
            "/local/v1/sim/schedule",
            &serde_json::json!({ "rule": "JanitorSchedule" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fired["fired"], serde_json::json!(["JanitorSchedule"]));

    let out = tokio::time::timeout(std::time::Duration::from_secs(120), follower)
        .await
        .expect("the follower exits once the janitor completed the execution")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_lines(&out), common::numbered("stuck", 1, 50));

    // The janitor handles the forwarder's queue after the completion's.
    let mut batch_lines = Vec::new();
    for _ in 0..60 {
        batch_lines = stdout_lines(&output(s.runvoy(&["logs", "stuck-2", "--no-follow"])).await);
        if !batch_lines.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(batch_lines, common::numbered("batch", 1, 30));
    for q in [&completion_q, &forwarder_q] {
        let left = sqs(
            &s,
            "ReceiveMessage",
            serde_json::json!({"QueueUrl": q, "MaxNumberOfMessages": 10}),
        )
        .await;
        assert!(
            left["Messages"].as_array().is_none_or(Vec::is_empty),
            "{q}: {left}"
        );
    }
    let stats = s.sim_stats().await;
    let denied = &stats["gate"]["denied"];
    assert_eq!(
        denied,
        &serde_json::json!([]),
        "the janitor's grants suffice"
    );
}

/// AWS keeps its state when a client restarts. A sim stopped and started again in the same
/// state directory carries on with the moto it left running: a follower that straddles the
/// restart prints all 20,000 lines, not the first half followed by a new world's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sim_carries_on_with_the_aws_it_left() {
    let mut s = Stack::start_own_moto("restart-state").await;
    let moto = s.moto_endpoint().to_string();
    s.put_lines("keep-1", &common::numbered("line", 1, 10_000))
        .await;
    let follower = tokio::spawn(output(s.runvoy(&["logs", "keep-1"])));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    s.stop().await;
    s.restart().await;
    assert_eq!(s.moto_endpoint(), moto, "the same moto");
    s.put_lines("keep-1", &common::numbered("line", 10_001, 20_000))
        .await;
    s.complete("keep-1", "SUCCEEDED", Some(0)).await;
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), follower)
        .await
        .expect("the follower ends")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_lines(&out), common::numbered("line", 1, 20_000));
}
