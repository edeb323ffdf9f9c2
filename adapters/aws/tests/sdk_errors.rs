//! Error shapes moto cannot produce, stubbed at the SDK boundary: throttling, cancelled
//! transactions and their reasons, unprocessed keys, and 410 Gone.

use std::sync::Arc;

use aws_sdk_apigatewaymanagement::operation::post_to_connection::{
    PostToConnectionError, PostToConnectionOutput,
};
use aws_sdk_apigatewaymanagement::types::error::GoneException;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::error::{
    ProvisionedThroughputExceededException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, KeysAndAttributes};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use runvoy_aws::{ApiGatewayPusher, DynamoStore};
use runvoy_core::memory::{MemoryMetrics, SimClock};
use runvoy_core::ports::{Commit, LogWriter, Metric, PushError, Pusher};
use runvoy_core::services::{Appender, EngineConfig};
use runvoy_core::testkit::{events, head_at};
use runvoy_core::{CommitError, SourceEvent, StoreError};

/// Errors as AWS sends them: with their code in the error metadata.
fn throughput_exceeded() -> ProvisionedThroughputExceededException {
    ProvisionedThroughputExceededException::builder()
        .meta(
            ErrorMetadata::builder()
                .code("ProvisionedThroughputExceededException")
                .build(),
        )
        .build()
}

fn commit() -> Commit {
    Commit {
        expected_version: Some(1),
        head: head_at("ex", 2, 2),
        events: events(1, 2, 10),
    }
}

fn reason(code: Option<&str>) -> CancellationReason {
    CancellationReason::builder()
        .set_code(code.map(str::to_string))
        .build()
}

fn cancelled(codes: Vec<Option<&'static str>>) -> TransactWriteItemsError {
    TransactWriteItemsError::TransactionCanceledException(
        TransactionCanceledException::builder()
            .set_cancellation_reasons(Some(codes.into_iter().map(reason).collect()))
            .build(),
    )
}

async fn commit_with(
    error: impl Fn() -> TransactWriteItemsError + Send + Sync + 'static,
) -> Result<(), CommitError> {
    let rule = mock!(Client::transact_write_items).then_error(error);
    // The refused idempotency bucket already holds e2.
    let bucket = mock!(Client::batch_get_item)
        .sequence()
        .output(|| {
            BatchGetItemOutput::builder()
                .responses(
                    "t",
                    vec![std::collections::HashMap::from([(
                        "ids".to_string(),
                        AttributeValue::Ss(vec!["e2".into(), "other".into()]),
                    )])],
                )
                .build()
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule, &bucket]);
    DynamoStore::new(client, "t").commit(commit()).await
}

#[tokio::test]
async fn cancellation_reasons_map_to_what_the_engine_does_next() {
    // Actions: head, run (events 1 and 2), the one idempotency bucket both fall into.
    let dup = commit_with(|| {
        cancelled(vec![
            Some("None"),
            Some("None"),
            Some("ConditionalCheckFailed"),
        ])
    })
    .await;
    assert_eq!(
        dup,
        Err(CommitError::Duplicate(vec!["e2".into()])),
        "only ids the bucket really holds"
    );
    let head = commit_with(|| {
        cancelled(vec![
            Some("ConditionalCheckFailed"),
            Some("None"),
            Some("None"),
        ])
    })
    .await;
    assert_eq!(head, Err(CommitError::VersionConflict));
    let conflict = commit_with(|| cancelled(vec![Some("TransactionConflict"), None, None])).await;
    assert_eq!(conflict, Err(CommitError::VersionConflict));
    let throttled =
        commit_with(|| cancelled(vec![Some("None"), Some("ThrottlingError"), None])).await;
    assert_eq!(throttled, Err(CommitError::Store(StoreError::Throttled)));
    let pte = commit_with(|| {
        TransactWriteItemsError::ProvisionedThroughputExceededException(throughput_exceeded())
    })
    .await;
    assert_eq!(pte, Err(CommitError::Store(StoreError::Throttled)));
}

fn ev(id: &str) -> SourceEvent {
    SourceEvent {
        event_id: id.into(),
        timestamp: 1_000,
        message: String::new(),
    }
}

/// A bucket item as BatchGetItem returns it (projected to its ids).
fn key_for(id: &str) -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([("ids".to_string(), AttributeValue::Ss(vec![id.to_string()]))])
}

/// The key of the bucket the test events fall into.
fn bucket() -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([
        (
            "execution_id".to_string(),
            AttributeValue::S("ex#ids#10".into()),
        ),
        ("log_index".to_string(), AttributeValue::N("0".into())),
    ])
}

#[tokio::test]
async fn unprocessed_keys_are_retried_until_answered() {
    let rule = mock!(Client::batch_get_item)
        .sequence()
        .output(|| {
            BatchGetItemOutput::builder()
                .responses("t", vec![key_for("a")])
                .unprocessed_keys(
                    "t",
                    KeysAndAttributes::builder().keys(bucket()).build().unwrap(),
                )
                .build()
        })
        .output(|| {
            BatchGetItemOutput::builder()
                .responses("t", vec![key_for("b")])
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, [&rule]);
    let known = DynamoStore::new(client, "t")
        .known_event_ids("ex", &[ev("a"), ev("b"), ev("c")])
        .await
        .unwrap();
    assert_eq!(
        known,
        ["a".to_string(), "b".to_string()].into_iter().collect()
    );
    assert_eq!(rule.num_calls(), 2);

    let forever = mock!(Client::batch_get_item)
        .sequence()
        .output(|| {
            BatchGetItemOutput::builder()
                .unprocessed_keys(
                    "t",
                    KeysAndAttributes::builder().keys(bucket()).build().unwrap(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_dynamodb, [&forever]);
    let r = DynamoStore::new(client, "t")
        .known_event_ids("ex", &[ev("a")])
        .await;
    assert_eq!(
        r,
        Err(StoreError::Throttled),
        "never-processed keys end as throttling, not as 'unknown'"
    );
}

#[tokio::test]
async fn a_throttled_commit_is_retried_by_the_engine_and_counted() {
    let get = mock!(Client::get_item)
        .sequence()
        .output(|| GetItemOutput::builder().build())
        .repeatedly()
        .build();
    let batch = mock!(Client::batch_get_item)
        .sequence()
        .output(|| BatchGetItemOutput::builder().build())
        .repeatedly()
        .build();
    let write = mock!(Client::transact_write_items)
        .sequence()
        .error(|| {
            TransactWriteItemsError::ProvisionedThroughputExceededException(throughput_exceeded())
        })
        // The SDK retries throttling itself (3 attempts); past that the engine backs off.
        .times(3)
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &batch, &write]);
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        Arc::new(DynamoStore::new(client, "t")),
        Arc::new(SimClock::new(0, 1)),
        metrics.clone(),
        EngineConfig::default(),
    );
    let out = appender
        .append(
            "ex",
            vec![SourceEvent {
                event_id: "a".into(),
                timestamp: 1,
                message: "m".into(),
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.committed.len(), 1);
    assert_eq!(write.num_calls(), 4);
    assert_eq!(metrics.get(Metric::Throttles), 1);
}

#[tokio::test]
async fn gone_connections_are_reported_as_gone() {
    let gone = mock!(aws_sdk_apigatewaymanagement::Client::post_to_connection)
        .match_requests(|r| r.connection_id() == Some("closed"))
        .then_error(|| PostToConnectionError::GoneException(GoneException::builder().build()));
    let ok = mock!(aws_sdk_apigatewaymanagement::Client::post_to_connection)
        .then_output(|| PostToConnectionOutput::builder().build());
    let client = mock_client!(
        aws_sdk_apigatewaymanagement,
        RuleMode::MatchAny,
        [&gone, &ok]
    );
    let pusher = ApiGatewayPusher::new(client);
    assert_eq!(pusher.push("closed", "{}").await, Err(PushError::Gone));
    assert_eq!(pusher.push("open", "{}").await, Ok(()));
}
