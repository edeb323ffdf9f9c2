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

pub fn event_key(execution_id: &str, event_id: &str) -> String {
    format!("{execution_id}#event#{event_id}")
}

pub fn part_key(execution_id: &str, index: u64) -> String {
    format!("{execution_id}#part#{index}")
}

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("DynamoDB item is malformed: {what}"))
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
    item
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
        version: get_n(item, "version")?,
        last_timestamp: get_n(item, "last_timestamp")?,
        created_at: get_n(item, "created_at")?,
        updated_at: get_n(item, "updated_at")?,
        expires_at: get_n(item, "expires_at")?,
    })
}

/// A log item and the part items that must be written with it.
pub struct Encoded {
    pub item: Item,
    pub parts: Vec<Item>,
}

/// Encodes a committed event: inline, gzipped, or gzipped and split into parts.
pub fn encode_event(execution_id: &str, e: &LogEvent, expires_at: i64) -> Encoded {
    let mut item = Item::new();
    item.insert("execution_id".into(), s(execution_id));
    item.insert("log_index".into(), n(e.index));
    item.insert("event_id".into(), s(&e.event_id));
    item.insert("timestamp".into(), n(e.timestamp));
    item.insert("expires_at".into(), n(expires_at));
    let mut parts = Vec::new();
    if e.message.len() <= INLINE_MAX {
        item.insert("message".into(), s(&e.message));
    } else {
        let gz = gzip(e.message.as_bytes());
        let mut chunks = gz.chunks(PART_BYTES);
        let first = chunks.next().unwrap_or_default();
        item.insert("message_gz".into(), AttributeValue::B(Blob::new(first)));
        let rest: Vec<&[u8]> = chunks.collect();
        item.insert("parts".into(), n(rest.len() + 1));
        for (i, chunk) in rest.iter().enumerate() {
            let mut p = Item::new();
            p.insert("execution_id".into(), s(part_key(execution_id, e.index)));
            p.insert("log_index".into(), n(i + 1));
            p.insert("data".into(), AttributeValue::B(Blob::new(*chunk)));
            p.insert("expires_at".into(), n(expires_at));
            parts.push(p);
        }
    }
    Encoded { item, parts }
}

/// The idempotency record of one source event.
pub fn idempotency_item(execution_id: &str, event_id: &str, index: u64, expires_at: i64) -> Item {
    HashMap::from([
        ("execution_id".to_string(), s(event_key(execution_id, event_id))),
        ("log_index".to_string(), n(0)),
        ("index".to_string(), n(index)),
        ("expires_at".to_string(), n(expires_at)),
    ])
}

/// How many extra part items the item says it has (0 for inline messages).
pub fn extra_parts(item: &Item) -> usize {
    opt_n::<usize>(item, "parts")
        .ok()
        .flatten()
        .unwrap_or(1)
        .saturating_sub(1)
}

/// Decodes a log item; `parts` are the compressed continuations in order.
pub fn decode_event(item: &Item, parts: &[Vec<u8>]) -> Result<LogEvent, StoreError> {
    let message = match (item.get("message"), item.get("message_gz")) {
        (Some(AttributeValue::S(m)), _) => m.clone(),
        (_, Some(AttributeValue::B(first))) => {
            let mut gz = first.as_ref().to_vec();
            for p in parts {
                gz.extend_from_slice(p);
            }
            gunzip(&gz)?
        }
        _ => return Err(bad("message")),
    };
    Ok(LogEvent {
        index: get_n(item, "log_index")?,
        event_id: get_s(item, "event_id")?,
        timestamp: get_n(item, "timestamp")?,
        message,
    })
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
    fn messages_of_every_size_round_trip() {
        for size in [0, 10, INLINE_MAX, INLINE_MAX + 1, 1 << 20] {
            // Pseudo-random text so compression cannot shrink it below one part.
            let mut x = size as u64 + 1;
            let message: String = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'!' + (x % 90) as u8)
                })
                .collect();
            let e = LogEvent {
                index: 7,
                event_id: "id".into(),
                timestamp: 5,
                message,
            };
            let enc = encode_event("ex", &e, 99);
            assert!(item_size(&enc.item) < 400 * 1024);
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
            assert_eq!(decode_event(&enc.item, &parts).unwrap(), e);
        }
    }

    #[test]
    fn heads_round_trip() {
        let mut h = Head::new("ex", 1, 2);
        h.final_index = Some(3);
        h.exit_code = Some(-1);
        h.source_cursor = Some("t:5".into());
        h.status = Status::Stopped;
        assert_eq!(head_from_item(&head_to_item(&h)).unwrap(), h);
    }
}
