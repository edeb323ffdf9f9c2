//! Metrics in CloudWatch Embedded Metric Format: counters accumulate during an invocation and
//! are printed as one JSON line at its end, which CloudWatch turns into metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use runvoy_core::ports::{Metric, Metrics};
use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "runvoy";

/// Wall-clock milliseconds, for EMF timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug)]
pub struct EmfMetrics {
    function: String,
    counters: Mutex<BTreeMap<Metric, u64>>,
    lag_ms: Mutex<Option<i64>>,
}

impl EmfMetrics {
    pub fn new(function: &str) -> EmfMetrics {
        EmfMetrics {
            function: function.to_string(),
            counters: Mutex::default(),
            lag_ms: Mutex::default(),
        }
    }

    /// Records end-to-end lag (now − the newest event's timestamp); the highest of an
    /// invocation is reported.
    pub fn lag(&self, ms: i64) {
        let mut l = self.lag_ms.lock().expect("lag lock");
        *l = Some(l.map_or(ms, |v| v.max(ms)));
    }

    /// The EMF document for what was counted since the last call, and a reset; `None` if
    /// nothing was counted.
    pub fn take(&self, now_ms: i64) -> Option<Value> {
        let counters = std::mem::take(&mut *self.counters.lock().expect("metrics lock"));
        let lag = self.lag_ms.lock().expect("lag lock").take();
        if counters.is_empty() && lag.is_none() {
            return None;
        }
        let mut doc = Map::new();
        let mut defs = Vec::new();
        for (m, v) in &counters {
            doc.insert(m.name().into(), json!(v));
            defs.push(json!({"Name": m.name(), "Unit": "Count"}));
        }
        if let Some(l) = lag {
            doc.insert("end_to_end_lag_ms".into(), json!(l));
            defs.push(json!({"Name": "end_to_end_lag_ms", "Unit": "Milliseconds"}));
        }
        doc.insert("function".into(), json!(self.function));
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["function"]],
                    "Metrics": defs,
                }],
            }),
        );
        Some(Value::Object(doc))
    }

    /// Prints the EMF line (Lambda sends stdout to CloudWatch Logs).
    pub fn flush(&self, now_ms: i64) {
        if let Some(doc) = self.take(now_ms) {
            println!("{doc}");
        }
    }
}

impl Metrics for EmfMetrics {
    fn incr(&self, metric: Metric, by: u64) {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry(metric)
            .or_insert(0) += by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_one_emf_document_per_flush() {
        let m = EmfMetrics::new("forwarder");
        assert!(m.take(1).is_none());
        m.incr(Metric::EventsAppended, 3);
        m.incr(Metric::EventsAppended, 2);
        m.lag(40);
        m.lag(25);
        let doc = m.take(1_700_000_000_000).unwrap();
        assert_eq!(doc["events_appended"], 5);
        assert_eq!(doc["end_to_end_lag_ms"], 40);
        assert_eq!(doc["function"], "forwarder");
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "runvoy");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(m.take(2).is_none(), "counters reset after a flush");
    }
}
