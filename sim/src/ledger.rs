//! What the sim's traffic would be billed on AWS, in the units AWS bills (the bench prices them:
//! `bench/prices.toml`, `bench cost`). Exposed as `billing` in `/local/v1/sim/stats`:
//!
//! - **DynamoDB**, per function: write request units from the request bodies (one per started
//!   KB of each item written, two inside a transaction, `BatchWriteItem`'s items each) and read
//!   request units from the answers (one per started 4 KB for a strongly consistent read, half
//!   for an eventually consistent one; a `Query` or `Scan` page adds up its items' sizes before
//!   rounding, a `GetItem` or batch rounds each item). moto's `ConsumedCapacity` is a constant per
//!   operation, so it is not used.
//! - **Lambda**, per function (kept with the function's counters, read here): billed duration,
//!   each invocation rounded up to the millisecond, and the configured memory.
//! - **API Gateway WebSocket**: messages in 32 KB units, pushes and client messages alike, and
//!   connection minutes. **HTTP API**: requests in 512 KB units.
//! - **CloudWatch Logs**: events and bytes the producers ingest with `PutLogEvents`, the
//!   functions' own output (Lambda ingests it into their log groups), and the functions' calls
//!   to the Logs API (from the gate's counters).
//!
//! Where these are estimates (said again at each place): an item's size is computed with
//! DynamoDB's published formula from the DynamoDB JSON the gate sees; a read is billed by the
//! full size of the items it reads, which the gate knows only for items whose writes it saw
//! (it learns their sizes then), so an item read with a projection before the gate saw it
//! written is counted by what the answer holds (`read_sizes_from_answer` counts those); an
//! `UpdateItem`'s new size is taken as the larger of the old item and its key plus the values
//! it sets; index writes (the logs table's `recent` index holds the heads: a write when an
//! execution is created and when its status changes) are not counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// DynamoDB bills a write per started KB of the item, a read per started 4 KB.
pub const WRITE_UNIT_BYTES: usize = 1024;
pub const READ_UNIT_BYTES: usize = 4 * 1024;
/// API Gateway meters WebSocket messages in 32 KB units, HTTP API requests in 512 KB units.
pub const WS_MESSAGE_UNIT_BYTES: usize = 32 * 1024;
pub const HTTP_REQUEST_UNIT_BYTES: usize = 512 * 1024;
/// CloudWatch Logs counts 26 bytes per event on top of its message (the `PutLogEvents` size).
pub const LOG_EVENT_OVERHEAD: usize = 26;
/// Item sizes learned at most; past it new items are billed by what the requests show.
const MAX_LEARNED_SIZES: usize = 2_000_000;

/// Write request units of an item of `bytes` (outside a transaction).
pub fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64
}

/// Read request units of `bytes` read in one unit of billing (an item, or a `Query` page).
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// WebSocket messages billed for one message of `bytes`.
pub fn ws_message_units(bytes: usize) -> u64 {
    bytes.div_ceil(WS_MESSAGE_UNIT_BYTES).max(1) as u64
}

/// HTTP API requests billed for one request whose payloads add up to `bytes`.
pub fn http_request_units(bytes: usize) -> u64 {
    bytes.div_ceil(HTTP_REQUEST_UNIT_BYTES).max(1) as u64
}

/// Lambda's billed duration of one invocation: rounded up to the millisecond.
pub fn billed_ms(took: Duration) -> u64 {
    took.as_micros().div_ceil(1000).max(1) as u64
}

/// GB-seconds of `ms` billed at `memory_mb`.
pub fn gb_seconds(ms: u64, memory_mb: u64) -> f64 {
    ms as f64 / 1000.0 * memory_mb as f64 / 1024.0
}

/// The size of a DynamoDB JSON map of attributes as DynamoDB bills it: attribute names plus
/// values (strings and binaries by their length, numbers by about one byte per two digits plus
/// one, lists and maps with 3 bytes and 1 per element more).
pub fn item_bytes(v: &Value) -> usize {
    let Some(map) = v.as_object() else {
        return 0;
    };
    map.iter().map(|(k, av)| k.len() + value_bytes(av)).sum()
}

fn value_bytes(av: &Value) -> usize {
    let Some((kind, v)) = av.as_object().and_then(|o| o.iter().next()) else {
        return 1;
    };
    match kind.as_str() {
        "S" => v.as_str().map_or(0, str::len),
        "N" => v
            .as_str()
            .map_or(1, |n| n.trim_start_matches('-').len().div_ceil(2) + 1),
        "B" => v.as_str().map_or(0, |b| b.len() * 3 / 4),
        "SS" | "NS" | "BS" => v.as_array().map_or(0, |a| {
            a.iter().map(|x| x.as_str().map_or(0, str::len)).sum()
        }),
        "L" => {
            3 + v
                .as_array()
                .map_or(0, |a| a.iter().map(|x| 1 + value_bytes(x)).sum())
        }
        "M" => 3 + item_bytes(v),
        _ => 1,
    }
}

/// The partition key value a `Query` names in its `KeyConditionExpression` (`hash = :v`).
pub fn query_partition(hash: &str, body: &Value) -> Option<Value> {
    let cond = body["KeyConditionExpression"].as_str()?;
    let names = body["ExpressionAttributeNames"].as_object();
    let placeholder = cond.split(" AND ").find_map(|part| {
        let (lhs, rhs) = part.split_once('=')?;
        let lhs = lhs.trim();
        let lhs = names
            .and_then(|n| n.get(lhs))
            .and_then(Value::as_str)
            .unwrap_or(lhs);
        (lhs == hash).then(|| rhs.trim().to_string())
    })?;
    body["ExpressionAttributeValues"].get(&placeholder).cloned()
}

/// DynamoDB units of one function.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct DynamoUnits {
    pub requests: u64,
    pub write_units: f64,
    pub read_units: f64,
    /// Items read whose size the gate had not learned from a write: counted by the answer
    /// (smaller than billed if a projection left attributes out).
    pub read_sizes_from_answer: u64,
}

/// A table's key attributes (hash, range).
pub type KeySchema = (String, Option<String>);

#[derive(Default)]
struct Inner {
    dynamodb: BTreeMap<String, DynamoUnits>,
    /// `table \0 hash value \0 range value` → the item's size, learned from the writes.
    sizes: HashMap<String, usize>,
    ws_messages: u64,
    ws_message_units: u64,
    /// Milliseconds of connections that closed; open ones by id → opened at (ms).
    ws_closed_ms: u64,
    ws_open: HashMap<String, i64>,
    http_requests: u64,
    http_units: u64,
    http_bytes: u64,
    ingested_events: u64,
    ingested_bytes: u64,
}

/// What the sim's traffic is billed, counted as it passes.
#[derive(Default)]
pub struct Ledger {
    /// Physical table name → key schema (from the template).
    schemas: HashMap<String, KeySchema>,
    inner: Mutex<Inner>,
}

/// One write of a request: its table, what it writes, and how it is billed.
struct Write<'a> {
    table: &'a str,
    kind: WriteKind<'a>,
    /// 2 inside a transaction.
    factor: f64,
}

enum WriteKind<'a> {
    Put(&'a Value),
    Update { key: &'a Value, values: &'a Value },
    Delete(&'a Value),
    Check(&'a Value),
}

impl Ledger {
    pub fn new(schemas: HashMap<String, KeySchema>) -> Ledger {
        Ledger {
            schemas,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("ledger lock")
    }

    /// `table \0 hash \0 range` of an item or key, when the table's schema is known and the
    /// item holds its key (`partition` stands in for a hash key the item lacks: a `Query`
    /// answer with a projection).
    fn key_of(&self, table: &str, item: &Value, partition: Option<&Value>) -> Option<String> {
        let (hash, range) = self.schemas.get(table)?;
        let pk = item.get(hash).or(partition)?;
        let sk = match range {
            Some(r) => item.get(r)?.to_string(),
            None => String::new(),
        };
        Some(format!("{table}\0{pk}\0{sk}"))
    }

    /// One DynamoDB request a function made: `answer` is the parsed answer when it succeeded,
    /// `None` when it was refused (a failed condition or a cancelled transaction is billed
    /// its writes as DynamoDB bills them; nothing is learned from it).
    pub fn dynamodb(&self, function: &str, op: &str, body: &Value, answer: Option<&Value>) {
        let mut inner = self.lock();
        let mut write = 0.0;
        for w in writes(op, body) {
            let (billed, learned) = self.write_size(&inner, &w);
            write += w.factor * write_units(billed) as f64;
            if answer.is_some() {
                let target = match w.kind {
                    WriteKind::Put(i) => i,
                    WriteKind::Update { key, .. } | WriteKind::Delete(key) => key,
                    WriteKind::Check(_) => continue,
                };
                if let Some(k) = self.key_of(w.table, target, None) {
                    match learned {
                        Some(size) if inner.sizes.len() < MAX_LEARNED_SIZES => {
                            inner.sizes.insert(k, size);
                        }
                        Some(size) => {
                            if let Some(s) = inner.sizes.get_mut(&k) {
                                *s = size;
                            }
                        }
                        None => {
                            inner.sizes.remove(&k);
                        }
                    }
                }
            }
        }
        let (read, from_answer) = match answer {
            Some(a) => self.reads(&inner, op, body, a),
            None => (0.0, 0),
        };
        let units = inner.dynamodb.entry(function.to_string()).or_default();
        units.requests += 1;
        units.write_units += write;
        units.read_units += read;
        units.read_sizes_from_answer += from_answer;
    }

    /// The size a write is billed by (the larger of the item before and after), and the
    /// item's size after it (`None`: deleted).
    fn write_size(&self, inner: &Inner, w: &Write) -> (usize, Option<usize>) {
        let old = |target: &Value| {
            self.key_of(w.table, target, None)
                .and_then(|k| inner.sizes.get(&k).copied())
        };
        match w.kind {
            WriteKind::Put(item) => {
                let new = item_bytes(item);
                (new.max(old(item).unwrap_or(0)), Some(new))
            }
            WriteKind::Update { key, values } => {
                // An estimate: the values it sets replace attributes of about their size.
                let new = old(key)
                    .unwrap_or(0)
                    .max(item_bytes(key) + item_bytes(values));
                (new, Some(new))
            }
            WriteKind::Delete(key) => (old(key).unwrap_or_else(|| item_bytes(key)), None),
            WriteKind::Check(key) => {
                let size = old(key).unwrap_or_else(|| item_bytes(key));
                (size, Some(size))
            }
        }
    }

    /// Read units of a successful answer, and how many items were sized from the answer.
    fn reads(&self, inner: &Inner, op: &str, body: &Value, answer: &Value) -> (f64, u64) {
        let projected = |b: &Value| b.get("ProjectionExpression").is_some();
        let mut from_answer = 0;
        // The billed size of an item read: learned from its write, else what the answer holds.
        let mut size = |table: &str, item: &Value, partition: Option<&Value>, index: bool| {
            let learned = (!index)
                .then(|| self.key_of(table, item, partition))
                .flatten()
                .and_then(|k| inner.sizes.get(&k).copied());
            learned.unwrap_or_else(|| {
                if index || projected(body) {
                    from_answer += 1;
                }
                item_bytes(item)
            })
        };
        let consistent = body["ConsistentRead"] == true;
        let units = match op {
            "GetItem" => {
                let table = body["TableName"].as_str().unwrap_or_default();
                // A missing item is billed as the smallest read; a found one by its size,
                // found by the key asked for (the answer may not hold it).
                let bytes = match answer.get("Item") {
                    Some(item) => {
                        let learned = self
                            .key_of(table, &body["Key"], None)
                            .and_then(|k| inner.sizes.get(&k).copied());
                        match learned {
                            Some(s) => s,
                            None => size(table, item, None, false),
                        }
                    }
                    None => 0,
                };
                read_units(bytes, consistent)
            }
            "Query" | "Scan" => {
                let table = body["TableName"].as_str().unwrap_or_default();
                let index = body.get("IndexName").is_some();
                let partition = self
                    .schemas
                    .get(table)
                    .and_then(|(hash, _)| query_partition(hash, body));
                let bytes: usize = answer["Items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|item| size(table, item, partition.as_ref(), index))
                    .sum();
                read_units(bytes, consistent)
            }
            "BatchGetItem" => answer["Responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(table, items)| {
                    let consistent = body["RequestItems"][table]["ConsistentRead"] == true;
                    items
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|item| read_units(size(table, item, None, false), consistent))
                        .sum::<f64>()
                })
                .sum(),
            "TransactGetItems" => body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(answer["Responses"].as_array().into_iter().flatten())
                .map(|(get, got)| {
                    let table = get["Get"]["TableName"].as_str().unwrap_or_default();
                    let bytes = got
                        .get("Item")
                        .map_or(0, |item| size(table, item, None, false));
                    2.0 * read_units(bytes, true)
                })
                .sum(),
            _ => 0.0,
        };
        (units, from_answer)
    }

    /// A message API Gateway carried on a WebSocket, either way.
    pub fn ws_message(&self, bytes: usize) {
        let mut inner = self.lock();
        inner.ws_messages += 1;
        inner.ws_message_units += ws_message_units(bytes);
    }

    pub fn ws_opened(&self, connection: &str, at_ms: i64) {
        self.lock().ws_open.insert(connection.to_string(), at_ms);
    }

    pub fn ws_closed(&self, connection: &str, at_ms: i64) {
        let mut inner = self.lock();
        if let Some(opened) = inner.ws_open.remove(connection) {
            inner.ws_closed_ms += (at_ms - opened).max(0) as u64;
        }
    }

    /// A request the HTTP API served: its body and its answer's body.
    pub fn http_request(&self, request_bytes: usize, response_bytes: usize) {
        let mut inner = self.lock();
        let bytes = request_bytes + response_bytes;
        inner.http_requests += 1;
        // Which payload AWS meters is not spelled out; both together is the larger reading.
        inner.http_units += http_request_units(bytes);
        inner.http_bytes += bytes as u64;
    }

    /// Events a producer wrote with `PutLogEvents`: their count and message bytes.
    pub fn ingested(&self, events: u64, message_bytes: u64) {
        let mut inner = self.lock();
        inner.ingested_events += events;
        inner.ingested_bytes += message_bytes;
    }

    /// Everything counted so far at `now` (ms), with the functions' Lambda units and the calls
    /// each function made (`function → action → calls`; the CloudWatch Logs ones are billed).
    pub fn snapshot(
        &self,
        now: i64,
        functions: &[LambdaUsage],
        calls: &BTreeMap<String, BTreeMap<String, u64>>,
    ) -> Value {
        let inner = self.lock();
        let connection_ms = inner.ws_closed_ms
            + inner
                .ws_open
                .values()
                .map(|at| (now - at).max(0) as u64)
                .sum::<u64>();
        let lambda: BTreeMap<String, Value> = functions
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    json!({
                        "requests": s.invocations,
                        "billed_ms": s.billed_ms,
                        "memory_mb": s.memory_mb,
                        "gb_seconds": gb_seconds(s.billed_ms, s.memory_mb),
                        "log_events": s.log_events,
                        "log_bytes": s.log_bytes,
                    }),
                )
            })
            .collect();
        let logs_api: BTreeMap<String, BTreeMap<String, u64>> = calls
            .iter()
            .map(|(f, calls)| {
                let logs = calls
                    .iter()
                    .filter_map(|(op, n)| Some((op.strip_prefix("logs:")?.to_string(), *n)))
                    .collect();
                (f.clone(), logs)
            })
            .collect();
        json!({
            "dynamodb": inner.dynamodb,
            "lambda": lambda,
            "websocket": {
                "messages": inner.ws_messages,
                "message_units": inner.ws_message_units,
                "connection_minutes": connection_ms as f64 / 60_000.0,
                "open_connections": inner.ws_open.len(),
            },
            "http_api": {
                "requests": inner.http_requests,
                "request_units": inner.http_units,
                "bytes": inner.http_bytes,
            },
            "cloudwatch_logs": {
                "ingested_events": inner.ingested_events,
                "ingested_message_bytes": inner.ingested_bytes,
                "ingested_bytes": inner.ingested_bytes + inner.ingested_events * LOG_EVENT_OVERHEAD as u64,
                "api_calls": logs_api,
            },
        })
    }
}

/// What one function was billed for by Lambda, as the sim's Lambda counted it.
pub struct LambdaUsage {
    pub name: String,
    pub invocations: u64,
    pub billed_ms: u64,
    pub memory_mb: u64,
    pub log_events: u64,
    pub log_bytes: u64,
}

/// The writes of a DynamoDB request.
fn writes<'a>(op: &str, body: &'a Value) -> Vec<Write<'a>> {
    let table = body["TableName"].as_str().unwrap_or_default();
    match op {
        "PutItem" => vec![Write {
            table,
            kind: WriteKind::Put(&body["Item"]),
            factor: 1.0,
        }],
        "UpdateItem" => vec![Write {
            table,
            kind: WriteKind::Update {
                key: &body["Key"],
                values: &body["ExpressionAttributeValues"],
            },
            factor: 1.0,
        }],
        "DeleteItem" => vec![Write {
            table,
            kind: WriteKind::Delete(&body["Key"]),
            factor: 1.0,
        }],
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let (kind, action) = a.as_object()?.iter().next()?;
                let kind = match kind.as_str() {
                    "Put" => WriteKind::Put(&action["Item"]),
                    "Update" => WriteKind::Update {
                        key: &action["Key"],
                        values: &action["ExpressionAttributeValues"],
                    },
                    "Delete" => WriteKind::Delete(&action["Key"]),
                    _ => WriteKind::Check(&action["Key"]),
                };
                Some(Write {
                    table: action["TableName"].as_str()?,
                    kind,
                    factor: 2.0,
                })
            })
            .collect(),
        "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(table, requests)| {
                requests
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(move |r| {
                        let kind = match (r.get("PutRequest"), r.get("DeleteRequest")) {
                            (Some(p), _) => WriteKind::Put(&p["Item"]),
                            (_, Some(d)) => WriteKind::Delete(&d["Key"]),
                            _ => return None,
                        };
                        Some(Write {
                            table,
                            kind,
                            factor: 1.0,
                        })
                    })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The key schemas of the stack's tables, from the template.
pub(crate) fn key_schemas(
    resolver: &crate::template::Resolver,
) -> Result<HashMap<String, KeySchema>, crate::SimError> {
    let mut out = HashMap::new();
    for (id, _) in resolver.template().of_type("AWS::DynamoDB::Table") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        let of = |kind: &str| {
            p["KeySchema"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|k| k["KeyType"] == kind)
                .map(|k| crate::template::scalar(&k["AttributeName"]))
        };
        if let Some(hash) = of("HASH") {
            let name = resolver.physical(id).unwrap_or(id).to_string();
            out.insert(name, (hash, of("RANGE")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        let mut schemas = HashMap::new();
        schemas.insert(
            "logs".to_string(),
            ("execution_id".to_string(), Some("log_index".to_string())),
        );
        Ledger::new(schemas)
    }

    fn item(pk: &str, sk: u64, data: usize) -> Value {
        json!({"execution_id": {"S": pk}, "log_index": {"N": sk.to_string()}, "data": {"S": "x".repeat(data)}})
    }

    fn units(l: &Ledger, f: &str) -> DynamoUnits {
        l.lock().dynamodb.get(f).cloned().unwrap_or_default()
    }

    #[test]
    fn units_round_up_per_started_unit() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(read_units(4096, true), 1.0);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(4097, false), 1.0);
        assert_eq!(read_units(0, false), 0.5);
        assert_eq!(ws_message_units(1), 1);
        assert_eq!(ws_message_units(32 * 1024), 1);
        assert_eq!(ws_message_units(32 * 1024 + 1), 2);
        assert_eq!(http_request_units(512 * 1024), 1);
        assert_eq!(http_request_units(4 * 1024 * 1024), 8);
        assert_eq!(billed_ms(Duration::from_micros(1)), 1);
        assert_eq!(billed_ms(Duration::from_micros(12_001)), 13);
        assert_eq!(billed_ms(Duration::from_millis(12)), 12);
        assert_eq!(gb_seconds(2000, 256), 0.5);
    }

    #[test]
    fn item_sizes_follow_the_published_formula() {
        // "id" (2) + 3 bytes; "n" (1) + 6 digits → 3 + 1.
        assert_eq!(item_bytes(&json!({"id": {"S": "abc"}})), 5);
        assert_eq!(item_bytes(&json!({"n": {"N": "123456"}})), 5);
        assert_eq!(
            item_bytes(&json!({"l": {"L": [{"S": "ab"}, {"N": "1"}]}})),
            1 + 3 + (1 + 2) + (1 + 2)
        );
        assert_eq!(item_bytes(&json!({"ss": {"SS": ["a", "bc"]}})), 2 + 3);
    }

    #[test]
    fn a_transaction_bills_twice_per_kb_of_each_item() {
        let l = ledger();
        // 1 KB + a few bytes: 2 KB started, twice; a small one: 1 KB, twice.
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "logs", "Item": item("e", 0, 1024)}},
            {"Put": {"TableName": "logs", "Item": item("e", 1, 10)}},
            {"ConditionCheck": {"TableName": "logs", "Key": {"execution_id": {"S": "e"}, "log_index": {"N": "5"}}}},
        ]});
        l.dynamodb("forwarder", "TransactWriteItems", &body, Some(&json!({})));
        // The check is billed by its item, unknown here: by its key, the least.
        assert_eq!(units(&l, "forwarder").write_units, 4.0 + 2.0 + 2.0);
        // A Put replacing a larger item is billed by the larger one.
        let again = json!({"TableName": "logs", "Item": item("e", 0, 10)});
        l.dynamodb("forwarder", "PutItem", &again, Some(&json!({})));
        assert_eq!(units(&l, "forwarder").write_units, 8.0 + 2.0);
        assert_eq!(units(&l, "forwarder").requests, 2);
    }

    #[test]
    fn batch_writes_bill_each_item_once() {
        let l = ledger();
        let body = json!({"RequestItems": {"logs": [
            {"PutRequest": {"Item": item("e", 1, 2000)}},
            {"PutRequest": {"Item": item("e", 2, 10)}},
            {"DeleteRequest": {"Key": {"execution_id": {"S": "e"}, "log_index": {"N": "3"}}}},
        ]}});
        l.dynamodb("api", "BatchWriteItem", &body, Some(&json!({})));
        assert_eq!(units(&l, "api").write_units, 2.0 + 1.0 + 1.0);
    }

    #[test]
    fn reads_are_billed_by_learned_sizes_per_4_kb() {
        let l = ledger();
        for i in 0..3 {
            let put = json!({"TableName": "logs", "Item": item("e", i, 3000)});
            l.dynamodb("forwarder", "PutItem", &put, Some(&json!({})));
        }
        // A projected Query returns only the sort keys; the page is billed by the items'
        // full sizes added up (about 9 KB: 3 units), found by the partition it names.
        let query = json!({
            "TableName": "logs", "ConsistentRead": true,
            "KeyConditionExpression": "#p = :e AND log_index >= :a",
            "ExpressionAttributeNames": {"#p": "execution_id"},
            "ExpressionAttributeValues": {":e": {"S": "e"}, ":a": {"N": "0"}},
            "ProjectionExpression": "log_index",
        });
        let answer = json!({"Items": [
            {"log_index": {"N": "0"}}, {"log_index": {"N": "1"}}, {"log_index": {"N": "2"}}]});
        l.dynamodb("api", "Query", &query, Some(&answer));
        let u = units(&l, "api");
        assert_eq!((u.read_units, u.read_sizes_from_answer), (3.0, 0));
        // An item it never saw written is counted from the answer, and said so.
        let unseen = json!({"Items": [{"log_index": {"N": "9"}}]});
        l.dynamodb("api", "Query", &query, Some(&unseen));
        let u = units(&l, "api");
        assert_eq!((u.read_units, u.read_sizes_from_answer), (4.0, 1));
        // GetItem rounds per item; eventually consistent halves; a miss costs the least.
        let get = |consistent: bool, sk: u64| {
            json!({"TableName": "logs", "ConsistentRead": consistent,
                   "Key": {"execution_id": {"S": "e"}, "log_index": {"N": sk.to_string()}}})
        };
        l.dynamodb(
            "ws",
            "GetItem",
            &get(true, 0),
            Some(&json!({"Item": item("e", 0, 1)})),
        );
        l.dynamodb(
            "ws",
            "GetItem",
            &get(false, 0),
            Some(&json!({"Item": item("e", 0, 1)})),
        );
        l.dynamodb("ws", "GetItem", &get(true, 7), Some(&json!({})));
        assert_eq!(units(&l, "ws").read_units, 1.0 + 0.5 + 1.0);
        // A delete forgets the size; a refused request is billed its writes, learns nothing.
        let del = json!({"TableName": "logs", "Key": {"execution_id": {"S": "e"}, "log_index": {"N": "1"}}});
        l.dynamodb("ws", "DeleteItem", &del, None);
        assert_eq!(units(&l, "ws").write_units, 3.0, "3000 bytes: 3 units");
        l.dynamodb("ws", "DeleteItem", &del, Some(&json!({})));
        l.dynamodb("api", "Query", &query, Some(&answer));
        assert_eq!(
            units(&l, "api").read_sizes_from_answer,
            2,
            "the deleted item is sized from the answer"
        );
    }

    #[test]
    fn connection_minutes_and_messages_add_up() {
        let l = Ledger::default();
        l.ws_opened("a", 0);
        l.ws_opened("b", 1_000);
        l.ws_closed("a", 90_000);
        l.ws_closed("b", 31_000);
        l.ws_closed("never-opened", 5_000);
        l.ws_message(100);
        l.ws_message(40 * 1024);
        l.http_request(100, 3 * 1024 * 1024);
        l.ingested(2, 200);
        let s = l.snapshot(0, &[], &BTreeMap::new());
        assert_eq!(s["websocket"]["connection_minutes"], 2.0);
        assert_eq!(s["websocket"]["messages"], 2);
        assert_eq!(s["websocket"]["message_units"], 3);
        assert_eq!(s["http_api"]["request_units"], 7);
        assert_eq!(s["cloudwatch_logs"]["ingested_bytes"], 252);
    }
}
