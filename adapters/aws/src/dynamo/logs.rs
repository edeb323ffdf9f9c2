//! [`DynamoStore`]: the log store on DynamoDB. A commit is one `TransactWriteItems` of `Put`s:
//! the head conditioned on its version, the run of lines keyed by its first index, and the
//! commit's immutable idempotency records (one per minute of event timestamps).
//!
//! Exactly-once without a per-id condition: the head's version serialises every commit of an
//! execution, so ids checked against the records read *after* the head at version `v`
//! (strongly consistent) are as safe as a condition in the transaction conditioned on `v` —
//! any commit in between changes the version and cancels this one — provided every record of
//! every commit up to `v` is visible. A transaction is serializable, but a read of another
//! partition key is read-committed per item: the head (and the run, under the same key) can be
//! visible before the commit's records are. So the head names the records of the last commit
//! that had events ([`item::Named`]), and a commit with events first reads them (strongly
//! consistent `GetItem`s); a missing one is a conflict, retried. By induction every record of
//! every commit up to a verified head is visible: the commit that wrote that head verified its
//! predecessor's. A head-only commit looks nothing up and passes the names on unchanged.
//! Ids newer than the head's `last_timestamp` cannot be committed yet and are not looked up.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogWriter, check_read_item, fits_in_read};
use runvoy_core::{CommitError, Head, LogEvent, SourceEvent, StoreError};

use super::item::{self, Item, Named, n, s};
use super::unix_now_secs;

/// Events per commit: their ids (about 50 bytes each) make one idempotency record far below
/// 400 KB, and the run with ids and timestamps stays within one item before compression.
const EVENTS_PER_COMMIT: usize = 2_000;
/// Message bytes per run item; a single larger event goes alone and continues in part items
/// (1 MB → at most 3 parts).
const BYTES_PER_COMMIT: usize = 200_000;
/// Minutes of timestamps per commit: 1 head + 1 run + at most 3 parts + one idempotency record
/// per minute stays within 100 actions.
const SPANS_PER_COMMIT: usize = 90;

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

    async fn read_parts(
        &self,
        execution_id: &str,
        index: u64,
        count: usize,
        expires_at: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        // Parts live under another partition key than their run: right after the commit they
        // may not be visible yet (read-committed per item). Only an expired run's missing parts
        // mean the lines are gone.
        for wait in VISIBILITY_WAITS_MS {
            let parts = self.query_parts(execution_id, index).await?;
            if parts.len() == count {
                return Ok(parts);
            }
            if expires_at <= unix_now_secs() {
                return Err(StoreError::Expired(execution_id.to_string()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        Err(StoreError::backend_message(format!(
            "the parts of a large line of execution {execution_id} at index {index} are not visible yet; try again"
        )))
    }

    async fn query_parts(
        &self,
        execution_id: &str,
        index: u64,
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
            .map_err(|e| map_sdk(e, "Query"))?;
        let parts: Vec<Vec<u8>> = resp
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| match i.get("data") {
                Some(AttributeValue::B(b)) => Some(b.as_ref().to_vec()),
                _ => None,
            })
            .collect();
        Ok(parts)
    }

    /// The head and the records it names, strongly consistent.
    async fn head_item(&self, execution_id: &str) -> Result<Option<(Head, Named)>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(execution_id, 0)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(e, "GetItem"))?;
        resp.item
            .as_ref()
            .map(|i| Ok((item::head_from_item(i)?, Named::read(i)?)))
            .transpose()
    }

    /// Whether every record `named` is visible: strongly consistent `GetItem`s, waiting a
    /// little for one that is not (another partition key than the head's becomes visible on
    /// its own). Still missing: a conflict, which the engine retries from a fresh head.
    /// Records past their expiry may be gone (TTL); they hold only ids of lines older than
    /// the retention, which are never committed again.
    async fn verify(&self, execution_id: &str, named: &Named) -> Result<(), CommitError> {
        if named.expires_at <= unix_now_secs() {
            return Ok(());
        }
        let mut missing: Vec<(i64, u64)> = named.keys.clone();
        for wait in VISIBILITY_WAITS_MS {
            let mut still = Vec::new();
            for (span, sort) in missing {
                let got = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&item::ids_key(execution_id, span), sort)))
                    .projection_expression("log_index")
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| map_sdk(e, "GetItem"))?;
                if got.item.is_none() {
                    still.push((span, sort));
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            missing = still;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        Err(CommitError::VersionConflict)
    }
}

/// Waits between reads of items that another partition's commit has not made visible yet.
const VISIBILITY_WAITS_MS: [u64; 6] = [5, 10, 20, 40, 80, 160];

/// Maps an SDK error: throttling is retryable, anything else names the operation and keeps
/// the SDK's error as the source.
pub(crate) fn map_sdk<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>, op: &str) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    match e.code() {
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException",
        ) => StoreError::Throttled,
        _ => StoreError::backend(format!("DynamoDB {op} failed"), e),
    }
}

#[async_trait]
impl HeadReader for DynamoStore {
    async fn head(&self, execution_id: &str) -> Result<Option<Head>, StoreError> {
        Ok(self.head_item(execution_id).await?.map(|(h, _)| h))
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
        .map_err(|e| StoreError::backend("building a transaction Put", e))?;
    Ok(TransactWriteItem::builder().put(p).build())
}

impl DynamoStore {
    /// Which of `events` (id, timestamp) the idempotency records hold, given that nothing
    /// newer than `frontier` (the head's `last_timestamp`) is committed. One strongly
    /// consistent Query per minute, from the earliest millisecond asked about.
    async fn recorded(
        &self,
        execution_id: &str,
        events: &[(&str, i64)],
        frontier: Option<i64>,
    ) -> Result<HashSet<String>, StoreError> {
        let Some(frontier) = frontier else {
            return Ok(HashSet::new());
        };
        let mut earliest: BTreeMap<i64, i64> = BTreeMap::new();
        for (_, ts) in events.iter().filter(|(_, ts)| *ts <= frontier) {
            let e = earliest
                .entry(ts.div_euclid(item::RECORD_SPAN_MS))
                .or_insert(i64::MAX);
            *e = (*e).min(ts.rem_euclid(item::RECORD_SPAN_MS));
        }
        let mut held = HashSet::new();
        for (span, ms) in earliest {
            let mut start: Option<Item> = None;
            loop {
                let resp = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("execution_id = :p AND log_index >= :from")
                    .expression_attribute_values(":p", s(item::ids_key(execution_id, span)))
                    .expression_attribute_values(":from", n(item::ids_sort_from(ms)))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| map_sdk(e, "Query"))?;
                for it in resp.items.unwrap_or_default() {
                    held.extend(item::decode_ids(&it)?);
                }
                start = resp.last_evaluated_key.filter(|k| !k.is_empty());
                if start.is_none() {
                    break;
                }
            }
        }
        let asked: HashSet<&str> = events.iter().map(|(id, _)| *id).collect();
        held.retain(|id| asked.contains(id.as_str()));
        Ok(held)
    }
}

#[async_trait]
impl LogWriter for DynamoStore {
    fn max_events_per_commit(&self) -> usize {
        EVENTS_PER_COMMIT
    }

    fn max_commit_bytes(&self) -> usize {
        BYTES_PER_COMMIT
    }

    fn commit_spans(&self) -> (i64, usize) {
        (item::RECORD_SPAN_MS, SPANS_PER_COMMIT)
    }

    async fn known_event_ids(
        &self,
        execution_id: &str,
        events: &[SourceEvent],
    ) -> Result<HashSet<String>, StoreError> {
        let frontier = self.head(execution_id).await?.map(|h| h.last_timestamp);
        let pairs: Vec<(&str, i64)> = events
            .iter()
            .map(|e| (e.event_id.as_str(), e.timestamp))
            .collect();
        self.recorded(execution_id, &pairs, frontier).await
    }

    async fn extend_expiry(
        &self,
        execution_id: &str,
        through: u64,
        at_least: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        if through == 0 {
            return Ok(());
        }
        // The runs must cover 1..=through: a run under the head's own key can still be on its
        // way to being visible (read-committed per item), and one missed here would expire
        // before its execution.
        let mut runs = Vec::new();
        for wait in VISIBILITY_WAITS_MS {
            runs = self.expiry_keys(execution_id, 1, through).await?;
            let mut next = 1;
            for (first, last, _, _) in &runs {
                if *first != next {
                    break;
                }
                next = last + 1;
            }
            if next > through {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        for (first, _, expires_at, parts) in runs {
            if expires_at >= at_least {
                continue;
            }
            // Parts before their run: a run must never outlive its bytes.
            if parts > 0 {
                let pk = item::part_key(execution_id, first);
                for (part, _, e, _) in self.expiry_keys(&pk, 0, 1_000_000).await? {
                    if e < at_least {
                        self.set_expiry(&pk, part, to).await?;
                    }
                }
            }
            self.set_expiry(execution_id, first, to).await?;
        }
        Ok(())
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let head = &commit.head;
        let exec = head.execution_id.as_str();
        // The head as it is now: a commit that is already outdated is refused without a
        // transaction, and its last timestamp bounds which ids can be committed already.
        let current = self.head_item(exec).await?;
        if current.as_ref().map(|h| h.0.version) != commit.expected_version {
            return Err(CommitError::VersionConflict);
        }
        if let Some((_, named)) = current.as_ref().filter(|_| !commit.events.is_empty()) {
            self.verify(exec, named).await?;
        }
        let pairs: Vec<(&str, i64)> = commit
            .events
            .iter()
            .map(|e| (e.event_id.as_str(), e.timestamp))
            .collect();
        let held = self
            .recorded(exec, &pairs, current.as_ref().map(|h| h.0.last_timestamp))
            .await?;
        if !held.is_empty() {
            let mut dups: Vec<String> = held.into_iter().collect();
            dups.sort();
            return Err(CommitError::Duplicate(dups));
        }
        let mut actions = Vec::new();
        let mut written = Vec::new();
        let mut named = current.map(|c| c.1).unwrap_or_default();
        if let Some(first) = commit.events.first() {
            let expires_at = head.item_expiry();
            let run = item::encode_run(exec, &commit.events, expires_at);
            let records = item::encode_ids(exec, first.index, &pairs, expires_at);
            named = Named::of(&records, expires_at)?;
            written.extend(std::iter::once(run.item).chain(run.parts).chain(records));
        }
        let mut head_item = item::head_to_item(head);
        named.write(&mut head_item);
        // The head first: the partition key whose items a reader sees together.
        let head_put = match commit.expected_version {
            None => put(
                &self.table,
                head_item,
                "attribute_not_exists(execution_id)",
                None,
            )?,
            Some(v) => put(&self.table, head_item, "version = :v", Some((":v", n(v))))?,
        };
        actions.push(head_put);
        for it in written {
            actions.push(put(
                &self.table,
                it,
                "attribute_not_exists(log_index)",
                None,
            )?);
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
        match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                Err(cancelled(c.cancellation_reasons()))
            }
            _ => Err(CommitError::Store(map_sdk(err, "TransactWriteItems"))),
        }
    }
}

impl DynamoStore {
    /// The keys (and what the extension needs) of one partition's items in `[from, through]`:
    /// `(log_index, last index, expires_at, parts)`.
    async fn expiry_keys(
        &self,
        pk: &str,
        from: u64,
        through: u64,
    ) -> Result<Vec<(u64, u64, i64, usize)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("execution_id = :e AND log_index BETWEEN :a AND :b")
                .expression_attribute_values(":e", s(pk))
                .expression_attribute_values(":a", n(from))
                .expression_attribute_values(":b", n(through))
                .projection_expression("log_index, #l, expires_at, parts")
                .expression_attribute_names("#l", "last")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| map_sdk(e, "Query"))?;
            for it in resp.items.unwrap_or_default() {
                let first: u64 = item::get_n(&it, "log_index")?;
                let last = item::get_n::<u64>(&it, "last").unwrap_or(first);
                out.push((
                    first,
                    last,
                    item::get_n(&it, "expires_at")?,
                    item::extra_parts(&it),
                ));
            }
            start = resp.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// `SET expires_at = :to` on one item unless it already expires at or after `to`.
    async fn set_expiry(&self, pk: &str, sk: u64, to: i64) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .update_expression("SET expires_at = :to")
            .condition_expression("attribute_exists(log_index) AND expires_at < :to")
            .expression_attribute_values(":to", n(to))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) {
                    // Extended further by another writer, or gone (TTL): nothing to do.
                    Ok(())
                } else {
                    Err(map_sdk(e, "UpdateItem"))
                }
            }
        }
    }
}

/// What a cancelled commit means for the engine: another writer got there first (a version
/// conflict: re-read and retry), or throttling.
fn cancelled(reasons: &[aws_sdk_dynamodb::types::CancellationReason]) -> CommitError {
    let code = |c: &str| reasons.iter().any(|r| r.code() == Some(c));
    if code("ThrottlingError")
        || code("ProvisionedThroughputExceeded")
        || code("RequestLimitExceeded")
    {
        CommitError::Store(StoreError::Throttled)
    } else if reasons.is_empty() || code("ConditionalCheckFailed") || code("TransactionConflict") {
        CommitError::VersionConflict
    } else {
        let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).collect();
        CommitError::Store(StoreError::backend_message(format!(
            "DynamoDB cancelled the transaction: {codes:?}"
        )))
    }
}

#[async_trait]
impl LogReader for DynamoStore {
    async fn recent(
        &self,
        after_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<runvoy_core::ExecutionSummary>, StoreError> {
        let mut out = Vec::new();
        if after_ms >= before_ms || limit == 0 {
            return Ok(out);
        }
        // One Query per day, newest day first, each newest first (the index's sort key).
        let mut day = item::created_day(before_ms - 1);
        while day >= item::created_day(after_ms) && out.len() < limit {
            let mut start = None;
            loop {
                let resp = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(item::RECENT_INDEX)
                    .key_condition_expression("created_day = :d AND created_at BETWEEN :a AND :b")
                    .expression_attribute_values(":d", n(day))
                    .expression_attribute_values(":a", n(after_ms))
                    .expression_attribute_values(":b", n(before_ms - 1))
                    .scan_index_forward(false)
                    .limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| map_sdk(e, "Query"))?;
                for it in resp.items.unwrap_or_default() {
                    out.push(item::summary_from_item(&it)?);
                }
                start = resp.last_evaluated_key.filter(|k| !k.is_empty());
                if start.is_none() || out.len() >= limit {
                    break;
                }
            }
            day -= 1;
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn read_bounded(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
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
            .map_err(|e| map_sdk(e, "Query"))?;
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
        let mut bytes = 0usize;
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
                .map_err(|e| map_sdk(e, "Query"))?;
            for it in resp.items.unwrap_or_default() {
                let expires_at: i64 = item::get_n(&it, "expires_at")?;
                let extra = item::extra_parts(&it);
                let parts = if extra > 0 {
                    let first: u64 = item::get_n(&it, "log_index")?;
                    self.read_parts(execution_id, first, extra, expires_at)
                        .await?
                } else {
                    Vec::new()
                };
                for e in item::decode_run(&it, &parts)? {
                    if e.index <= after || e.index > through {
                        continue;
                    }
                    check_read_item(execution_id, after, out.len(), e.index, expires_at, now)?;
                    if !fits_in_read(out.len(), bytes, &e, max_bytes) {
                        return Ok(out);
                    }
                    bytes += e.wire_size();
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
