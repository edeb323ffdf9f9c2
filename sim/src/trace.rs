//! The delivery trace: where a line's time goes between the subscription filter and the pushes
//! that carry it. For every line of a traced delivery: when its batch was made, when the sim
//! invoked the destination function with it, when that invocation started (the runtime took
//! the event) and ended, the function's calls to moto meanwhile, and when each push carrying
//! the line left a function for a WebSocket connection (`@connections` POST received).
//!
//! Off until `POST /local/v1/sim/deliveries` (which also clears it); read with
//! `GET /local/v1/sim/deliveries?execution=ID`. Bounded: at most `max_records` lines, pushes
//! and moto calls are kept, and what did not fit is counted (`dropped`). Times are wall-clock
//! milliseconds with microseconds, so they compare with what a client on the same machine
//! records. Lines are named by the event id the forwarder derives
//! (`"{timestamp}-{ordinal}-{digest}"`, as `runvoy_aws::identity` does), the id pushes carry.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Records kept when `POST /local/v1/sim/deliveries` does not say.
pub const DEFAULT_MAX_RECORDS: usize = 1_000_000;

/// A traced delivery, as [`Trace::delivery`] handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryId(usize);

struct Delivery {
    execution: String,
    function: String,
    lines: usize,
    made_us: i64,
    invoked_us: Option<i64>,
    started_us: Option<i64>,
    ended_us: Option<i64>,
}

struct Push {
    at_us: i64,
    connection: String,
    peer_port: u16,
    function: String,
}

struct Line {
    event_id: String,
    timestamp: i64,
    delivery: usize,
    pushes: Vec<Push>,
}

#[derive(Default)]
struct Execution {
    lines: Vec<Line>,
    by_id: HashMap<String, usize>,
}

struct MotoCall {
    start_us: i64,
    end_us: i64,
    op: String,
}

#[derive(Default)]
struct Inner {
    max_records: usize,
    records: usize,
    dropped: u64,
    /// Pushes of `logs` carrying no traced line (sent before the trace began, or lines that
    /// reached the store another way: reconciliation).
    untraced_pushes: u64,
    deliveries: Vec<Delivery>,
    executions: HashMap<String, Execution>,
    /// Functions that received a traced delivery, and their calls to moto.
    traced_functions: HashSet<String>,
    moto: HashMap<String, Vec<MotoCall>>,
}

impl Inner {
    fn room(&mut self) -> bool {
        if self.records < self.max_records {
            self.records += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

pub struct Trace {
    on: AtomicBool,
    /// The runner streams' name, `{execution_id}` in it (`task/runner/{execution_id}`).
    stream_template: String,
    inner: Mutex<Inner>,
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

impl Trace {
    pub fn new(stream_template: &str) -> Trace {
        Trace {
            on: AtomicBool::new(false),
            stream_template: stream_template.to_string(),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("trace lock")
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Starts tracing, forgetting what an earlier trace kept.
    pub fn start(&self, max_records: usize) {
        *self.lock() = Inner {
            max_records,
            ..Inner::default()
        };
        self.on.store(true, Ordering::Relaxed);
    }

    /// The execution a runner stream belongs to.
    fn execution_of<'a>(&self, stream: &'a str) -> Option<&'a str> {
        let (prefix, suffix) = self.stream_template.split_once("{execution_id}")?;
        stream.strip_prefix(prefix)?.strip_suffix(suffix)
    }

    /// A batch of `(timestamp, message)` of `stream` is made for `function`; `None` when the
    /// trace is off or the stream is no runner's.
    pub fn delivery(
        &self,
        stream: &str,
        function: &str,
        events: &[(i64, &str)],
    ) -> Option<DeliveryId> {
        if !self.is_on() {
            return None;
        }
        let execution = self.execution_of(stream)?.to_string();
        let ids = forwarder_ids(events);
        let mut inner = self.lock();
        let id = inner.deliveries.len();
        inner.deliveries.push(Delivery {
            execution: execution.clone(),
            function: function.to_string(),
            lines: events.len(),
            made_us: now_us(),
            invoked_us: None,
            started_us: None,
            ended_us: None,
        });
        inner.traced_functions.insert(function.to_string());
        for (event_id, (timestamp, _)) in ids.into_iter().zip(events) {
            let known = inner
                .executions
                .get(&execution)
                .is_some_and(|e| e.by_id.contains_key(&event_id));
            // A line delivered again keeps its first delivery.
            if known || !inner.room() {
                continue;
            }
            let e = inner.executions.entry(execution.clone()).or_default();
            e.by_id.insert(event_id.clone(), e.lines.len());
            e.lines.push(Line {
                event_id,
                timestamp: *timestamp,
                delivery: id,
                pushes: Vec::new(),
            });
        }
        Some(DeliveryId(id))
    }

    fn set(&self, id: Option<DeliveryId>, field: fn(&mut Delivery) -> &mut Option<i64>) {
        if let Some(DeliveryId(i)) = id {
            let now = now_us();
            if let Some(d) = self.lock().deliveries.get_mut(i) {
                field(d).get_or_insert(now);
            }
        }
    }

    /// The sim invokes the function with the delivery.
    pub fn invoked(&self, id: Option<DeliveryId>) {
        self.set(id, |d| &mut d.invoked_us);
    }

    /// The function's runtime took the delivery.
    pub fn started(&self, id: Option<DeliveryId>) {
        self.set(id, |d| &mut d.started_us);
    }

    /// The invocation ended.
    pub fn ended(&self, id: Option<DeliveryId>) {
        self.set(id, |d| &mut d.ended_us);
    }

    /// A call of `function` to moto (kept for functions that receive traced deliveries).
    pub fn moto_call(&self, function: &str, op: &str, start_us: i64, end_us: i64) {
        if !self.is_on() {
            return;
        }
        let mut inner = self.lock();
        if !inner.traced_functions.contains(function) || !inner.room() {
            return;
        }
        inner
            .moto
            .entry(function.to_string())
            .or_default()
            .push(MotoCall {
                start_us,
                end_us,
                op: op.to_string(),
            });
    }

    /// A push `function` sent to `connection` (whose client's port is `peer_port`) at `at_us`.
    pub fn push(&self, function: &str, connection: &str, peer_port: u16, at_us: i64, body: &[u8]) {
        if !self.is_on() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        if v["type"] != "logs" {
            return;
        }
        let execution = v["execution_id"].as_str().unwrap_or_default();
        let mut inner = self.lock();
        for event in v["events"].as_array().into_iter().flatten() {
            let id = event["event_id"].as_str().unwrap_or_default();
            let Some(line) = inner
                .executions
                .get(execution)
                .and_then(|e| e.by_id.get(id).copied())
            else {
                inner.untraced_pushes += 1;
                continue;
            };
            if !inner.room() {
                continue;
            }
            if let Some(e) = inner.executions.get_mut(execution) {
                e.lines[line].pushes.push(Push {
                    at_us,
                    connection: connection.to_string(),
                    peer_port,
                    function: function.to_string(),
                });
            }
        }
    }

    /// One execution's traced lines and deliveries. Each push says how long the delivery's
    /// function spent in moto between the sim invoking it and the push (`moto_ms`: the time at
    /// least one of its calls was in flight): exact when that function ran one invocation at a
    /// time meanwhile, else an over-count.
    pub fn report(&self, execution: &str) -> Value {
        let inner = self.lock();
        let mut moto: HashMap<&str, Vec<&MotoCall>> = HashMap::new();
        for (f, calls) in &inner.moto {
            let mut sorted: Vec<&MotoCall> = calls.iter().collect();
            sorted.sort_by_key(|c| c.start_us);
            moto.insert(f.as_str(), sorted);
        }
        let in_moto = |function: &str, from: i64, to: i64| -> (i64, usize) {
            let calls = moto.get(function).map_or(&[][..], Vec::as_slice);
            let end = calls.partition_point(|c| c.start_us < to);
            // The time at least one call was in flight (calls made side by side overlap).
            let (mut us, mut n, mut reached) = (0, 0, from);
            for c in calls[..end].iter().filter(|c| c.end_us > from) {
                let (start, stop) = (c.start_us.max(reached), c.end_us.min(to));
                if stop > start {
                    us += stop - start;
                    reached = stop;
                }
                n += 1;
            }
            (us, n)
        };
        let mut index: HashMap<usize, usize> = HashMap::new();
        let mut deliveries = Vec::new();
        for (i, d) in inner.deliveries.iter().enumerate() {
            if d.execution != execution {
                continue;
            }
            index.insert(i, deliveries.len());
            let (moto_us, calls) = match (d.started_us, d.ended_us) {
                (Some(s), Some(e)) => in_moto(&d.function, s, e),
                _ => (0, 0),
            };
            let mut ops: HashMap<&str, (i64, u64)> = HashMap::new();
            if let (Some(s), Some(e)) = (d.started_us, d.ended_us) {
                let list = moto.get(d.function.as_str()).map_or(&[][..], Vec::as_slice);
                for c in list.iter().filter(|c| c.start_us < e && c.end_us > s) {
                    let o = ops.entry(c.op.as_str()).or_default();
                    o.0 += c.end_us - c.start_us;
                    o.1 += 1;
                }
            }
            deliveries.push(json!({
                "function": d.function,
                "lines": d.lines,
                "made_ms": ms(d.made_us),
                "invoked_ms": d.invoked_us.map(ms),
                "started_ms": d.started_us.map(ms),
                "ended_ms": d.ended_us.map(ms),
                "moto_ms": ms(moto_us),
                "moto_calls": calls,
                "moto_by_op": ops.into_iter().map(|(op, (us, n))| (op.to_string(), json!({"ms": ms(us), "calls": n}))).collect::<serde_json::Map<_, _>>(),
            }));
        }
        let lines: Vec<Value> = inner
            .executions
            .get(execution)
            .map(|e| e.lines.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|l| {
                let d = &inner.deliveries[l.delivery];
                let pushes: Vec<Value> = l
                    .pushes
                    .iter()
                    .map(|p| {
                        let from = d.invoked_us.unwrap_or(d.made_us);
                        let (moto_us, _) = in_moto(&d.function, from, p.at_us);
                        json!({
                            "at_ms": ms(p.at_us),
                            "connection": p.connection,
                            "peer_port": p.peer_port,
                            "function": p.function,
                            "moto_ms": ms(moto_us),
                        })
                    })
                    .collect();
                json!({
                    "event_id": l.event_id,
                    "timestamp": l.timestamp,
                    "delivery": index.get(&l.delivery),
                    "pushes": pushes,
                })
            })
            .collect();
        json!({
            "execution": execution,
            "on": self.is_on(),
            "max_records": inner.max_records,
            "records": inner.records,
            "dropped": inner.dropped,
            "untraced_pushes": inner.untraced_pushes,
            "deliveries": deliveries,
            "lines": lines,
        })
    }
}

/// The ids the forwarder gives a batch's events: `"{timestamp}-{ordinal}-{digest}"`, the
/// ordinal counting identical lines of one millisecond before this one in the batch, the digest
/// 32 hex digits of the SHA-256 of the message (`runvoy_aws::identity::with_ids`).
pub fn forwarder_ids(events: &[(i64, &str)]) -> Vec<String> {
    let mut seen: HashMap<(i64, String), u32> = HashMap::new();
    events
        .iter()
        .map(|(timestamp, message)| {
            let d = Sha256::digest(message.as_bytes());
            let digest: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
            let ordinal = seen.entry((*timestamp, digest.clone())).or_insert(0);
            let id = format!("{timestamp}-{ordinal}-{digest}");
            *ordinal += 1;
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_forwarders() {
        let events = [(1, "x"), (1, "x"), (1, "y"), (2, "x")];
        let ours = forwarder_ids(&events);
        let theirs: Vec<String> = runvoy_aws::identity::with_ids(
            events.iter().map(|(t, m)| (*t, m.to_string())).collect(),
        )
        .into_iter()
        .map(|e| e.event_id)
        .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_line_is_followed_from_delivery_to_push_within_bounds() {
        let t = Trace::new("task/runner/{execution_id}");
        assert!(
            t.delivery("task/runner/e1", "fwd", &[(1, "a")]).is_none(),
            "off"
        );
        t.start(4);
        assert!(t.delivery("other/e1", "fwd", &[(1, "a")]).is_none());
        let d = t.delivery("task/runner/e1", "fwd", &[(1, "a"), (1, "b")]);
        t.invoked(d);
        t.started(d);
        // A call of a millisecond after the invocation, then the push.
        let at = now_us() + 3_000;
        t.moto_call("fwd", "dynamodb:Query", at - 2_000, at - 1_000);
        t.moto_call("api", "dynamodb:Query", at - 2_000, at - 1_000);
        let id = forwarder_ids(&[(1, "a")]).remove(0);
        let push = json!({"type": "logs", "execution_id": "e1", "events": [
            {"index": 1, "event_id": id, "timestamp": 1, "message": "a"},
            {"index": 9, "event_id": "unknown", "timestamp": 1, "message": "z"}]});
        t.push("fwd", "c1", 5000, at, push.to_string().as_bytes());
        t.ended(d);
        // Two lines, one moto call, one push: 4 records; the next push does not fit.
        t.push("fwd", "c2", 5001, at, push.to_string().as_bytes());
        let r = t.report("e1");
        assert_eq!(r["lines"].as_array().unwrap().len(), 2);
        assert_eq!(r["untraced_pushes"], 2);
        assert_eq!(r["dropped"], 1);
        let p = &r["lines"][0]["pushes"][0];
        assert_eq!(
            (p["connection"].as_str(), p["peer_port"].as_u64()),
            (Some("c1"), Some(5000))
        );
        assert_eq!(p["moto_ms"], 1.0, "the function's call before the push");
        assert_eq!(r["deliveries"][0]["lines"], 2);
        assert!(r["deliveries"][0]["started_ms"].as_f64().is_some());
        assert_eq!(r["lines"][1]["pushes"], json!([]));
    }

    #[test]
    fn calls_side_by_side_count_once() {
        let t = Trace::new("task/runner/{execution_id}");
        t.start(100);
        let d = t.delivery("task/runner/e1", "fwd", &[(1, "a")]);
        t.invoked(d);
        t.started(d);
        let at = now_us() + 10_000;
        // Two calls overlapping by half a millisecond, then one alone: 2.5 ms of moto.
        t.moto_call("fwd", "dynamodb:UpdateItem", at - 5_000, at - 4_000);
        t.moto_call("fwd", "dynamodb:UpdateItem", at - 4_500, at - 3_500);
        t.moto_call("fwd", "dynamodb:UpdateItem", at - 2_000, at - 1_000);
        let id = forwarder_ids(&[(1, "a")]).remove(0);
        let push = json!({"type": "logs", "execution_id": "e1", "events": [
            {"index": 1, "event_id": id, "timestamp": 1, "message": "a"}]});
        t.push("fwd", "c1", 5000, at, push.to_string().as_bytes());
        t.ended(d);
        let r = t.report("e1");
        assert_eq!(r["lines"][0]["pushes"][0]["moto_ms"], 2.5);
    }
}
