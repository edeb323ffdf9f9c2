//! What the sim's units cost: the price table (`bench/prices.toml`, AWS list prices with their
//! sources) and the arithmetic from the sim's `billing` counters to dollars per service.

use serde::Deserialize;
use serde_json::Value;

/// The table as the repository holds it (what the tests check); `bench cost` reads the file at
/// run time, so an edited price needs no rebuild.
const IN_REPO: &str = include_str!("../prices.toml");

/// Every price the bench needs.
const KEYS: [&str; 12] = [
    "dynamodb_write_request_units",
    "dynamodb_read_request_units",
    "lambda_requests",
    "lambda_gb_seconds_arm64",
    "lambda_gb_seconds_x86_64",
    "websocket_messages",
    "websocket_connection_minutes",
    "http_api_requests",
    "logs_ingestion_gb",
    "lambda_logs_gb",
    "logs_api_requests",
    "live_tail_minutes",
];

/// CloudWatch Logs counts 26 bytes per event on top of its message.
const LOG_EVENT_OVERHEAD: f64 = 26.0;
const GB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Deserialize)]
pub struct Prices {
    pub region: String,
    pub price: Vec<Price>,
}

#[derive(Debug, Deserialize)]
pub struct Price {
    pub key: String,
    pub service: String,
    pub unit: String,
    /// The price of `per` units.
    pub usd: f64,
    pub per: f64,
    pub source: String,
    pub checked: String,
    pub note: String,
}

impl Prices {
    /// `bench/prices.toml` (or `RUNVOY_BENCH_PRICES`), checked.
    pub fn load() -> Prices {
        let path =
            std::env::var("RUNVOY_BENCH_PRICES").unwrap_or_else(|_| "bench/prices.toml".into());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| IN_REPO.to_string());
        Prices::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub fn parse(text: &str) -> Result<Prices, String> {
        let p: Prices = toml::from_str(text).map_err(|e| e.to_string())?;
        for key in KEYS {
            let price = p
                .price
                .iter()
                .find(|x| x.key == key)
                .ok_or_else(|| format!("no price `{key}`"))?;
            if !(price.usd >= 0.0 && price.per > 0.0) {
                return Err(format!("`{key}`: usd must be ≥ 0 and per > 0"));
            }
            if !price.source.starts_with("https://") || price.checked.is_empty() {
                return Err(format!("`{key}`: every price names its source and date"));
            }
        }
        Ok(p)
    }

    fn get(&self, key: &str) -> &Price {
        self.price
            .iter()
            .find(|p| p.key == key)
            .expect("checked by parse")
    }

    /// The price of `units` of `key`.
    pub fn usd(&self, key: &str, units: f64) -> f64 {
        let p = self.get(key);
        units / p.per * p.usd
    }

    /// What `units` cost, by service.
    pub fn bill(&self, u: &Units) -> Bill {
        Bill {
            dynamodb: self.usd("dynamodb_write_request_units", u.write_units)
                + self.usd("dynamodb_read_request_units", u.read_units),
            lambda: self.usd("lambda_requests", u.lambda_requests)
                + self.usd("lambda_gb_seconds_arm64", u.gb_seconds),
            websocket: self.usd("websocket_messages", u.ws_messages)
                + self.usd("websocket_connection_minutes", u.ws_connection_minutes),
            http_api: self.usd("http_api_requests", u.http_requests),
            logs_api: self.usd("logs_api_requests", u.logs_api_calls),
            lambda_logs: self.usd("lambda_logs_gb", u.function_log_bytes / GB),
            ingestion: self.usd("logs_ingestion_gb", u.ingested_bytes / GB),
        }
    }

    /// Live Tail for `followers` watching `minutes`.
    pub fn live_tail(&self, followers: f64, minutes: f64) -> f64 {
        self.usd("live_tail_minutes", followers * minutes)
    }
}

/// Billed units, as the sim's `billing` counts them (all functions together).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Units {
    pub write_units: f64,
    pub read_units: f64,
    pub lambda_requests: f64,
    pub gb_seconds: f64,
    /// In 32 KB units.
    pub ws_messages: f64,
    pub ws_connection_minutes: f64,
    /// In 512 KB units.
    pub http_requests: f64,
    /// The functions' calls to the CloudWatch Logs API (`GetLogEvents`).
    pub logs_api_calls: f64,
    /// What the functions wrote to their logs, 26 bytes an event included.
    pub function_log_bytes: f64,
    /// What the producers ingested, 26 bytes an event included.
    pub ingested_bytes: f64,
}

impl Units {
    /// From the `billing` object of `/local/v1/sim/stats`.
    pub fn from_billing(b: &Value) -> Units {
        let sum = |section: &Value, field: &str| -> f64 {
            section
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, f)| f[field].as_f64().unwrap_or(0.0))
                .sum()
        };
        let n = |v: &Value| v.as_f64().unwrap_or(0.0);
        let logs_api_calls = b["cloudwatch_logs"]["api_calls"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, calls)| calls.as_object().into_iter().flatten())
            .map(|(_, c)| n(c))
            .sum();
        Units {
            write_units: sum(&b["dynamodb"], "write_units"),
            read_units: sum(&b["dynamodb"], "read_units"),
            lambda_requests: sum(&b["lambda"], "requests"),
            gb_seconds: sum(&b["lambda"], "gb_seconds"),
            ws_messages: n(&b["websocket"]["message_units"]),
            ws_connection_minutes: n(&b["websocket"]["connection_minutes"]),
            http_requests: n(&b["http_api"]["request_units"]),
            logs_api_calls,
            function_log_bytes: sum(&b["lambda"], "log_bytes")
                + LOG_EVENT_OVERHEAD * sum(&b["lambda"], "log_events"),
            ingested_bytes: n(&b["cloudwatch_logs"]["ingested_bytes"]),
        }
    }

    fn zip(self, o: Units, f: impl Fn(f64, f64) -> f64) -> Units {
        Units {
            write_units: f(self.write_units, o.write_units),
            read_units: f(self.read_units, o.read_units),
            lambda_requests: f(self.lambda_requests, o.lambda_requests),
            gb_seconds: f(self.gb_seconds, o.gb_seconds),
            ws_messages: f(self.ws_messages, o.ws_messages),
            ws_connection_minutes: f(self.ws_connection_minutes, o.ws_connection_minutes),
            http_requests: f(self.http_requests, o.http_requests),
            logs_api_calls: f(self.logs_api_calls, o.logs_api_calls),
            function_log_bytes: f(self.function_log_bytes, o.function_log_bytes),
            ingested_bytes: f(self.ingested_bytes, o.ingested_bytes),
        }
    }

    /// What was counted between `earlier` and this.
    pub fn since(self, earlier: Units) -> Units {
        self.zip(earlier, |a, b| a - b)
    }

    pub fn plus(self, o: Units) -> Units {
        self.zip(o, |a, b| a + b)
    }

    pub fn times(self, k: f64) -> Units {
        self.zip(Units::default(), |a, _| a * k)
    }
}

/// Dollars by service.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Bill {
    pub dynamodb: f64,
    pub lambda: f64,
    pub websocket: f64,
    pub http_api: f64,
    pub logs_api: f64,
    pub lambda_logs: f64,
    /// The producers' ingestion: paid with or without runvoy (Live Tail reads it too).
    pub ingestion: f64,
}

impl Bill {
    /// What runvoy adds: everything but the producers' ingestion.
    pub fn runvoy(&self) -> f64 {
        self.dynamodb
            + self.lambda
            + self.websocket
            + self.http_api
            + self.logs_api
            + self.lambda_logs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn the_table_in_the_repository_is_complete() {
        let p = Prices::parse(IN_REPO).unwrap();
        assert_eq!(p.region, "us-east-1");
        for price in &p.price {
            assert!(
                price.note.contains("check before relying"),
                "{}: says it must be checked",
                price.key
            );
        }
        let missing = IN_REPO.replace("key = \"live_tail_minutes\"", "key = \"x\"");
        assert!(
            Prices::parse(&missing)
                .unwrap_err()
                .contains("live_tail_minutes")
        );
        let unsourced = IN_REPO.replace("https://aws.amazon.com/lambda/", "aws.amazon.com/lambda/");
        assert!(Prices::parse(&unsourced).is_err());
    }

    #[test]
    fn units_are_priced_per_service() {
        let p = Prices::parse(IN_REPO).unwrap();
        assert!(close(p.usd("dynamodb_write_request_units", 1e6), 0.625));
        assert!(close(p.usd("logs_api_requests", 1000.0), 0.01));
        let u = Units {
            write_units: 2e6,
            read_units: 4e6,
            lambda_requests: 1e6,
            gb_seconds: 100_000.0,
            ws_messages: 3e6,
            ws_connection_minutes: 4e6,
            http_requests: 5e5,
            logs_api_calls: 2000.0,
            function_log_bytes: GB,
            ingested_bytes: 2.0 * GB,
        };
        let b = p.bill(&u);
        assert!(close(b.dynamodb, 2.0 * 0.625 + 4.0 * 0.125));
        assert!(close(b.lambda, 0.20 + 100_000.0 * 0.0000133334));
        assert!(close(b.websocket, 3.0 + 4.0 * 0.25));
        assert!(close(b.http_api, 0.5));
        assert!(close(b.logs_api, 0.02));
        assert!(close(b.lambda_logs, 0.5));
        assert!(close(b.ingestion, 1.0));
        assert!(close(
            b.runvoy(),
            b.dynamodb + b.lambda + 4.0 + 0.5 + 0.02 + 0.5
        ));
        // Ten viewers for an hour.
        assert!(close(p.live_tail(10.0, 60.0), 6.0));
    }

    #[test]
    fn billing_counters_add_up_across_functions() {
        let b = json!({
            "dynamodb": {"f": {"write_units": 6.0, "read_units": 2.0}, "a": {"write_units": 1.0, "read_units": 0.5}},
            "lambda": {"f": {"requests": 3, "gb_seconds": 0.25, "log_bytes": 100, "log_events": 2},
                       "a": {"requests": 1, "gb_seconds": 0.5, "log_bytes": 0, "log_events": 0}},
            "websocket": {"message_units": 7, "connection_minutes": 1.5},
            "http_api": {"request_units": 9},
            "cloudwatch_logs": {"ingested_bytes": 1000, "api_calls": {"a": {"GetLogEvents": 4}, "c": {"GetLogEvents": 1, "DescribeLogStreams": 1}}},
        });
        let u = Units::from_billing(&b);
        assert_eq!(
            u,
            Units {
                write_units: 7.0,
                read_units: 2.5,
                lambda_requests: 4.0,
                gb_seconds: 0.75,
                ws_messages: 7.0,
                ws_connection_minutes: 1.5,
                http_requests: 9.0,
                logs_api_calls: 6.0,
                function_log_bytes: 152.0,
                ingested_bytes: 1000.0,
            }
        );
        let twice = u.plus(u);
        assert_eq!(twice.since(u), u);
        assert_eq!(u.times(2.0), twice);
    }
}
