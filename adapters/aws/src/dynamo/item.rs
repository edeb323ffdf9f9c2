//! Mapping between the model and DynamoDB items, including how large messages are stored.

use std::collections::HashMap;
use std::io::{Read, Write};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use runvoy_core::{Head, LogEvent, Status, StoreError};

pub type Item = HashMap<String, AttributeValue>;

/// Messages up to this many bytes are stored as plain strings in the log item (DynamoDB items
/// are at most 400 KB, including attribute names and the other attributes).
pub const INLINE_MAX: usize = 350_000;
/// Bytes of compressed message per item when a message does not fit in one item compressed.
pub const PART_BYTES: usize = 350_000;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn part_key(execution_id: &str, index: u64) -> String {
    format!("{execution_id}#part#{index}")
}

fn bad(what: &str) -> StoreError {
    StoreError::backend_message(format!("DynamoDB item is malformed: {what}"))
}

pub fn get_s(item: &Item, k: &str) -> Result<String, StoreError> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(bad(k)),
    }
}

pub fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Result<T, StoreError> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| bad(k)),
        _ => Err(bad(k)),
    }
}

fn opt_n<T: std::str::FromStr>(item: &Item, k: &str) -> Result<Option<T>, StoreError> {
    match item.get(k) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_n(item, k).map(Some),
    }
}

pub fn head_to_item(h: &Head) -> Item {
    let mut item = Item::new();
    item.insert("execution_id".into(), s(&h.execution_id));
    item.insert("log_index".into(), n(0));
    item.insert("version".into(), n(h.version));
    item.insert("last_index".into(), n(h.last_index));
    item.insert("status".into(), s(h.status.as_str()));
    item.insert("last_timestamp".into(), n(h.last_timestamp));
    item.insert("created_at".into(), n(h.created_at));
    // The key of the `recent` index (heads only: log items have no such attribute).
    item.insert("created_day".into(), n(created_day(h.created_at)));
    item.insert("updated_at".into(), n(h.updated_at));
    item.insert("expires_at".into(), n(h.expires_at));
    if let Some(v) = h.final_index {
        item.insert("final_index".into(), n(v));
    }
    if let Some(v) = h.exit_code {
        item.insert("exit_code".into(), n(v));
    }
    if let Some(v) = &h.source_cursor {
        item.insert("source_cursor".into(), s(v));
    }
    if let Some(v) = &h.sweep_cursor {
        item.insert("sweep_cursor".into(), s(v));
    }
    if let Some(v) = h.sweep_began_at {
        item.insert("sweep_began_at".into(), n(v));
    }
    if let Some(v) = h.stopped_at {
        item.insert("stopped_at".into(), n(v));
    }
    if let Some(v) = h.items_expire_at {
        item.insert("items_expire_at".into(), n(v));
    }
    if let Some(v) = h.reconcile_after {
        item.insert("reconcile_after".into(), n(v));
    }
    if let Some(v) = h.reconcile_wait_ms {
        item.insert("reconcile_wait_ms".into(), n(v));
    }
    item
}

/// Name of the sparse global secondary index listing heads by creation time: partition key
/// `created_day`, sort key `created_at`, projecting what a listing shows (all of which change
/// at most once per execution, so head updates cost the index nothing).
pub const RECENT_INDEX: &str = "recent";

/// The UTC day (days since the epoch) of a time in ms: the `recent` index's partition.
pub fn created_day(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// An execution as the `recent` index projects it.
pub fn summary_from_item(item: &Item) -> Result<runvoy_core::ExecutionSummary, StoreError> {
    let bad = |k: &str| StoreError::backend_message(format!("index item has a bad {k}"));
    Ok(runvoy_core::ExecutionSummary {
        execution_id: get_s(item, "execution_id")?,
        status: Status::parse(&get_s(item, "status")?).ok_or_else(|| bad("status"))?,
        exit_code: opt_n(item, "exit_code")?,
        final_index: opt_n(item, "final_index")?,
        created_at: get_n(item, "created_at")?,
    })
}

pub fn head_from_item(item: &Item) -> Result<Head, StoreError> {
    Ok(Head {
        execution_id: get_s(item, "execution_id")?,
        last_index: get_n(item, "last_index")?,
        status: Status::parse(&get_s(item, "status")?).ok_or_else(|| bad("status"))?,
        final_index: opt_n(item, "final_index")?,
        exit_code: opt_n(item, "exit_code")?,
        source_cursor: match item.get("source_cursor") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        },
        sweep_cursor: match item.get("sweep_cursor") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        },
        sweep_began_at: opt_n(item, "sweep_began_at")?,
        stopped_at: opt_n(item, "stopped_at")?,
        reconcile_after: opt_n(item, "reconcile_after")?,
        reconcile_wait_ms: opt_n(item, "reconcile_wait_ms")?,
        version: get_n(item, "version")?,
        last_timestamp: get_n(item, "last_timestamp")?,
        created_at: get_n(item, "created_at")?,
        updated_at: get_n(item, "updated_at")?,
        expires_at: get_n(item, "expires_at")?,
        items_expire_at: opt_n(item, "items_expire_at")?,
    })
}

/// A run item and the part items that must be written with it.
pub struct Encoded {
    pub item: Item,
    pub parts: Vec<Item>,
}

/// Idempotency records group a commit's event ids by the minute of their timestamps: few
/// records per commit for sparse logs, and few Queries to look ids up.
pub const RECORD_SPAN_MS: i64 = 60_000;

/// The partition of the idempotency records of one minute (span) of an execution.
pub fn ids_key(execution_id: &str, span: i64) -> String {
    format!("{execution_id}#ids#{span}")
}

/// A record's sort key: its latest millisecond within the span, then the commit's first
/// index — so the records that may hold an id of millisecond `m` are those from `m` on. Below
/// 2^48, so every store and JSON reader holds it exactly.
pub fn ids_sort(ms_in_span: i64, first_index: u64) -> u64 {
    ((ms_in_span.clamp(0, RECORD_SPAN_MS - 1) as u64) << 32) | (first_index & 0xffff_ffff)
}

/// The lowest sort key a record holding an id of millisecond `ms` (within its span) can have.
pub fn ids_sort_from(ms_in_span: i64) -> u64 {
    ids_sort(ms_in_span, 0)
}

/// The idempotency records of one commit: immutable items, one per minute its events fall in,
/// each holding the ids of that minute (newline-separated, gzipped when that is smaller). None
/// of them grows with density: a commit is bounded, and a later commit writes its own.
pub fn encode_ids(
    execution_id: &str,
    first_index: u64,
    ids: &[(&str, i64)],
    expires_at: i64,
) -> Vec<Item> {
    let mut by_span: std::collections::BTreeMap<i64, (i64, Vec<&str>)> = Default::default();
    for (id, ts) in ids {
        let e = by_span
            .entry(ts.div_euclid(RECORD_SPAN_MS))
            .or_insert((i64::MIN, Vec::new()));
        e.0 = e.0.max(ts.rem_euclid(RECORD_SPAN_MS));
        e.1.push(id);
    }
    by_span
        .into_iter()
        .map(|(span, (latest, ids))| {
            let text = ids.join("\n");
            let mut item = Item::new();
            item.insert("execution_id".into(), s(ids_key(execution_id, span)));
            item.insert("log_index".into(), n(ids_sort(latest, first_index)));
            item.insert("expires_at".into(), n(expires_at));
            let gz = (text.len() > 1024).then(|| gzip(text.as_bytes()));
            match gz {
                Some(gz) if gz.len() < text.len() => {
                    item.insert("ids_gz".into(), AttributeValue::B(Blob::new(gz)));
                }
                _ => {
                    item.insert("ids".into(), s(text));
                }
            }
            item
        })
        .collect()
}

/// The head's attributes naming the idempotency records of the last commit that had events
/// (`"{span}:{sort}"`, comma-separated) and when they expire: a writer reads them before it
/// trusts the head (see [`crate::dynamo::DynamoStore`]).
pub const NAMED_RECORDS: &str = "records";
pub const NAMED_RECORDS_EXPIRE: &str = "records_expire_at";

/// The records a head names: `(span, sort key)` pairs, and their expiry (unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub keys: Vec<(i64, u64)>,
    pub expires_at: i64,
}

impl Named {
    /// The keys of `records` (as [`encode_ids`] made them).
    pub fn of(records: &[Item], expires_at: i64) -> Result<Named, StoreError> {
        let keys = records
            .iter()
            .map(|r| {
                let pk = get_s(r, "execution_id")?;
                let span = pk
                    .rsplit_once("#ids#")
                    .and_then(|(_, sp)| sp.parse().ok())
                    .ok_or_else(|| bad("record key"))?;
                Ok((span, get_n::<u64>(r, "log_index")?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Named { keys, expires_at })
    }

    pub fn read(item: &Item) -> Result<Named, StoreError> {
        let Some(AttributeValue::S(text)) = item.get(NAMED_RECORDS) else {
            return Ok(Named::default());
        };
        let keys = text
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (span, sort) = p.split_once(':').ok_or_else(|| bad(NAMED_RECORDS))?;
                Ok((
                    span.parse().map_err(|_| bad(NAMED_RECORDS))?,
                    sort.parse().map_err(|_| bad(NAMED_RECORDS))?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Named {
            keys,
            expires_at: opt_n(item, NAMED_RECORDS_EXPIRE)?.unwrap_or(0),
        })
    }

    pub fn write(&self, item: &mut Item) {
        if self.keys.is_empty() {
            return;
        }
        let text: Vec<String> = self
            .keys
            .iter()
            .map(|(sp, so)| format!("{sp}:{so}"))
            .collect();
        item.insert(NAMED_RECORDS.into(), s(text.join(",")));
        item.insert(NAMED_RECORDS_EXPIRE.into(), n(self.expires_at));
    }
}

/// The event ids of an idempotency record.
pub fn decode_ids(item: &Item) -> Result<Vec<String>, StoreError> {
    let text = match (item.get("ids"), item.get("ids_gz")) {
        (Some(AttributeValue::S(t)), _) => t.clone(),
        (_, Some(AttributeValue::B(b))) => gunzip(b.as_ref())?,
        _ => return Err(bad("ids")),
    };
    Ok(text
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The first byte of a run's `rows` attribute: the layout of spec §5.2 (layout 1 is the JSON
/// of `events` / `events_gz`, still read).
const ROWS_LAYOUT: u8 = 2;
/// The second byte: how the columns that follow are compressed.
const CODEC_STORED: u8 = 0;
const CODEC_DEFLATE: u8 = 1;
/// Columns smaller than this are stored as they are (compression would not pay).
const COMPRESS_ABOVE: usize = 512;

/// A run: the consecutive lines of one commit in one item keyed by the first index, in the
/// `rows` attribute: `[2][codec][columns]`, the columns raw-deflated (level 6) when that is
/// smaller. Columns: the count; the timestamps as zigzag varint deltas (the first from 0); one
/// id tag each (even `2k`: the id is the one the forwarder derives, `{ts}-{k}-{digest}`, and is
/// derived again on reading; odd `2n+1`: a literal id of `n` bytes follows); the messages'
/// byte lengths; the messages. Compressed bytes that do not fit continue in part items.
pub fn encode_run(execution_id: &str, events: &[LogEvent], expires_at: i64) -> Encoded {
    let columns = rows_columns(events);
    let (codec, body) = if columns.len() > COMPRESS_ABOVE {
        let deflated = deflate(&columns);
        if deflated.len() < columns.len() {
            (CODEC_DEFLATE, deflated)
        } else {
            (CODEC_STORED, columns)
        }
    } else {
        (CODEC_STORED, columns)
    };
    let mut bytes = Vec::with_capacity(body.len() + 2);
    bytes.push(ROWS_LAYOUT);
    bytes.push(codec);
    bytes.extend_from_slice(&body);
    split_into_parts(execution_id, events, expires_at, "rows", bytes)
}

/// Layout 1, as runs were written before layout 2 (and are still read): a JSON array of
/// `[event_id, timestamp, message]`, gzipped (fastest level) when that is smaller. Kept to test
/// that old items stay readable, and to measure one layout beside the other.
pub fn encode_run_layout1(execution_id: &str, events: &[LogEvent], expires_at: i64) -> Encoded {
    let rows: Vec<(&str, i64, &str)> = events
        .iter()
        .map(|e| (e.event_id.as_str(), e.timestamp, e.message.as_str()))
        .collect();
    let json = serde_json::to_string(&rows).expect("rows serialize");
    let gz = (json.len() > 1024).then(|| gzip(json.as_bytes()));
    match gz {
        Some(gz) if gz.len() < json.len() || json.len() > INLINE_MAX => {
            split_into_parts(execution_id, events, expires_at, "events_gz", gz)
        }
        _ => {
            let mut e = split_into_parts(execution_id, events, expires_at, "events_gz", Vec::new());
            e.item.remove("events_gz");
            e.item.insert("events".into(), s(json));
            e
        }
    }
}

/// The run item with `bytes` in attribute `attr`, the bytes past [`PART_BYTES`] in part items.
fn split_into_parts(
    execution_id: &str,
    events: &[LogEvent],
    expires_at: i64,
    attr: &str,
    bytes: Vec<u8>,
) -> Encoded {
    let first = events.first().map_or(1, |e| e.index);
    let last = events.last().map_or(first, |e| e.index);
    let mut item = Item::new();
    item.insert("execution_id".into(), s(execution_id));
    item.insert("log_index".into(), n(first));
    item.insert("last".into(), n(last));
    item.insert("expires_at".into(), n(expires_at));
    let mut chunks = bytes.chunks(PART_BYTES);
    let head = chunks.next().unwrap_or_default();
    item.insert(attr.into(), AttributeValue::B(Blob::new(head)));
    let rest: Vec<&[u8]> = chunks.collect();
    if !rest.is_empty() {
        item.insert("parts".into(), n(rest.len() + 1));
    }
    let parts = rest
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut p = Item::new();
            p.insert("execution_id".into(), s(part_key(execution_id, first)));
            p.insert("log_index".into(), n(i + 1));
            p.insert("data".into(), AttributeValue::B(Blob::new(*chunk)));
            p.insert("expires_at".into(), n(expires_at));
            p
        })
        .collect();
    Encoded { item, parts }
}

/// Decodes a run item (with its part items' data, in order), of either layout.
pub fn decode_run(item: &Item, parts: &[Vec<u8>]) -> Result<Vec<LogEvent>, StoreError> {
    let first: u64 = get_n(item, "log_index")?;
    let joined = |b: &Blob| {
        let mut all = b.as_ref().to_vec();
        for p in parts {
            all.extend_from_slice(p);
        }
        all
    };
    let rows = match (item.get("rows"), item.get("events"), item.get("events_gz")) {
        (Some(AttributeValue::B(b)), _, _) => decode_rows(&joined(b))?,
        (_, Some(AttributeValue::S(j)), _) => layout1_rows(j)?,
        (_, _, Some(AttributeValue::B(b))) => layout1_rows(&gunzip(&joined(b))?)?,
        _ => return Err(bad("rows")),
    };
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, (event_id, timestamp, message))| LogEvent {
            index: first + i as u64,
            event_id,
            timestamp,
            message,
        })
        .collect())
}

type Row = (String, i64, String);

fn layout1_rows(json: &str) -> Result<Vec<Row>, StoreError> {
    serde_json::from_str(json).map_err(|e| bad(&format!("events ({e})")))
}

/// The ordinal `k` when `id` is `{timestamp}-{k}-{digest(message)}`, the id the forwarder
/// derives (so it need not be stored).
fn derived_ordinal(id: &str, timestamp: i64, message: &str) -> Option<u64> {
    let mut it = id.splitn(3, '-');
    let (ts, k, digest) = (it.next()?, it.next()?, it.next()?);
    // A negative timestamp would split at its sign: such ids are stored as written.
    if ts.parse::<i64>().ok()? != timestamp || digest.len() != 32 {
        return None;
    }
    let ordinal: u64 = k.parse().ok()?;
    // `01` is not `1`: only the canonical form is derived again.
    (ordinal.to_string() == k && digest == crate::identity::digest(message)).then_some(ordinal)
}

fn rows_columns(events: &[LogEvent]) -> Vec<u8> {
    let text: usize = events.iter().map(|e| e.message.len()).sum();
    let mut out = Vec::with_capacity(text + events.len() * 6 + 8);
    put_varint(&mut out, events.len() as u64);
    let mut prev = 0i64;
    for e in events {
        put_varint(&mut out, zigzag(e.timestamp.wrapping_sub(prev)));
        prev = e.timestamp;
    }
    for e in events {
        match derived_ordinal(&e.event_id, e.timestamp, &e.message) {
            Some(k) => put_varint(&mut out, 2 * k),
            None => {
                put_varint(&mut out, 2 * e.event_id.len() as u64 + 1);
                out.extend_from_slice(e.event_id.as_bytes());
            }
        }
    }
    for e in events {
        put_varint(&mut out, e.message.len() as u64);
    }
    for e in events {
        out.extend_from_slice(e.message.as_bytes());
    }
    out
}

fn decode_rows(bytes: &[u8]) -> Result<Vec<Row>, StoreError> {
    let inflated;
    let columns = match bytes {
        [ROWS_LAYOUT, CODEC_STORED, rest @ ..] => rest,
        [ROWS_LAYOUT, CODEC_DEFLATE, rest @ ..] => {
            inflated = inflate(rest)?;
            &inflated[..]
        }
        [layout, codec, ..] => {
            return Err(bad(&format!(
                "rows (layout {layout}, codec {codec}: written by a newer version)"
            )));
        }
        _ => return Err(bad("rows (empty)")),
    };
    let mut at = 0;
    let count = get_varint(columns, &mut at)? as usize;
    // Every row takes at least three bytes of columns: a count beyond that is corrupt.
    if count > columns.len() {
        return Err(bad("rows (count)"));
    }
    let mut timestamps = Vec::with_capacity(count);
    let mut prev = 0i64;
    for _ in 0..count {
        prev = prev.wrapping_add(unzigzag(get_varint(columns, &mut at)?));
        timestamps.push(prev);
    }
    enum Id {
        Derived(u64),
        Literal(String),
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = get_varint(columns, &mut at)?;
        if tag % 2 == 0 {
            ids.push(Id::Derived(tag / 2));
        } else {
            let len = (tag / 2) as usize;
            let raw = take(columns, &mut at, len)?;
            let id = std::str::from_utf8(raw).map_err(|_| bad("rows (id)"))?;
            ids.push(Id::Literal(id.to_string()));
        }
    }
    let mut lengths = Vec::with_capacity(count);
    for _ in 0..count {
        lengths.push(get_varint(columns, &mut at)? as usize);
    }
    let mut rows = Vec::with_capacity(count);
    for ((timestamp, id), len) in timestamps.into_iter().zip(ids).zip(lengths) {
        let raw = take(columns, &mut at, len)?;
        let message = std::str::from_utf8(raw)
            .map_err(|_| bad("rows (message)"))?
            .to_string();
        let event_id = match id {
            Id::Derived(k) => format!("{timestamp}-{k}-{}", crate::identity::digest(&message)),
            Id::Literal(id) => id,
        };
        rows.push((event_id, timestamp, message));
    }
    if at != columns.len() {
        return Err(bad("rows (trailing bytes)"));
    }
    Ok(rows)
}

fn take<'a>(data: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], StoreError> {
    let end = at.checked_add(len).filter(|&e| e <= data.len());
    let end = end.ok_or_else(|| bad("rows (truncated)"))?;
    let out = &data[*at..end];
    *at = end;
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Result<u64, StoreError> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at).ok_or_else(|| bad("rows (truncated)"))?;
        *at += 1;
        x |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(x);
        }
    }
    Err(bad("rows (varint)"))
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("writing to memory cannot fail");
    enc.finish().expect("writing to memory cannot fail")
}

fn inflate(data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| bad(&format!("compressed rows ({e})")))?;
    Ok(out)
}

/// How many extra part items the item says it has (0 when it holds everything).
pub fn extra_parts(item: &Item) -> usize {
    opt_n::<usize>(item, "parts")
        .ok()
        .flatten()
        .unwrap_or(1)
        .saturating_sub(1)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to memory cannot fail");
    enc.finish().expect("writing to memory cannot fail")
}

fn gunzip(data: &[u8]) -> Result<String, StoreError> {
    let mut out = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut out)
        .map_err(|e| bad(&format!("compressed message ({e})")))?;
    Ok(out)
}

/// Billed size of an item as DynamoDB counts it: attribute names plus values (strings and
/// binaries by length, numbers about 1 byte per 2 digits plus 1), plus 100 bytes for indexes
/// is not charged on the base table.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_every_size_round_trip() {
        for (count, size) in [
            (1, 0),
            (3, 10),
            (90, 2_800),
            (1, INLINE_MAX),
            (1, INLINE_MAX + 1),
            (1, 1 << 20),
        ] {
            // Pseudo-random text so compression cannot shrink it below one part.
            let mut x = size as u64 + 1;
            let events: Vec<LogEvent> = (0..count)
                .map(|i| LogEvent {
                    index: 7 + i as u64,
                    event_id: format!("id{i}"),
                    timestamp: 5,
                    message: (0..size)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            char::from(b'!' + (x % 90) as u8)
                        })
                        .collect(),
                })
                .collect();
            let enc = encode_run("ex", &events, 99);
            assert!(item_size(&enc.item) < 400 * 1024, "{count} x {size}");
            for p in &enc.parts {
                assert!(item_size(p) < 400 * 1024);
            }
            assert_eq!(extra_parts(&enc.item), enc.parts.len());
            let parts: Vec<Vec<u8>> = enc
                .parts
                .iter()
                .map(|p| match &p["data"] {
                    AttributeValue::B(b) => b.as_ref().to_vec(),
                    _ => unreachable!(),
                })
                .collect();
            assert_eq!(decode_run(&enc.item, &parts).unwrap(), events);
        }
    }

    fn part_data(enc: &Encoded) -> Vec<Vec<u8>> {
        enc.parts
            .iter()
            .map(|p| match &p["data"] {
                AttributeValue::B(b) => b.as_ref().to_vec(),
                _ => unreachable!(),
            })
            .collect()
    }

    fn forwarded(lines: &[(i64, &str)]) -> Vec<LogEvent> {
        crate::identity::with_ids(lines.iter().map(|(t, m)| (*t, m.to_string())).collect())
            .into_iter()
            .enumerate()
            .map(|(i, e)| LogEvent::from_source(10 + i as u64, e))
            .collect()
    }

    /// The ids the forwarder derives are not stored: the run holds little more than the text.
    #[test]
    fn derived_ids_are_derived_again_not_stored() {
        let lines: Vec<(i64, String)> = (0..1_000)
            .map(|i| {
                (
                    1_765_000_000_000 + i / 10,
                    format!("   Compiling crate-{} v1.0.0", i % 4),
                )
            })
            .collect();
        let refs: Vec<(i64, &str)> = lines.iter().map(|(t, m)| (*t, m.as_str())).collect();
        let events = forwarded(&refs);
        assert!(
            events.iter().filter(|e| e.event_id.contains("-1-")).count() > 0,
            "some ordinals above 0"
        );
        let enc = encode_run("ex", &events, 9);
        assert!(matches!(enc.item.get("rows"), Some(AttributeValue::B(_))));
        assert_eq!(decode_run(&enc.item, &[]).unwrap(), events);
        let old = encode_run_layout1("ex", &events, 9);
        assert!(
            item_size(&enc.item) * 4 < item_size(&old.item),
            "layout 2: {} bytes, layout 1: {} bytes",
            item_size(&enc.item),
            item_size(&old.item)
        );
    }

    /// Items written before layout 2 stay readable: plain JSON, gzipped JSON, and gzipped JSON
    /// continued in parts.
    #[test]
    fn layout_1_runs_are_still_read() {
        let plain: Item = [
            ("execution_id", s("ex")),
            ("log_index", n(4)),
            ("last", n(5)),
            ("expires_at", n(9)),
            ("events", s(r#"[["a",1,"x"],["b",2,"é\n"]]"#)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let back = decode_run(&plain, &[]).unwrap();
        assert_eq!(
            back.iter()
                .map(|e| (
                    e.index,
                    e.event_id.as_str(),
                    e.timestamp,
                    e.message.as_str()
                ))
                .collect::<Vec<_>>(),
            vec![(4, "a", 1, "x"), (5, "b", 2, "é\n")]
        );
        let big: Vec<LogEvent> = (0..3)
            .map(|i| LogEvent {
                index: 1 + i,
                event_id: format!("id{i}"),
                timestamp: 5,
                message: (0..400_000u32)
                    .map(|j| char::from(b'a' + ((j * 7919 + i as u32) % 26) as u8))
                    .collect(),
            })
            .collect();
        for events in [forwarded(&[(1, "a"), (2, "b")]), big] {
            let old = encode_run_layout1("ex", &events, 9);
            assert!(old.item.contains_key("events") || old.item.contains_key("events_gz"));
            assert_eq!(decode_run(&old.item, &part_data(&old)).unwrap(), events);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Any ids (derived, look-alikes, literal), timestamps and text round-trip.
        #[test]
        fn any_run_round_trips(rows in proptest::collection::vec(
            (0u8..4, -3i64..3, any_text(), 0u32..3),
            1..40,
        )) {
            let mut ts = 1_765_000_000_000i64;
            let events: Vec<LogEvent> = rows
                .iter()
                .enumerate()
                .map(|(i, (kind, step, message, k))| {
                    ts += step;
                    let digest = crate::identity::digest(message);
                    let event_id = match kind {
                        0 => format!("{ts}-{k}-{digest}"),
                        1 => format!("{ts}-0{k}-{digest}"),
                        2 => format!("{}-{k}-{digest}", ts + 1),
                        _ => format!("literal-{i}-{message}"),
                    };
                    LogEvent { index: 1 + i as u64, event_id, timestamp: ts, message: message.clone() }
                })
                .collect();
            let enc = encode_run("ex", &events, 9);
            proptest::prop_assert_eq!(decode_run(&enc.item, &part_data(&enc)).unwrap(), events);
        }

        /// Corrupt bytes are an error, never a panic.
        #[test]
        fn corrupt_rows_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut item: Item = [("log_index".to_string(), n(1))].into_iter().collect();
            let mut with_header = vec![ROWS_LAYOUT, CODEC_STORED];
            with_header.extend_from_slice(&bytes);
            for b in [bytes.clone(), with_header] {
                item.insert("rows".into(), AttributeValue::B(Blob::new(b)));
                let _ = decode_run(&item, &[]);
            }
        }
    }

    fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prelude::prop_oneof![
            proptest::string::string_regex("[a-z0-9 -]{0,30}").unwrap(),
            proptest::prelude::any::<String>(),
        ]
    }

    #[test]
    fn idempotency_records_split_by_span_and_round_trip() {
        // Timestamps 59,999, 60,000 and 60,001 ms: the first two minutes.
        let ids: Vec<(String, i64)> = (0..3_000)
            .map(|i| {
                let ts = 59_999 + i as i64 / 1_000;
                (format!("{ts}-0-{i:032x}"), ts)
            })
            .collect();
        let refs: Vec<(&str, i64)> = ids.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let records = encode_ids("ex", 7, &refs, 9);
        assert_eq!(records.len(), 2);
        let keys: Vec<String> = records
            .iter()
            .map(|r| get_s(r, "execution_id").unwrap())
            .collect();
        assert_eq!(keys, ["ex#ids#0", "ex#ids#1"]);
        assert_eq!(
            get_n::<u64>(&records[0], "log_index").unwrap(),
            ids_sort(59_999, 7)
        );
        assert_eq!(
            get_n::<u64>(&records[1], "log_index").unwrap(),
            ids_sort(1, 7)
        );
        assert!(ids_sort_from(2) <= ids_sort(2, 7) && ids_sort(1, u64::MAX) < ids_sort_from(2));
        let back: Vec<String> = records
            .iter()
            .flat_map(|r| decode_ids(r).unwrap())
            .collect();
        assert_eq!(back, ids.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>());
        assert!(records.iter().all(|r| item_size(r) < 400 * 1024));
    }

    #[test]
    fn heads_round_trip() {
        let mut h = Head::new("ex", 1, 2);
        h.final_index = Some(3);
        h.exit_code = Some(-1);
        h.source_cursor = Some("t:5".into());
        h.sweep_cursor = Some("t:3".into());
        h.sweep_began_at = Some(1_700_000_000_123);
        h.stopped_at = Some(1_700_000_000_100);
        h.items_expire_at = Some(1_700_086_400);
        h.reconcile_after = Some(1_700_000_000_000);
        h.reconcile_wait_ms = Some(10_000);
        h.status = Status::Stopped;
        assert_eq!(head_from_item(&head_to_item(&h)).unwrap(), h);
    }
}
