//! Error shapes moto cannot produce, stubbed at the SDK boundary: throttling, cancelled
//! transactions and their reasons, unprocessed keys, and 410 Gone.

use std::sync::Arc;

use aws_sdk_apigatewaymanagement::operation::post_to_connection::{
    PostToConnectionError, PostToConnectionOutput,
};
use aws_sdk_apigatewaymanagement::types::error::GoneException;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::error::{
    ProvisionedThroughputExceededException, ResourceNotFoundException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
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

/// The head as the store finds it before committing: version 1, lines up to `e1`.
fn stored_head() -> GetItemOutput {
    let mut h = head_at("ex", 1, 1);
    h.last_timestamp = 1_700_000_000_002;
    GetItemOutput::builder()
        .set_item(Some(runvoy_aws::dynamo::item::head_to_item(&h)))
        .build()
}

/// An idempotency record holding `ids`, as Query returns it.
fn record(ids: &str) -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([
        (
            "execution_id".to_string(),
            AttributeValue::S("ex#ids#1700000000".into()),
        ),
        ("log_index".to_string(), AttributeValue::N("1".into())),
        ("ids".to_string(), AttributeValue::S(ids.into())),
    ])
}

async fn commit_with(
    records: &'static str,
    error: impl Fn() -> TransactWriteItemsError + Send + Sync + 'static,
) -> (Result<(), CommitError>, usize) {
    let get = mock!(Client::get_item)
        .sequence()
        .output(stored_head)
        .repeatedly()
        .build();
    let query = mock!(Client::query)
        .sequence()
        .output(move || {
            QueryOutput::builder()
                .set_items(Some(if records.is_empty() {
                    vec![]
                } else {
                    vec![record(records)]
                }))
                .build()
        })
        .repeatedly()
        .build();
    let write = mock!(Client::transact_write_items).then_error(error);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &query, &write]);
    let r = DynamoStore::new(client, "t").commit(commit()).await;
    (r, write.num_calls())
}

#[tokio::test]
async fn cancellation_reasons_map_to_what_the_engine_does_next() {
    let (head, _) = commit_with("", || {
        cancelled(vec![
            Some("ConditionalCheckFailed"),
            Some("None"),
            Some("None"),
        ])
    })
    .await;
    assert_eq!(head, Err(CommitError::VersionConflict));
    let (conflict, _) = commit_with("", || {
        cancelled(vec![Some("TransactionConflict"), None, None])
    })
    .await;
    assert_eq!(conflict, Err(CommitError::VersionConflict));
    let (throttled, _) = commit_with("", || {
        cancelled(vec![Some("None"), Some("ThrottlingError"), None])
    })
    .await;
    assert_eq!(throttled, Err(CommitError::Store(StoreError::Throttled)));
    let (pte, _) = commit_with("", || {
        TransactWriteItemsError::ProvisionedThroughputExceededException(throughput_exceeded())
    })
    .await;
    assert_eq!(pte, Err(CommitError::Store(StoreError::Throttled)));
}

#[tokio::test]
async fn another_failure_keeps_the_sdk_error_and_says_what_the_service_answered() {
    let (r, _) = commit_with("", || {
        TransactWriteItemsError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("Requested resource not found")
                .meta(
                    ErrorMetadata::builder()
                        .code("ResourceNotFoundException")
                        .message("Requested resource not found")
                        .build(),
                )
                .build(),
        )
    })
    .await;
    let Err(CommitError::Store(e @ StoreError::Backend { .. })) = r else {
        panic!("expected a backend failure, got {r:?}")
    };
    assert!(e.is_retryable(), "an unknown failure of the store may pass");
    let text = e.to_string();
    assert!(
        text.starts_with("DynamoDB TransactWriteItems failed: ")
            && text.contains("ResourceNotFoundException")
            && text.contains("Requested resource not found"),
        "{text}"
    );
    let sdk = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<SdkError<TransactWriteItemsError, HttpResponse>>())
        .expect("the SDK's error is the source");
    assert!(
        sdk.as_service_error()
            .is_some_and(TransactWriteItemsError::is_resource_not_found_exception)
    );
}

#[tokio::test]
async fn ids_in_the_records_are_refused_as_duplicates_without_a_transaction() {
    // The records hold e2 (in this commit) and another id: only e2 is named.
    let (dup, writes) = commit_with("other\ne2", || cancelled(vec![])).await;
    assert_eq!(dup, Err(CommitError::Duplicate(vec!["e2".into()])));
    assert_eq!(writes, 0, "a doomed transaction is never sent");
}

fn ev(id: &str) -> SourceEvent {
    SourceEvent {
        event_id: id.into(),
        timestamp: 1_700_000_000_001,
        message: String::new(),
    }
}

#[tokio::test]
async fn record_queries_follow_every_page() {
    let get = mock!(Client::get_item)
        .sequence()
        .output(stored_head)
        .repeatedly()
        .build();
    let pages = mock!(Client::query)
        .sequence()
        .output(|| {
            QueryOutput::builder()
                .items(record("a"))
                .last_evaluated_key(
                    "execution_id",
                    AttributeValue::S("ex#ids#1700000000".into()),
                )
                .last_evaluated_key("log_index", AttributeValue::N("1".into()))
                .build()
        })
        .output(|| QueryOutput::builder().items(record("b")).build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &pages]);
    let known = DynamoStore::new(client, "t")
        .known_event_ids("ex", &[ev("a"), ev("b"), ev("c")])
        .await
        .unwrap();
    assert_eq!(
        known,
        ["a".to_string(), "b".to_string()].into_iter().collect()
    );
    assert_eq!(pages.num_calls(), 2);
}

#[tokio::test]
async fn a_throttled_commit_is_retried_by_the_engine_and_counted() {
    let get = mock!(Client::get_item)
        .sequence()
        .output(|| GetItemOutput::builder().build())
        .repeatedly()
        .build();
    let batch = mock!(Client::query)
        .sequence()
        .output(|| QueryOutput::builder().build())
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
