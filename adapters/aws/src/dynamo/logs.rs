//! [`DynamoStore`]: the log store on DynamoDB. A commit is one `TransactWriteItems`: the head
//! conditioned on its version, each log item conditioned on its index being free, and each
//! event's idempotency item conditioned on not existing.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogWriter, check_read_item};
use runvoy_core::{CommitError, Head, LogEvent, SourceEvent, StoreError};

use super::item::{self, Item, n, s};
use super::{backoff, unix_now_secs};
use crate::describe;

/// Events per transaction: 1 head + 1 run + at most 3 part items + one bucket update per event
/// stays within 100 actions.
const EVENTS_PER_COMMIT: usize = 90;
/// Message bytes per run item: a run of many lines fits one 400 KB item even uncompressed; a
/// single larger event goes alone and continues in part items (1 MB → at most 3 parts).
const BYTES_PER_COMMIT: usize = 256_000;
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
    Run,
    Bucket(String),
}

/// The bucket updates of a commit: bucket key → event ids that go into it.
pub fn buckets_of(execution_id: &str, events: &[(String, i64)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, ts) in events {
        out.entry(item::bucket_key(execution_id, *ts))
            .or_default()
            .push(id.clone());
    }
    out
}

impl DynamoStore {
    /// Event ids held by the given buckets (strongly consistent).
    async fn bucket_ids(&self, keys: Vec<String>) -> Result<HashSet<String>, StoreError> {
        let keys: Vec<Item> = keys.iter().map(|k| Self::key(k, 0)).collect();
        let found = self.batch_get(keys, Some("ids")).await?;
        Ok(found
            .into_iter()
            .filter_map(|mut i| match i.remove("ids") {
                Some(AttributeValue::Ss(ids)) => Some(ids),
                _ => None,
            })
            .flatten()
            .collect())
    }
}

fn bucket_update(
    table: &str,
    key: &str,
    ids: &[String],
    expires_at: i64,
) -> Result<TransactWriteItem, StoreError> {
    let mut u = Update::builder()
        .table_name(table)
        .set_key(Some(DynamoStore::key(key, 0)))
        .update_expression("ADD ids :new SET expires_at = :exp")
        .expression_attribute_values(":new", AttributeValue::Ss(ids.to_vec()))
        .expression_attribute_values(":exp", n(expires_at));
    let mut conditions = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let name = format!(":c{i}");
        conditions.push(format!("NOT contains(ids, {name})"));
        u = u.expression_attribute_values(name, s(id));
    }
    let u = u
        .condition_expression(conditions.join(" AND "))
        .build()
        .map_err(|e| StoreError::Backend(format!("building a transaction Update: {e}")))?;
    Ok(TransactWriteItem::builder().update(u).build())
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
        events: &[SourceEvent],
    ) -> Result<HashSet<String>, StoreError> {
        let pairs: Vec<(String, i64)> = events
            .iter()
            .map(|e| (e.event_id.clone(), e.timestamp))
            .collect();
        let buckets = buckets_of(execution_id, &pairs);
        let held = self.bucket_ids(buckets.keys().cloned().collect()).await?;
        Ok(events
            .iter()
            .filter(|e| held.contains(&e.event_id))
            .map(|e| e.event_id.clone())
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
        let pairs: Vec<(String, i64)> = commit
            .events
            .iter()
            .map(|e| (e.event_id.clone(), e.timestamp))
            .collect();
        if !commit.events.is_empty() {
            let run = item::encode_run(exec, &commit.events, head.expires_at);
            actions.push(put(
                &self.table,
                run.item,
                "attribute_not_exists(log_index)",
                None,
            )?);
            kinds.push(Action::Run);
            for p in run.parts {
                actions.push(put(
                    &self.table,
                    p,
                    "attribute_not_exists(log_index)",
                    None,
                )?);
                kinds.push(Action::Run);
            }
            for (key, ids) in buckets_of(exec, &pairs) {
                actions.push(bucket_update(&self.table, &key, &ids, head.expires_at)?);
                kinds.push(Action::Bucket(key));
            }
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                c.cancellation_reasons().to_vec()
            }
            _ => return Err(CommitError::Store(map_sdk(&err, "TransactWriteItems"))),
        };
        match cancelled(&kinds, &reasons) {
            Cancelled::Buckets(keys) => {
                // Which of our ids are already there: read the buckets that refused.
                let held = self.bucket_ids(keys).await?;
                let dups: Vec<String> = pairs
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| held.contains(id))
                    .collect();
                Err(if dups.is_empty() {
                    CommitError::VersionConflict
                } else {
                    CommitError::Duplicate(dups)
                })
            }
            Cancelled::Error(e) => Err(e),
        }
    }
}

enum Cancelled {
    /// Idempotency buckets refused: some events are committed already.
    Buckets(Vec<String>),
    Error(CommitError),
}

/// Turns a cancelled transaction's reasons into what the engine should do next.
fn cancelled(
    kinds: &[Action],
    reasons: &[aws_sdk_dynamodb::types::CancellationReason],
) -> Cancelled {
    let mut buckets = Vec::new();
    let mut conflict = false;
    let mut throttled = false;
    for (kind, reason) in kinds.iter().zip(reasons) {
        match (reason.code(), kind) {
            (Some("ConditionalCheckFailed"), Action::Bucket(key)) => buckets.push(key.clone()),
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
    if !buckets.is_empty() {
        Cancelled::Buckets(buckets)
    } else if throttled {
        Cancelled::Error(CommitError::Store(StoreError::Throttled))
    } else if conflict || reasons.is_empty() {
        Cancelled::Error(CommitError::VersionConflict)
    } else {
        let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).collect();
        Cancelled::Error(CommitError::Store(StoreError::Backend(format!(
            "DynamoDB cancelled the transaction: {codes:?}"
        ))))
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
        // The run holding `after + 1` starts at or before it: the last run key ≤ after + 1.
        let found = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("execution_id = :e AND log_index BETWEEN :one AND :a")
            .expression_attribute_values(":e", s(execution_id))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":a", n(after + 1))
            .scan_index_forward(false)
            .limit(1)
            .projection_expression("log_index")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(&e, "Query"))?;
        let first = found.items.unwrap_or_default();
        let Some(start_key) = first
            .first()
            .map(|i| item::get_n::<u64>(i, "log_index"))
            .transpose()?
        else {
            // Nothing at or before `after + 1`: no lines here (the reader judges whether the
            // head promised some).
            return Ok(Vec::new());
        };
        let now = unix_now_secs();
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // Strongly consistent: an eventually consistent read could miss a committed run
            // and make the range look expired.
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("execution_id = :e AND log_index BETWEEN :a AND :b")
                .expression_attribute_values(":e", s(execution_id))
                .expression_attribute_values(":a", n(start_key))
                .expression_attribute_values(":b", n(through))
                .consistent_read(true)
                .limit(100)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| map_sdk(&e, "Query"))?;
            for it in resp.items.unwrap_or_default() {
                let expires_at: i64 = item::get_n(&it, "expires_at")?;
                let extra = item::extra_parts(&it);
                let parts = if extra > 0 {
                    let first: u64 = item::get_n(&it, "log_index")?;
                    self.read_parts(execution_id, first, extra).await?
                } else {
                    Vec::new()
                };
                for e in item::decode_run(&it, &parts)? {
                    if e.index <= after || e.index > through {
                        continue;
                    }
                    check_read_item(execution_id, after, out.len(), e.index, expires_at, now)?;
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            start = resp.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}
