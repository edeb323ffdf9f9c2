//! The subscription filter, emulated: reads what CloudWatch Logs (moto) ingested into the runner
//! group, in ingestion order, and invokes the destination function asynchronously with
//! CloudWatch-shaped payloads — one stream per batch, at most 10,000 events and 1 MB, gzipped
//! and base64-encoded, with CloudWatch-style event ids. A stream's batches are delivered one
//! after another (`--chaos dup`, `drop` duplicate and drop them in that order); with `reorder`
//! or `delay-ms` they are also held back and delayed, and run concurrently, as spec §3.2 allows. Failed deliveries follow Lambda's asynchronous retries and end
//! in the on-failure destination.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use runvoy_local::Chaos;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::lambda::{AsyncConfig, Function};
use crate::trace::{DeliveryId, Trace};

/// CloudWatch's batch limits for a subscription delivery.
pub const MAX_BATCH_EVENTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// CloudWatch counts 26 bytes of overhead per event.
const EVENT_OVERHEAD: usize = 26;

/// One event as the feed returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub stream: String,
    pub id: String,
    pub timestamp: i64,
    pub message: String,
}

/// Where the filter reads from and delivers to.
pub struct Filter {
    pub moto: String,
    pub group: String,
    pub name: String,
    pub owner: String,
    pub region: String,
    pub destination: Arc<Function>,
    pub config: AsyncConfig,
    pub chaos: Chaos,
    /// Told about in-order deliveries when it is on.
    pub trace: Arc<Trace>,
}

/// Where one stream's payloads go to be delivered in order, traced or not.
type Batches = mpsc::UnboundedSender<(Vec<u8>, Option<DeliveryId>)>;

/// A running subscription filter.
pub struct Subscription {
    poke: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    pub fn start(filter: Filter) -> Subscription {
        let poke = Arc::new(Notify::new());
        let task = tokio::spawn(run(Arc::new(filter), poke.clone()));
        Subscription { poke, task }
    }

    /// Something was just written: read the feed now instead of at the next tick.
    pub fn poke(&self) {
        self.poke.notify_one();
    }
}

async fn run(filter: Arc<Filter>, poke: Arc<Notify>) {
    let http = reqwest::Client::new();
    let mut after: u64 = 0;
    let mut streams: HashMap<String, Batches> = HashMap::new();
    let control = payload(
        &filter,
        "CONTROL_MESSAGE",
        "",
        &[Ingested {
            stream: String::new(),
            id: cloudwatch_id(crate::lambda::now_ms(), 0),
            timestamp: crate::lambda::now_ms(),
            message: "CWL CONTROL MESSAGE: Checking health of destination Lambda.".into(),
        }],
    );
    tokio::spawn(
        filter
            .destination
            .clone()
            .invoke_async(control, filter.config.clone()),
    );
    let mut held: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            _ = poke.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        loop {
            let page = match read(&http, &filter, after).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("sim: the subscription filter cannot read the log group: {e}");
                    break;
                }
            };
            let (next, events) = page;
            after = next;
            if events.is_empty() {
                break;
            }
            for batch in batches(events) {
                let body = payload(&filter, "DATA_MESSAGE", &batch[0].stream, &batch);
                if filter.chaos.in_order() {
                    let roll = |p: f64| p > 0.0 && rand::random::<f64>() < p;
                    if roll(filter.chaos.drop) {
                        continue;
                    }
                    let stream = batch[0].stream.clone();
                    let traced = if filter.trace.is_on() {
                        let events: Vec<(i64, &str)> = batch
                            .iter()
                            .map(|e| (e.timestamp, e.message.as_str()))
                            .collect();
                        filter
                            .trace
                            .delivery(&stream, &filter.destination.spec.name, &events)
                    } else {
                        None
                    };
                    let tx = streams
                        .entry(stream)
                        .or_insert_with(|| in_order(filter.clone()));
                    if roll(filter.chaos.dup) {
                        let _ = tx.send((body.clone(), None));
                    }
                    let _ = tx.send((body, traced));
                } else {
                    chaotic(&filter, body, &mut held);
                }
            }
        }
    }
}

/// Delivers one stream's batches one after another; a failed one is retried in the background
/// while later ones go on (so it arrives late, as on AWS). Tells the trace when a traced one is
/// invoked, started and ended.
fn in_order(filter: Arc<Filter>) -> Batches {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Option<DeliveryId>)>();
    tokio::spawn(async move {
        while let Some((body, traced)) = rx.recv().await {
            let f = filter.destination.clone();
            let dup = filter.config.duplicate;
            if dup > 0.0 && rand::random::<f64>() < dup {
                let config = AsyncConfig {
                    duplicate: 0.0,
                    ..filter.config.clone()
                };
                tokio::spawn(f.clone().invoke_async(body.clone(), config));
            }
            filter.trace.invoked(traced);
            let trace = &filter.trace;
            let result = f
                .invoke_observed(body.clone(), || trace.started(traced))
                .await;
            filter.trace.ended(traced);
            if let Err(e) = result {
                tokio::spawn(f.retry_async(body, filter.config.clone(), e));
            }
        }
    });
    tx
}

/// Duplicates, holds back, drops and delays deliveries, concurrently (as the local stack's
/// emulator does: [`runvoy_local::chaos::Chaos::scatter`]).
fn chaotic(filter: &Arc<Filter>, body: Vec<u8>, held: &mut Option<Vec<u8>>) {
    for (body, delay) in filter.chaos.scatter(body, held) {
        let f = filter.destination.clone();
        let config = filter.config.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = f.invoke_async(body, config).await;
        });
    }
}

async fn read(
    http: &reqwest::Client,
    filter: &Filter,
    after: u64,
) -> Result<(u64, Vec<Ingested>), String> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/_sim/ingested", filter.moto.trim_end_matches('/')),
        &[
            ("group", filter.group.as_str()),
            ("after", &after.to_string()),
            ("account", &filter.owner),
            ("region", &filter.region),
        ],
    )
    .map_err(|e| e.to_string())?;
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(format!(
            "{} has no ingestion feed; start moto with scripts/moto-server (the sim's own moto does)",
            filter.moto
        ));
    }
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    let next = v["next"].as_u64().unwrap_or(after);
    let events = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let ts = e[2].as_i64().unwrap_or(0);
            Ingested {
                stream: e[0].as_str().unwrap_or_default().to_string(),
                id: cloudwatch_id(ts, e[1].as_u64().unwrap_or(0)),
                timestamp: ts,
                message: e[3].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect();
    Ok((next, events))
}

/// A 56-digit id like CloudWatch's, stable for one ingested event.
pub fn cloudwatch_id(timestamp: i64, seq: u64) -> String {
    format!("{:020}{seq:036}", timestamp.max(0))
}

/// Splits events (ingestion order) into per-stream batches within CloudWatch's limits, keeping
/// each stream's order.
pub fn batches(events: Vec<Ingested>) -> Vec<Vec<Ingested>> {
    let mut out: Vec<Vec<Ingested>> = Vec::new();
    let mut open: HashMap<String, (usize, usize)> = HashMap::new();
    for e in events {
        let size = e.message.len() + EVENT_OVERHEAD;
        let slot = open.get(&e.stream).copied().filter(|(i, bytes)| {
            out[*i].len() < MAX_BATCH_EVENTS && bytes + size <= MAX_BATCH_BYTES
        });
        match slot {
            Some((i, bytes)) => {
                open.insert(e.stream.clone(), (i, bytes + size));
                out[i].push(e);
            }
            None => {
                open.insert(e.stream.clone(), (out.len(), size));
                out.push(vec![e]);
            }
        }
    }
    out
}

/// `{"awslogs":{"data": base64(gzip(json))}}` as CloudWatch Logs invokes Lambda.
fn payload(filter: &Filter, kind: &str, stream: &str, events: &[Ingested]) -> Vec<u8> {
    let doc = json!({
        "messageType": kind,
        "owner": if kind == "DATA_MESSAGE" { filter.owner.as_str() } else { "CloudwatchLogs" },
        "logGroup": filter.group,
        "logStream": stream,
        "subscriptionFilters": [filter.name],
        "logEvents": events.iter().map(|e| json!({"id": e.id, "timestamp": e.timestamp, "message": e.message})).collect::<Vec<_>>(),
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(doc.to_string().as_bytes())
        .expect("writing to memory");
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("memory"));
    json!({"awslogs": {"data": data}}).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(stream: &str, n: usize, len: usize) -> Ingested {
        Ingested {
            stream: stream.into(),
            id: cloudwatch_id(1, n as u64),
            timestamp: 1,
            message: "x".repeat(len),
        }
    }

    #[test]
    fn batches_hold_one_stream_within_the_limits_in_order() {
        let mut events = Vec::new();
        for n in 0..25_000 {
            events.push(ev(if n % 2 == 0 { "a" } else { "b" }, n, 1));
        }
        let b = batches(events);
        assert!(b.iter().all(|x| x.len() <= MAX_BATCH_EVENTS));
        assert!(b.iter().all(|x| x.iter().all(|e| e.stream == x[0].stream)));
        let a: Vec<String> = b
            .iter()
            .filter(|x| x[0].stream == "a")
            .flatten()
            .map(|e| e.id.clone())
            .collect();
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(a, sorted, "a stream's order is kept across batches");
        assert_eq!(a.len(), 12_500);

        let big = batches((0..5).map(|n| ev("a", n, 400 * 1024)).collect());
        assert_eq!(
            big.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1],
            "1 MB per batch"
        );
        assert_eq!(cloudwatch_id(1_700_000_000_000, 7).len(), 56);
    }
}
