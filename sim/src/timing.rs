//! DynamoDB's timing, played by the gate (`--chaos txn-skew-ms=N,throttle-wcu=N,sdk-retry=P`).
//! moto applies a transaction everywhere at once, never throttles and never answers a success
//! with an error; DynamoDB does all three, and the engine must hold under each:
//!
//! - **`txn-skew-ms=N`.** A transaction is serializable, but a `GetItem`, `Query`, `Scan` or
//!   `BatchGetItem` of another partition key is read-committed per item ("to ensure an atomic
//!   snapshot … use TransactGetItems", DynamoDB developer guide, *Isolation levels*): one
//!   transaction's items can become visible at different moments. After a successful
//!   `TransactWriteItems`, the items under partition keys other than the first action's stay
//!   invisible to those reads (their previous image, or nothing, is served instead) for a time
//!   drawn per transaction in `0..=N` ms. Conditions of later writes see them at once, as
//!   DynamoDB's do. `TransactGetItems` is not rewritten.
//! - **`throttle-wcu=N`.** One partition key takes at most 1,000 write units per second
//!   (developer guide, *Partitions and data distribution*); a transaction costs two units per KB
//!   of each item. Each partition key here has a bucket of N units a second; a write that finds
//!   its bucket short is refused as DynamoDB refuses it: `ProvisionedThroughputExceededException`
//!   for a single-item write, `TransactionCanceledException` with the reason `ThrottlingError`
//!   for a transaction (neither applied).
//! - **`sdk-retry=P`.** A request that succeeded can be answered with a 5xx (a lost response, an
//!   internal error after the commit), and the SDK sends it again. A successful
//!   `TransactWriteItems` is answered `500 InternalServerError` with probability P. DynamoDB
//!   would answer the repeat, which carries the same `ClientRequestToken`, with the first
//!   call's success within 10 minutes (or `TransactionInProgressException` while it is still
//!   being applied); moto ignores the token, so here the repeat is applied again and meets its
//!   own commit (its conditions fail) — harsher than DynamoDB, and what the engine meets on
//!   DynamoDB too once the token's window or the SDK's attempts are spent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the gate plays, from `--chaos`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DynamoChaos {
    pub txn_skew_ms: u64,
    pub throttle_wcu: Option<u64>,
    pub sdk_retry: f64,
}

impl DynamoChaos {
    pub fn is_calm(&self) -> bool {
        self.txn_skew_ms == 0 && self.throttle_wcu.is_none() && self.sdk_retry == 0.0
    }
}

/// What the timing did, for `/local/v1/sim/stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TimingStats {
    /// Items of transactions held invisible to reads for a while.
    pub items_skewed: u64,
    /// Items served in their previous image (or left out) because they were not visible yet.
    pub reads_behind: u64,
    /// Writes refused for their partition key's throughput.
    pub writes_throttled: u64,
    /// Successful transactions answered with a 500.
    pub successes_answered_500: u64,
}

/// An item a transaction wrote that reads do not see yet.
struct Hidden {
    until: Instant,
    /// What reads see meanwhile (`None`: no item).
    before: Option<Value>,
}

/// A partition key's write units.
struct Bucket {
    units: f64,
    at: Instant,
}

pub struct DynamoTiming {
    pub chaos: DynamoChaos,
    /// `table → (hash key attribute, range key attribute)`.
    schemas: Mutex<HashMap<String, (String, Option<String>)>>,
    hidden: Mutex<HashMap<String, Hidden>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    stats: Mutex<TimingStats>,
}

/// A request the gate may rewrite the answer of.
pub enum Verdict {
    /// Forward it.
    Pass,
    /// Answer this instead (status, `__type`, message, extra fields).
    Refuse(u16, &'static str, String, Value),
}

impl DynamoTiming {
    pub fn new(chaos: DynamoChaos) -> DynamoTiming {
        DynamoTiming {
            chaos,
            schemas: Mutex::default(),
            hidden: Mutex::default(),
            buckets: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    pub fn stats(&self) -> TimingStats {
        self.stats.lock().expect("timing lock").clone()
    }

    pub fn knows(&self, table: &str) -> bool {
        self.schemas
            .lock()
            .expect("timing lock")
            .contains_key(table)
    }

    pub fn learn(&self, table: &str, hash: String, range: Option<String>) {
        self.schemas
            .lock()
            .expect("timing lock")
            .insert(table.to_string(), (hash, range));
    }

    /// The tables a request names, so their key schemas can be learnt first.
    pub fn tables(op: &str, body: &Value) -> Vec<String> {
        match op {
            "TransactWriteItems" => body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_object()?.values().next()?["TableName"].as_str())
                .map(str::to_string)
                .collect(),
            "BatchGetItem" | "BatchWriteItem" => body["RequestItems"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            _ => body["TableName"]
                .as_str()
                .map(|t| vec![t.to_string()])
                .unwrap_or_default(),
        }
    }

    /// `table|hash|range` of an item or key, or `None` when the table's schema is unknown.
    fn key_of(&self, table: &str, item: &Value) -> Option<(String, String)> {
        let schemas = self.schemas.lock().expect("timing lock");
        let (hash, range) = schemas.get(table)?;
        let pk = item.get(hash)?.to_string();
        let sk = range
            .as_ref()
            .map(|r| item.get(r).map(Value::to_string).unwrap_or_default())
            .unwrap_or_default();
        Some((format!("{table}|{pk}|{sk}"), format!("{table}|{pk}")))
    }

    /// The writes of a request: `(table, item or key, units)`, units per KB as DynamoDB bills
    /// them (twice inside a transaction).
    fn writes(op: &str, body: &Value) -> Vec<(String, Value, f64)> {
        let one =
            |table: &str, v: &Value, factor: f64| (table.to_string(), v.clone(), factor * units(v));
        match op {
            "PutItem" => vec![one(
                body["TableName"].as_str().unwrap_or_default(),
                &body["Item"],
                1.0,
            )],
            "UpdateItem" | "DeleteItem" => {
                let t = body["TableName"].as_str().unwrap_or_default();
                let mut size = units(&body["Key"]);
                if op == "UpdateItem" {
                    size = size.max(units(&body["ExpressionAttributeValues"]));
                }
                vec![(t.to_string(), body["Key"].clone(), size)]
            }
            "TransactWriteItems" => body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    let (kind, action) = a.as_object()?.iter().next()?;
                    let t = action["TableName"].as_str()?;
                    let target = if kind == "Put" {
                        &action["Item"]
                    } else {
                        &action["Key"]
                    };
                    let size = match kind.as_str() {
                        "Put" => units(target),
                        "Update" => units(target).max(units(&action["ExpressionAttributeValues"])),
                        _ => 1.0,
                    };
                    Some((t.to_string(), target.clone(), 2.0 * size))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Before forwarding: refuses a write whose partition key is out of write units.
    pub fn admit(&self, op: &str, body: &Value) -> Verdict {
        let Some(rate) = self.chaos.throttle_wcu.map(|r| r as f64) else {
            return Verdict::Pass;
        };
        let writes = Self::writes(op, body);
        if writes.is_empty() {
            return Verdict::Pass;
        }
        let mut need: HashMap<String, f64> = HashMap::new();
        let mut partitions = Vec::new();
        for (table, item, u) in &writes {
            let partition = self
                .key_of(table, item)
                .map(|k| k.1)
                .unwrap_or_else(|| table.clone());
            *need.entry(partition.clone()).or_default() += u;
            partitions.push(partition);
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("timing lock");
        let mut short = Vec::new();
        for (p, units) in &need {
            let b = buckets.entry(p.clone()).or_insert(Bucket {
                units: rate,
                at: now,
            });
            b.units = (b.units + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
            b.at = now;
            // A write larger than a second's worth passes on a full bucket, then owes it.
            if b.units < units.min(rate) {
                short.push(p.clone());
            }
        }
        if short.is_empty() {
            for (p, units) in need {
                if let Some(b) = buckets.get_mut(&p) {
                    b.units -= units;
                }
            }
            return Verdict::Pass;
        }
        drop(buckets);
        self.stats.lock().expect("timing lock").writes_throttled += 1;
        if op == "TransactWriteItems" {
            let reasons: Vec<Value> = partitions
                .iter()
                .map(|p| {
                    if short.contains(p) {
                        json!({"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity of your table or index."})
                    } else {
                        json!({"Code": "None"})
                    }
                })
                .collect();
            let codes: Vec<&str> = reasons
                .iter()
                .map(|r| r["Code"].as_str().unwrap_or("None"))
                .collect();
            return Verdict::Refuse(
                400,
                "TransactionCanceledException",
                format!(
                    "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                    codes.join(", ")
                ),
                json!({"CancellationReasons": reasons}),
            );
        }
        Verdict::Refuse(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.".into(),
            Value::Null,
        )
    }

    /// The keys a transaction will write outside its first partition key, for which the gate
    /// reads the previous images before forwarding it.
    pub fn skewed_keys(&self, op: &str, body: &Value) -> Vec<(String, Value)> {
        if op != "TransactWriteItems" || self.chaos.txn_skew_ms == 0 {
            return Vec::new();
        }
        let writes = Self::writes(op, body);
        let Some(first) = writes.first().and_then(|(t, item, _)| self.key_of(t, item)) else {
            return Vec::new();
        };
        let schemas = self.schemas.lock().expect("timing lock");
        writes
            .iter()
            .filter(|(t, item, _)| {
                self.key_of_locked(&schemas, t, item)
                    .is_some_and(|k| k.1 != first.1)
            })
            .filter_map(|(t, item, _)| {
                let (hash, range) = schemas.get(t)?;
                let mut key = serde_json::Map::new();
                key.insert(hash.clone(), item.get(hash)?.clone());
                if let Some(r) = range {
                    key.insert(r.clone(), item.get(r)?.clone());
                }
                Some((t.clone(), Value::Object(key)))
            })
            .collect()
    }

    fn key_of_locked(
        &self,
        schemas: &HashMap<String, (String, Option<String>)>,
        table: &str,
        item: &Value,
    ) -> Option<(String, String)> {
        let (hash, range) = schemas.get(table)?;
        let pk = item.get(hash)?.to_string();
        let sk = range
            .as_ref()
            .map(|r| item.get(r).map(Value::to_string).unwrap_or_default())
            .unwrap_or_default();
        Some((format!("{table}|{pk}|{sk}"), format!("{table}|{pk}")))
    }

    /// After a successful write: hides what a transaction wrote outside its first partition key
    /// (`before`: the images read before it), and forgets what a later write replaced.
    pub fn written(&self, op: &str, body: &Value, before: Vec<(String, Value, Option<Value>)>) {
        let mut hidden = self.hidden.lock().expect("timing lock");
        for (table, item, _) in Self::writes(op, body) {
            if let Some((k, _)) = self.key_of(&table, &item) {
                hidden.remove(&k);
            }
        }
        drop(hidden);
        if !before.is_empty() {
            let delay = rand::random_range(0..=self.chaos.txn_skew_ms);
            self.hide(before, Duration::from_millis(delay));
        }
    }

    /// Hides items from reads for `delay`, serving `before` meanwhile.
    fn hide(&self, before: Vec<(String, Value, Option<Value>)>, delay: Duration) {
        let mut hidden = self.hidden.lock().expect("timing lock");
        let until = Instant::now() + delay;
        let n = before.len() as u64;
        for (table, key, image) in before {
            if let Some((k, _)) = self.key_of(&table, &key) {
                hidden.insert(
                    k,
                    Hidden {
                        until,
                        before: image,
                    },
                );
            }
        }
        drop(hidden);
        self.stats.lock().expect("timing lock").items_skewed += n;
    }

    /// Whether a successful transaction is answered with a 500 instead.
    pub fn answer_500(&self, op: &str) -> bool {
        let hit = op == "TransactWriteItems"
            && self.chaos.sdk_retry > 0.0
            && rand::random::<f64>() < self.chaos.sdk_retry;
        if hit {
            self.stats
                .lock()
                .expect("timing lock")
                .successes_answered_500 += 1;
        }
        hit
    }

    /// Rewrites a read's answer so items not visible yet are served as they were before.
    /// Returns `None` when nothing changed.
    pub fn rewrite_read(&self, op: &str, body: &Value, answer: &[u8]) -> Option<Vec<u8>> {
        if !matches!(op, "GetItem" | "Query" | "Scan" | "BatchGetItem") {
            return None;
        }
        {
            let mut hidden = self.hidden.lock().expect("timing lock");
            let now = Instant::now();
            hidden.retain(|_, h| h.until > now);
            if hidden.is_empty() {
                return None;
            }
        }
        let mut doc: Value = serde_json::from_slice(answer).ok()?;
        let mut changed = 0u64;
        match op {
            "GetItem" => {
                let table = body["TableName"].as_str()?.to_string();
                if doc.get("Item").is_some() {
                    // By the key asked for: a projection may leave the key out of the answer.
                    match self.behind(&table, &body["Key"]) {
                        Some(Some(before)) => {
                            doc["Item"] = before;
                            changed += 1;
                        }
                        Some(None) => {
                            doc.as_object_mut()?.remove("Item");
                            changed += 1;
                        }
                        None => {}
                    }
                }
            }
            "Query" | "Scan" => {
                let table = body["TableName"].as_str()?.to_string();
                let partition = self.queried_partition(&table, body);
                if let Some(items) = doc.get_mut("Items").and_then(Value::as_array_mut) {
                    if let Some((hash, value)) = &partition {
                        // A projection may leave the partition key out; a Query names it.
                        for item in items.iter_mut() {
                            if let Some(o) = item.as_object_mut() {
                                o.entry(hash.clone()).or_insert_with(|| value.clone());
                            }
                        }
                    }
                    changed += self.rewrite_items(&table, items);
                    if let Some((hash, _)) = &partition
                        && !projects(body, hash)
                    {
                        for item in items.iter_mut() {
                            if let Some(o) = item.as_object_mut() {
                                o.remove(hash);
                            }
                        }
                    }
                    let count = items.len();
                    doc["Count"] = json!(count);
                }
            }
            _ => {
                if let Some(tables) = doc.get_mut("Responses").and_then(Value::as_object_mut) {
                    for (table, items) in tables.iter_mut() {
                        if let Some(items) = items.as_array_mut() {
                            changed += self.rewrite_items(table, items);
                        }
                    }
                }
            }
        }
        if changed == 0 {
            return None;
        }
        self.stats.lock().expect("timing lock").reads_behind += changed;
        serde_json::to_vec(&doc).ok()
    }

    /// The partition key attribute and value a Query's `KeyConditionExpression` names
    /// (`hash = :v`).
    fn queried_partition(&self, table: &str, body: &Value) -> Option<(String, Value)> {
        let hash = self
            .schemas
            .lock()
            .expect("timing lock")
            .get(table)?
            .0
            .clone();
        let value = crate::ledger::query_partition(&hash, body)?;
        Some((hash, value))
    }

    fn rewrite_items(&self, table: &str, items: &mut Vec<Value>) -> u64 {
        let mut changed = 0;
        let mut out = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            match self.behind(table, &item) {
                Some(Some(before)) => {
                    out.push(before);
                    changed += 1;
                }
                Some(None) => changed += 1,
                None => out.push(item),
            }
        }
        *items = out;
        changed
    }

    /// `Some(image)` when `item` is not visible yet: what to serve instead.
    fn behind(&self, table: &str, item: &Value) -> Option<Option<Value>> {
        let (k, _) = self.key_of(table, item)?;
        let hidden = self.hidden.lock().expect("timing lock");
        let h = hidden.get(&k)?;
        (h.until > Instant::now()).then(|| h.before.clone())
    }
}

/// Whether a read's `ProjectionExpression` (none: every attribute) returns `attribute`.
fn projects(body: &Value, attribute: &str) -> bool {
    match body["ProjectionExpression"].as_str() {
        None => true,
        Some(p) => p.split(',').any(|a| {
            let a = a.trim();
            a == attribute
                || body["ExpressionAttributeNames"]
                    .get(a)
                    .and_then(Value::as_str)
                    == Some(attribute)
        }),
    }
}

/// Write units of an item (or key, or attribute values) as DynamoDB bills them: one per KB or
/// part of it, from attribute names and values.
fn units(v: &Value) -> f64 {
    crate::ledger::write_units(crate::ledger::item_bytes(v)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(chaos: DynamoChaos) -> DynamoTiming {
        let t = DynamoTiming::new(chaos);
        t.learn("logs", "execution_id".into(), Some("log_index".into()));
        t
    }

    fn put(pk: &str, sk: u64, bytes: usize) -> Value {
        json!({"Put": {"TableName": "logs", "Item": {
            "execution_id": {"S": pk}, "log_index": {"N": sk.to_string()},
            "data": {"S": "x".repeat(bytes)}}}})
    }

    #[test]
    fn a_partition_key_takes_its_units_a_second_then_is_throttled() {
        let t = timing(DynamoChaos {
            throttle_wcu: Some(100),
            ..DynamoChaos::default()
        });
        // 10 KB twice (a transaction): 20 units a call; 100 a second.
        let body = json!({"TransactItems": [put("e1", 1, 10 * 1024 - 40)]});
        let passed = (0..10)
            .filter(|_| matches!(t.admit("TransactWriteItems", &body), Verdict::Pass))
            .count();
        assert_eq!(passed, 5);
        match t.admit("TransactWriteItems", &body) {
            Verdict::Refuse(400, "TransactionCanceledException", msg, extra) => {
                assert!(msg.contains("ThrottlingError"), "{msg}");
                assert_eq!(extra["CancellationReasons"][0]["Code"], "ThrottlingError");
            }
            _ => panic!("throttled"),
        }
        // Another partition key has its own units.
        let other = json!({"TransactItems": [put("e2", 1, 100)]});
        assert!(matches!(
            t.admit("TransactWriteItems", &other),
            Verdict::Pass
        ));
        let single = json!({"TableName": "logs", "Item": {"execution_id": {"S": "e1"}, "log_index": {"N": "2"}}});
        assert!(matches!(
            t.admit("PutItem", &single),
            Verdict::Refuse(400, "ProvisionedThroughputExceededException", ..)
        ));
        assert_eq!(t.stats().writes_throttled, 7);
    }

    #[test]
    fn items_outside_the_first_partition_key_are_read_as_before_until_visible() {
        let t = timing(DynamoChaos {
            txn_skew_ms: 60_000,
            ..DynamoChaos::default()
        });
        let body =
            json!({"TransactItems": [put("e1", 0, 10), put("e1", 1, 10), put("e1#ids#0", 5, 10)]});
        let keys = t.skewed_keys("TransactWriteItems", &body);
        assert_eq!(keys.len(), 1, "only the record is under another key");
        let before = keys.into_iter().map(|(t, k)| (t, k, None)).collect();
        t.hide(before, Duration::from_secs(60));
        let record =
            json!({"execution_id": {"S": "e1#ids#0"}, "log_index": {"N": "5"}, "ids": {"S": "a"}});
        let query = json!({"Items": [record], "Count": 1});
        let head = json!({"Item": {"execution_id": {"S": "e1"}, "log_index": {"N": "0"}}});
        let h = t.rewrite_read(
            "GetItem",
            &json!({"TableName": "logs"}),
            head.to_string().as_bytes(),
        );
        assert!(h.is_none(), "the first partition key is visible at once");
        let q = t
            .rewrite_read(
                "Query",
                &json!({"TableName": "logs"}),
                query.to_string().as_bytes(),
            )
            .expect("rewritten");
        let q: Value = serde_json::from_slice(&q).unwrap();
        assert_eq!(q["Count"], 0);
        assert_eq!(q["Items"], json!([]));
        assert_eq!(t.stats().reads_behind, 1);
        // A later write of the same item makes it visible.
        let again = json!({"TableName": "logs", "Item": record});
        t.written("PutItem", &again, Vec::new());
        assert!(
            t.rewrite_read(
                "Query",
                &json!({"TableName": "logs"}),
                query.to_string().as_bytes()
            )
            .is_none()
        );
    }

    #[test]
    fn item_sizes_are_billed_per_kb() {
        assert_eq!(units(&json!({"a": {"S": "x"}})), 1.0);
        assert_eq!(units(&json!({"a": {"S": "x".repeat(1023)}})), 1.0);
        assert_eq!(units(&json!({"a": {"S": "x".repeat(1024)}})), 2.0);
        assert_eq!(units(&json!({"n": {"N": "123456"}})), 1.0);
    }
}
