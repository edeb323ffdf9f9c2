//! The gate between the functions and moto. Every AWS call a function makes comes here (its
//! `AWS_ENDPOINT_URL`); the gate finds the function by the access key it signed with, makes the
//! checks AWS would (IAM per action and resource, the account's `GetLogEvents` quota), answers
//! `AccessDeniedException` / `ThrottlingException` the way the service does, and forwards
//! everything else to moto untouched.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::iam::{self, Check, Policy};
use crate::ledger::Ledger;
use crate::template::Place;
use crate::timing::{DynamoTiming, Verdict};
use crate::trace::{Trace, now_us};

/// Largest request body forwarded (DynamoDB's limit is 16 MB per batch).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Who signs with an access key: a function and its role's policy.
pub struct Caller {
    pub function: String,
    pub policy: Arc<Policy>,
}

/// A token bucket: `rate` calls per second, bursting to one second's worth.
pub struct Quota {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Quota {
    pub fn new(rate: f64) -> Quota {
        Quota {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    pub fn try_take(&self) -> bool {
        let mut s = self.state.lock().expect("quota lock");
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate.max(1.0));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the gate saw, per function.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GateStats {
    /// `function → action → calls forwarded`.
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// Refused checks: `(function, action, resource)`.
    pub denied: Vec<(String, String, String)>,
    /// `GetLogEvents` calls refused by the shared quota.
    pub throttled: u64,
    /// `function → time its calls spent in moto` (from the gate sending a call until moto's
    /// whole answer arrived, moto's queue included: it serves one request at a time).
    pub moto: BTreeMap<String, MotoTime>,
}

/// Calls to moto and the time they took.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MotoTime {
    pub calls: u64,
    pub ms: f64,
}

/// Who called and what, once admitted.
struct Admitted {
    function: String,
    /// `service:Op`, as counted.
    action: String,
    body: Value,
}

pub struct Gate {
    moto: String,
    http: reqwest::Client,
    callers: Arc<HashMap<String, Caller>>,
    place: Place,
    quota: Quota,
    stats: Mutex<GateStats>,
    /// DynamoDB's timing (`--chaos txn-skew-ms, throttle-wcu, sdk-retry`), when any is played.
    timing: Option<Arc<DynamoTiming>>,
    ledger: Arc<Ledger>,
    trace: Arc<Trace>,
}

impl Gate {
    pub fn new(
        moto: String,
        callers: Arc<HashMap<String, Caller>>,
        place: Place,
        get_log_events_per_sec: f64,
    ) -> Gate {
        Gate {
            moto: moto.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            callers,
            place,
            quota: Quota::new(get_log_events_per_sec),
            stats: Mutex::default(),
            timing: None,
            ledger: Arc::default(),
            trace: Arc::new(Trace::new("")),
        }
    }

    /// Counts what the functions' DynamoDB calls are billed in `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Gate {
        self.ledger = ledger;
        self
    }

    /// Tells `trace` about the functions' calls to moto.
    pub fn with_trace(mut self, trace: Arc<Trace>) -> Gate {
        self.trace = trace;
        self
    }

    /// Plays DynamoDB's timing on the functions' calls.
    pub fn with_timing(mut self, timing: DynamoTiming) -> Gate {
        self.timing = (!timing.chaos.is_calm()).then(|| Arc::new(timing));
        self
    }

    pub fn stats(&self) -> GateStats {
        self.stats.lock().expect("stats lock").clone()
    }

    pub fn timing_stats(&self) -> Option<crate::timing::TimingStats> {
        self.timing.as_ref().map(|t| t.stats())
    }

    /// Serves on `listener` until the task is dropped.
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> tokio::task::JoinHandle<()> {
        let router = Router::new().fallback(handle).with_state(self);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        })
    }

    /// The checks of one request, or the refusal to send.
    fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Result<Admitted, Box<Response>> {
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let json_1_0 = target.starts_with("DynamoDB_");
        let key = access_key(headers);
        let Some(caller) = key.as_deref().and_then(|k| self.callers.get(k)) else {
            return Err(Box::new(aws_error(
                json_1_0,
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )));
        };
        let denied =
            |msg: String| Box::new(aws_error(json_1_0, 400, "AccessDeniedException", &msg));
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let checks = iam::checks(&target, &body, &self.place).map_err(|why| {
            self.record_denied(&caller.function, &Check::new(target.clone(), "?"));
            denied(format!(
                "User: {} is not authorized: {why}",
                caller.policy.principal
            ))
        })?;
        for c in &checks {
            if let Err(msg) = caller.policy.check(c) {
                self.record_denied(&caller.function, c);
                eprintln!("sim: IAM denied {}: {msg}", caller.function);
                return Err(denied(msg));
            }
        }
        let op = target.rsplit('.').next().unwrap_or_default();
        if target.starts_with("Logs_") && op == "GetLogEvents" && !self.quota.try_take() {
            self.stats.lock().expect("stats lock").throttled += 1;
            return Err(Box::new(aws_error(
                false,
                400,
                "ThrottlingException",
                "Rate exceeded",
            )));
        }
        let prefix = target.split('.').next().unwrap_or(&target);
        let service = prefix.split('_').next().unwrap_or(prefix).to_lowercase();
        let action = format!("{service}:{op}");
        *self
            .stats
            .lock()
            .expect("stats lock")
            .calls
            .entry(caller.function.clone())
            .or_default()
            .entry(action.clone())
            .or_default() += 1;
        Ok(Admitted {
            function: caller.function.clone(),
            action,
            body,
        })
    }

    /// Sends a function's call to moto, timing it.
    async fn to_moto(
        &self,
        who: &Admitted,
        req: &axum::http::request::Parts,
        body: axum::body::Bytes,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, axum::body::Bytes), String> {
        let start = now_us();
        let r = self
            .send(req.method.clone(), &req.uri, &req.headers, body)
            .await;
        let end = now_us();
        {
            let mut stats = self.stats.lock().expect("stats lock");
            let t = stats.moto.entry(who.function.clone()).or_default();
            t.calls += 1;
            t.ms += (end - start) as f64 / 1000.0;
        }
        self.trace.moto_call(&who.function, &who.action, start, end);
        r
    }

    /// Counts a DynamoDB call moto answered in the ledger: its writes whether it succeeded or
    /// was refused (a failed condition is billed), its reads from a successful answer.
    fn account(&self, who: &Admitted, op: &str, status: StatusCode, answer: &[u8]) {
        let reads = matches!(
            op,
            "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems"
        );
        if status == StatusCode::OK {
            let parsed = if reads {
                serde_json::from_slice(answer).unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            self.ledger
                .dynamodb(&who.function, op, &who.body, Some(&parsed));
        } else if status.is_client_error() {
            self.ledger.dynamodb(&who.function, op, &who.body, None);
        }
    }

    fn record_denied(&self, function: &str, c: &Check) {
        self.stats.lock().expect("stats lock").denied.push((
            function.to_string(),
            c.action.clone(),
            c.resource.clone(),
        ));
    }

    async fn forward(&self, who: &Admitted, req: Request, body: axum::body::Bytes) -> Response {
        let (parts, _) = req.into_parts();
        match self.to_moto(who, &parts, body).await {
            Ok((status, headers, bytes)) => {
                if let Some(op) = who.action.strip_prefix("dynamodb:") {
                    self.account(who, op, status, &bytes);
                }
                respond(status, &headers, bytes)
            }
            Err(e) => aws_error(
                false,
                503,
                "ServiceUnavailableException",
                &format!("the sim could not reach moto: {e}"),
            ),
        }
    }

    async fn send(
        &self,
        method: axum::http::Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, axum::body::Bytes), String> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut out = self
            .http
            .request(method, format!("{}{path}", self.moto))
            .body(body);
        for (k, v) in headers {
            if k != "host" && k != "content-length" {
                out = out.header(k, v);
            }
        }
        let r = out.send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, headers, bytes))
    }

    /// A DynamoDB call of a function, with DynamoDB's timing played around it.
    async fn dynamodb(
        &self,
        who: &Admitted,
        timing: &DynamoTiming,
        op: &str,
        req: Request,
        bytes: axum::body::Bytes,
    ) -> Response {
        let body = &who.body;
        let (parts, _) = req.into_parts();
        for table in DynamoTiming::tables(op, body) {
            if !timing.knows(&table)
                && let Some((hash, range)) = self.key_schema(&parts.headers, &table).await
            {
                timing.learn(&table, hash, range);
            }
        }
        if let Verdict::Refuse(status, code, message, extra) = timing.admit(op, body) {
            return dynamodb_error(status, code, &message, extra);
        }
        let mut before = Vec::new();
        for (table, key) in timing.skewed_keys(op, body) {
            let image = self
                .call(
                    &parts.headers,
                    "GetItem",
                    json!({"TableName": table, "Key": key, "ConsistentRead": true}),
                )
                .await
                .and_then(|v| v.get("Item").cloned());
            before.push((table, key, image));
        }
        let (status, headers, answer) = match self.to_moto(who, &parts, bytes).await {
            Ok(r) => r,
            Err(e) => {
                return aws_error(
                    true,
                    503,
                    "ServiceUnavailableException",
                    &format!("the sim could not reach moto: {e}"),
                );
            }
        };
        self.account(who, op, status, &answer);
        if status != StatusCode::OK {
            return respond(status, &headers, answer);
        }
        timing.written(op, body, before);
        if timing.answer_500(op) {
            return dynamodb_error(
                500,
                "InternalServerError",
                "Internal server error",
                Value::Null,
            );
        }
        match timing.rewrite_read(op, body, &answer) {
            Some(rewritten) => {
                let mut headers = headers;
                headers.remove("x-amz-crc32");
                respond(status, &headers, rewritten.into())
            }
            None => respond(status, &headers, answer),
        }
    }

    /// One DynamoDB call of the gate's own, signed as the function's request was (moto reads
    /// the region from the signature).
    async fn call(&self, like: &HeaderMap, op: &str, body: Value) -> Option<Value> {
        let mut headers = HeaderMap::new();
        for k in ["authorization", "x-amz-date", "x-amz-security-token"] {
            if let Some(v) = like.get(k) {
                headers.insert(k, v.clone());
            }
        }
        headers.insert(
            "x-amz-target",
            HeaderValue::from_str(&format!("DynamoDB_20120810.{op}")).ok()?,
        );
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        let (status, _, bytes) = self
            .send(
                axum::http::Method::POST,
                &axum::http::Uri::from_static("/"),
                &headers,
                body.to_string().into(),
            )
            .await
            .ok()?;
        (status == StatusCode::OK)
            .then(|| serde_json::from_slice(&bytes).ok())
            .flatten()
    }

    async fn key_schema(&self, like: &HeaderMap, table: &str) -> Option<(String, Option<String>)> {
        let d = self
            .call(like, "DescribeTable", json!({"TableName": table}))
            .await?;
        let schema = d["Table"]["KeySchema"].as_array()?;
        let of = |kind: &str| {
            schema
                .iter()
                .find(|k| k["KeyType"] == kind)
                .and_then(|k| k["AttributeName"].as_str())
                .map(str::to_string)
        };
        Some((of("HASH")?, of("RANGE")))
    }
}

fn respond(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    for (k, v) in headers {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            resp.headers_mut().insert(k, v.clone());
        }
    }
    resp
}

/// An error as DynamoDB writes it, with the fields some errors carry
/// (`CancellationReasons`).
fn dynamodb_error(status: u16, code: &str, message: &str, extra: Value) -> Response {
    let mut body =
        json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    r
}

async fn handle(State(gate): State<Arc<Gate>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return aws_error(
            false,
            413,
            "RequestEntityTooLarge",
            "request body too large",
        );
    };
    let who = match gate.admit(&parts.headers, &bytes) {
        Ok(who) => who,
        Err(refusal) => return *refusal,
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let (Some(timing), Some(op)) = (&gate.timing, target.strip_prefix("DynamoDB_20120810.")) {
        return gate
            .dynamodb(
                &who,
                timing,
                op,
                Request::from_parts(parts, Body::empty()),
                bytes,
            )
            .await;
    }
    gate.forward(&who, Request::from_parts(parts, Body::empty()), bytes)
        .await
}

/// The access key id of a SigV4 `Authorization` header.
pub fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    Some(cred.split('/').next()?.to_string())
}

/// An error as a JSON-protocol AWS service writes it.
pub fn aws_error(json_1_0: bool, status: u16, code: &str, message: &str) -> Response {
    let (ctype, body) = if json_1_0 {
        (
            "application/x-amz-json-1.0",
            json!({"__type": format!("com.amazon.coral.service#{code}"), "Message": message}),
        )
    } else {
        (
            "application/x-amz-json-1.1",
            json!({"__type": code, "message": message}),
        )
    };
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(ctype));
    r.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("Error")),
    );
    r
}

/// Binds the gate on an ephemeral loopback port.
pub async fn bind() -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_refuses_above_its_rate() {
        let q = Quota::new(5.0);
        let granted = (0..20).filter(|_| q.try_take()).count();
        assert_eq!(granted, 5, "one second's burst, then refusals");
    }

    #[test]
    fn the_access_key_is_read_from_the_signature() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=ASIAFORWARDER/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x",
            ),
        );
        assert_eq!(access_key(&h).as_deref(), Some("ASIAFORWARDER"));
    }
}
