//! API Gateway HTTP API, emulated from the template: routes (`GET /api/v1/executions/{id}`,
//! `ANY /{proxy+}`, `$default`) matched as API Gateway matches them, payload format 2.0 events to
//! the integrated function, its response mapped back — and API Gateway's own answers when the
//! integration fails (500), runs past 29 s (503) or no route matches (404).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::lambda::{Function, InvokeError, now_ms, uuid_like};
use crate::ledger::Ledger;

/// API Gateway's limit on an integration (HTTP APIs: 30 s at most; spec §3.5: 29 s).
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// Largest request payload of an HTTP API.
const MAX_REQUEST: usize = 10 * 1024 * 1024;

/// One route: `METHOD /path/{param}/{greedy+}` or `$default`.
pub struct Route {
    pub key: String,
    pub function: Arc<Function>,
}

pub struct HttpApi {
    pub api_id: String,
    pub domain: String,
    pub account: String,
    pub routes: Vec<Route>,
    pub timeout: Duration,
    /// Where requests are counted as AWS bills them.
    pub ledger: Arc<Ledger>,
}

impl HttpApi {
    /// The best route for a request, as API Gateway chooses: an exact method before `ANY`, more
    /// literal segments before parameters, `$default` last. Returns its path parameters too.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Route, BTreeMap<String, String>)> {
        type Candidate<'a> = ((u8, usize, usize), &'a Route, BTreeMap<String, String>);
        let mut best: Option<Candidate> = None;
        for r in &self.routes {
            let found = if r.key == "$default" {
                Some(((0, 0, 0), BTreeMap::new()))
            } else {
                let (m, p) = r.key.split_once(' ')?;
                if m != "ANY" && m != method {
                    continue;
                }
                match_path(p, path)
                    .map(|(literal, params)| ((1, usize::from(m != "ANY"), literal), params))
            };
            if let Some((score, params)) = found
                && best.as_ref().is_none_or(|(s, _, _)| score > *s)
            {
                best = Some((score, r, params));
            }
        }
        best.map(|(_, r, p)| (r, p))
    }

    pub async fn serve(self: Arc<Self>, req: Request) -> Response {
        let (response, request_bytes, response_bytes) = self.answer(req).await;
        self.ledger.http_request(request_bytes, response_bytes);
        response
    }

    /// The answer to a request, with the sizes of the request's and the answer's bodies (0
    /// for API Gateway's own short answers).
    async fn answer(&self, req: Request) -> (Response, usize, usize) {
        let (parts, body) = req.into_parts();
        let Ok(body) = to_bytes(body, MAX_REQUEST).await else {
            return (
                message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
                MAX_REQUEST,
                0,
            );
        };
        let method = parts.method.as_str().to_string();
        let path = parts.uri.path().to_string();
        let Some((route, params)) = self.route(&method, &path) else {
            return (message(StatusCode::NOT_FOUND, "Not Found"), body.len(), 0);
        };
        let query = parts.uri.query().unwrap_or_default().to_string();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        let mut cookies = Vec::new();
        for (k, v) in &parts.headers {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            if k == "cookie" {
                cookies.extend(v.split("; ").map(str::to_string));
                continue;
            }
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let mut qs: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in url_pairs(&query) {
            qs.entry(k)
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let (text, b64) = match std::str::from_utf8(&body) {
            Ok(t) => (t.to_string(), false),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&body),
                true,
            ),
        };
        let now = now_ms();
        let mut event = json!({
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "accountId": self.account,
                "apiId": self.api_id,
                "domainName": self.domain,
                "domainPrefix": self.api_id,
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": headers.get("user-agent").cloned().unwrap_or_default(),
                },
                "requestId": uuid_like(),
                "routeKey": route.key,
                "stage": "$default",
                "time": clf_time(now),
                "timeEpoch": now,
            },
            "isBase64Encoded": b64,
        });
        if !cookies.is_empty() {
            event["cookies"] = json!(cookies);
        }
        if !qs.is_empty() {
            event["queryStringParameters"] = json!(qs);
        }
        if !params.is_empty() {
            event["pathParameters"] = json!(params);
        }
        if !body.is_empty() {
            event["body"] = json!(text);
        }
        let invoked = tokio::time::timeout(
            self.timeout,
            route.function.invoke(event.to_string().into_bytes()),
        )
        .await;
        let (response, response_bytes) = match invoked {
            Err(_) => (
                message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
                0,
            ),
            Ok(Err(InvokeError::Timeout(_))) => (
                message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
                0,
            ),
            Ok(Err(e)) => {
                eprintln!("sim: HTTP API integration failed: {e}");
                (
                    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                    0,
                )
            }
            Ok(Ok(bytes)) => map_response(&bytes),
        };
        (response, body.len(), response_bytes)
    }
}

/// A payload 2.0 response: `{statusCode, headers, cookies, body, isBase64Encoded}`, or any other
/// JSON, which API Gateway returns as a 200 `application/json` body. With the body's size.
fn map_response(bytes: &[u8]) -> (Response, usize) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return (
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            0,
        );
    };
    let Some(status) = v.get("statusCode").and_then(Value::as_u64) else {
        let text = v.to_string();
        let size = text.len();
        let mut r = (StatusCode::OK, text).into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return (r, size);
    };
    let body = match v.get("body").and_then(Value::as_str) {
        Some(b) if v["isBase64Encoded"] == true => base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default(),
        Some(b) => b.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let size = body.len();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    for (k, val) in v["headers"].as_object().unwrap_or(&Map::new()) {
        if let (Ok(k), Ok(val)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&crate::template::scalar(val)),
        ) {
            r.headers_mut().insert(k, val);
        }
    }
    for c in v["cookies"].as_array().into_iter().flatten() {
        if let Ok(val) = HeaderValue::from_str(c.as_str().unwrap_or_default()) {
            r.headers_mut().append("set-cookie", val);
        }
    }
    (r, size)
}

/// API Gateway's own error body.
pub fn message(status: StatusCode, text: &str) -> Response {
    let mut r = (status, json!({"message": text}).to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Matches `/a/{x}/b/{rest+}` against a path: the number of literal segments and the parameters.
fn match_path(pattern: &str, path: &str) -> Option<(usize, BTreeMap<String, String>)> {
    let pat: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut params = BTreeMap::new();
    let mut literal = 0;
    for (i, p) in pat.iter().enumerate() {
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
            if i >= got.len() {
                return None;
            }
            params.insert(name.to_string(), got[i..].join("/"));
            return Some((literal, params));
        }
        let g = got.get(i)?;
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if g.is_empty() {
                return None;
            }
            params.insert(name.to_string(), percent_decode(g));
        } else if p == g {
            literal += 1;
        } else {
            return None;
        }
    }
    (pat.len() == got.len()).then_some((literal, params))
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// Percent-decoding; in query strings `+` is a space too.
fn decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `01/Dec/2026:12:00:00 +0000`, API Gateway's `requestContext.time`.
fn clf_time(ms: i64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = crate::lambda::civil(secs / 86_400);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rem = secs % 86_400;
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        months[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_like_api_gateway() {
        let (n, p) = match_path(
            "/api/v1/executions/{id}/logs",
            "/api/v1/executions/ab%2Fc/logs",
        )
        .unwrap();
        assert_eq!((n, p["id"].as_str()), (4, "ab/c"));
        assert!(match_path("/api/v1/executions/{id}", "/api/v1/executions/x/logs").is_none());
        assert!(match_path("/api/v1/executions/{id}", "/api/v1/executions/").is_none());
        let (_, p) = match_path("/{proxy+}", "/a/b/c").unwrap();
        assert_eq!(p["proxy"], "a/b/c");
        assert_eq!(decode("a%3Db+c%", true), "a=b c%");
        assert_eq!(percent_decode("a+b%2"), "a+b%2");
        assert_eq!(clf_time(1_796_128_941_679), "01/Dec/2026:12:42:21 +0000");
    }
}
