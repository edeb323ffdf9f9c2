//! [`DynamoStore`]: the log store on DynamoDB. A commit is one `TransactWriteItems`: the head
//! conditioned on its version, each log item conditioned on its index being free, and each
//! event's idempotency item conditioned on not existing.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem};
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogWriter};
use runvoy_core::{CommitError, Head, LogEvent, StoreError};

use super::item::{self, Item, n, s};
use super::{backoff, unix_now_secs};
use crate::describe;

/// Events per transaction: 1 head + 2 per event + part items must stay within 100 actions.
const EVENTS_PER_COMMIT: usize = 40;
/// Message bytes per transaction (4 MB limit, with room for keys and attributes). Together with
/// [`item::PART_BYTES`] this bounds the part items to 9, so a commit never exceeds 90 actions.
const BYTES_PER_COMMIT: usize = 3_000_000;
/// Keys per `BatchGetItem`.
const BATCH_GET: usize = 100;
/// Attempts at unprocessed keys before reporting throttling.
const BATCH_ATTEMPTS: u32 = 8;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(pk: &str, sk: u64) -> Item {
        HashMap::from([
            ("execution_id".to_string(), s(pk)),
            ("log_index".to_string(), n(sk)),
        ])
    }

    /// Reads keys with `BatchGetItem`, strongly consistent, retrying unprocessed keys.
    async fn batch_get(
        &self,
        keys: Vec<Item>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(BATCH_GET) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                let mut ka = KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .consistent_read(true);
                if let Some(p) = projection {
                    ka = ka.projection_expression(p);
                }
                let ka = ka
                    .build()
                    .map_err(|e| StoreError::Backend(format!("building BatchGetItem: {e}")))?;
                let resp = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send()
                    .await
                    .map_err(|e| map_sdk(&e, "BatchGetItem"))?;
                if let Some(mut r) = resp.responses {
                    out.extend(r.remove(&self.table).unwrap_or_default());
                }
                pending = resp
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|ka| ka.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt >= BATCH_ATTEMPTS {
                        return Err(StoreError::Throttled);
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(out)
    }

    async fn read_parts(
        &self,
        execution_id: &str,
        index: u64,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("execution_id = :p")
            .expression_attribute_values(":p", s(item::part_key(execution_id, index)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(&e, "Query"))?;
        let parts: Vec<Vec<u8>> = resp
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| match i.get("data") {
                Some(AttributeValue::B(b)) => Some(b.as_ref().to_vec()),
                _ => None,
            })
            .collect();
        if parts.len() != count {
            return Err(StoreError::Expired(execution_id.to_string()));
        }
        Ok(parts)
    }
}

/// Maps an SDK error: throttling is retryable, anything else names the operation.
pub(crate) fn map_sdk<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>, op: &str) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    match e.code() {
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException",
        ) => StoreError::Throttled,
        _ => StoreError::Backend(format!("DynamoDB {op} failed: {}", describe(e))),
    }
}

#[async_trait]
impl HeadReader for DynamoStore {
    async fn head(&self, execution_id: &str) -> Result<Option<Head>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(execution_id, 0)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(&e, "GetItem"))?;
        resp.item.as_ref().map(item::head_from_item).transpose()
    }
}

fn put(
    table: &str,
    item: Item,
    condition: &str,
    values: Option<(&str, AttributeValue)>,
) -> Result<TransactWriteItem, StoreError> {
    let mut p = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition);
    if let Some((k, v)) = values {
        p = p.expression_attribute_values(k, v);
    }
    let p = p
        .build()
        .map_err(|e| StoreError::Backend(format!("building a transaction Put: {e}")))?;
    Ok(TransactWriteItem::builder().put(p).build())
}

/// What each transaction action was, to read the cancellation reasons.
enum Action {
    Head,
    Log,
    Idempotency(String),
    Part,
}

#[async_trait]
impl LogWriter for DynamoStore {
    fn max_events_per_commit(&self) -> usize {
        EVENTS_PER_COMMIT
    }

    fn max_commit_bytes(&self) -> usize {
        BYTES_PER_COMMIT
    }

    async fn known_event_ids(
        &self,
        execution_id: &str,
        event_ids: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let unique: HashSet<&String> = event_ids.iter().collect();
        let keys: Vec<Item> = unique
            .iter()
            .map(|id| Self::key(&item::event_key(execution_id, id), 0))
            .collect();
        let prefix = format!("{execution_id}#event#");
        let found = self.batch_get(keys, Some("execution_id")).await?;
        Ok(found
            .iter()
            .filter_map(|i| item::get_s(i, "execution_id").ok())
            .filter_map(|pk| pk.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let head = &commit.head;
        let exec = head.execution_id.as_str();
        let mut actions = Vec::new();
        let mut kinds = Vec::new();
        let head_put = match commit.expected_version {
            None => put(
                &self.table,
                item::head_to_item(head),
                "attribute_not_exists(execution_id)",
                None,
            )?,
            Some(v) => put(
                &self.table,
                item::head_to_item(head),
                "version = :v",
                Some((":v", n(v))),
            )?,
        };
        actions.push(head_put);
        kinds.push(Action::Head);
        for e in &commit.events {
            let enc = item::encode_event(exec, e, head.expires_at);
            actions.push(put(
                &self.table,
                enc.item,
                "attribute_not_exists(log_index)",
                None,
            )?);
            kinds.push(Action::Log);
            let idem = item::idempotency_item(exec, &e.event_id, e.index, head.expires_at);
            actions.push(put(
                &self.table,
                idem,
                "attribute_not_exists(execution_id)",
                None,
            )?);
            kinds.push(Action::Idempotency(e.event_id.clone()));
            for p in enc.parts {
                actions.push(put(
                    &self.table,
                    p,
                    "attribute_not_exists(log_index)",
                    None,
                )?);
                kinds.push(Action::Part);
            }
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    cancelled(&kinds, c.cancellation_reasons())
                }
                _ => CommitError::Store(map_sdk(&e, "TransactWriteItems")),
            }),
        }
    }
}

/// Turns a cancelled transaction's reasons into what the engine should do next.
fn cancelled(
    kinds: &[Action],
    reasons: &[aws_sdk_dynamodb::types::CancellationReason],
) -> CommitError {
    let mut duplicates = Vec::new();
    let mut conflict = false;
    let mut throttled = false;
    for (kind, reason) in kinds.iter().zip(reasons) {
        match (reason.code(), kind) {
            (Some("ConditionalCheckFailed"), Action::Idempotency(id)) => {
                duplicates.push(id.clone())
            }
            (Some("ConditionalCheckFailed"), _) | (Some("TransactionConflict"), _) => {
                conflict = true
            }
            (
                Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"),
                _,
            ) => throttled = true,
            _ => {}
        }
    }
    if !duplicates.is_empty() {
        CommitError::Duplicate(duplicates)
    } else if throttled {
        CommitError::Store(StoreError::Throttled)
    } else if conflict || reasons.is_empty() {
        CommitError::VersionConflict
    } else {
        let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).collect();
        CommitError::Store(StoreError::Backend(format!(
            "DynamoDB cancelled the transaction: {codes:?}"
        )))
    }
}

#[async_trait]
impl LogReader for DynamoStore {
    async fn read_range(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        if after >= through || limit == 0 {
            return Ok(Vec::new());
        }
        let now = unix_now_secs();
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // Strongly consistent: an eventually consistent read could miss a committed item
            // and make the range look expired.
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("execution_id = :e AND log_index BETWEEN :a AND :b")
                .expression_attribute_values(":e", s(execution_id))
                .expression_attribute_values(":a", n(after + 1))
                .expression_attribute_values(":b", n(through))
                .consistent_read(true)
                .limit((limit - out.len()).min(1_000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| map_sdk(&e, "Query"))?;
            for it in resp.items.unwrap_or_default() {
                let expires_at: i64 = item::get_n(&it, "expires_at")?;
                let extra = item::extra_parts(&it);
                let parts = if extra > 0 {
                    let index: u64 = item::get_n(&it, "log_index")?;
                    self.read_parts(execution_id, index, extra).await?
                } else {
                    Vec::new()
                };
                let e = item::decode_event(&it, &parts)?;
                if expires_at <= now || e.index != after + 1 + out.len() as u64 {
                    return Err(StoreError::Expired(execution_id.to_string()));
                }
                out.push(e);
            }
            start = resp.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() || out.len() >= limit {
                return Ok(out);
            }
        }
    }
}
