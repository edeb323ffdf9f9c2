//! The HTTP API of spec §4.1, independent of any web framework: the API Lambda and the local
//! server translate their requests into [`HttpRequest`] and write back the [`HttpResponse`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::{ApiKeys, Denied, TokenSigner};
use crate::error::{CoreError, StoreError};
use crate::lines::{self, LINES_CONTENT_TYPE, accepts_lines};
use crate::model::Head;
use crate::ports::Clock;
use crate::services::{
    Completer, FanOut, LogsPage, Populator, Reader, ReconcileSchedule, Reconciler,
};
use crate::wire::{CompleteRequest, ErrorBody, ExecutionsResponse, LogsResponse, StatusResponse};

/// Largest request body the API reads (the only body is a completion, a few bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Events per page when the client does not say.
pub const DEFAULT_LIMIT: usize = 1_000;
/// Most events per page.
pub const MAX_LIMIT: usize = 100_000;
/// Executions listed when the client does not say, and the most it may ask for.
pub const DEFAULT_LIST_LIMIT: u64 = 50;
pub const MAX_LIST_LIMIT: u64 = 200;
/// How many days back a listing looks when the client does not say, and at most.
pub const DEFAULT_LIST_DAYS: u64 = 7;
pub const MAX_LIST_DAYS: u64 = 31;

/// A request as the API sees it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// Path without stage or query, e.g. `/api/v1/executions/abc/logs`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// The `X-API-Key` header.
    pub api_key: Option<String>,
    /// The `Accept` header: a logs page is dense ([`crate::lines`]) when it asks for that.
    pub accept: Option<String>,
    pub body: Vec<u8>,
}

/// A response: JSON, or a dense logs page ([`crate::lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
    /// `application/json` or [`LINES_CONTENT_TYPE`].
    pub content_type: &'static str,
}

/// The `Content-Type` of every response but a dense logs page.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// An error response: status, machine code and one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message.clone(),
            code: self.code.to_string(),
        }
    }

    pub fn into_response(self) -> HttpResponse {
        HttpResponse {
            status: self.status,
            body: serde_json::to_string(&self.body()).expect("error bodies serialize"),
            content_type: JSON_CONTENT_TYPE,
        }
    }

    pub fn from_denied(denied: Denied) -> ApiError {
        match denied {
            Denied::Unauthorized => ApiError::new(
                401,
                "unauthorized",
                "missing or invalid credentials; pass a valid API key in the X-API-Key header",
            ),
            Denied::Forbidden => ApiError::new(
                403,
                "forbidden",
                "this token was issued for another execution; request a new websocket_url from the logs endpoint",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        CoreError::from(e).into()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        match &e {
            CoreError::NotFound(_) => ApiError::new(404, "not_found", e.to_string()),
            CoreError::BadRequest(_) => ApiError::bad_request(e.to_string()),
            CoreError::AlreadyTerminal(..) => ApiError::new(409, "conflict", e.to_string()),
            CoreError::Unfinished(_) => ApiError::new(503, "in_progress", e.to_string()),
            CoreError::TooManyConflicts(..) => ApiError::new(
                503,
                "busy",
                "the execution is being written by many writers at once; retry in a moment",
            ),
            CoreError::Store(StoreError::Throttled) => ApiError::new(
                429,
                "throttled",
                "the log store is throttling requests; retry with backoff",
            ),
            CoreError::Store(StoreError::Expired(_)) => {
                ApiError::new(410, "expired", e.to_string())
            }
            CoreError::Store(_) => ApiError::new(
                503,
                "store_unavailable",
                "the log store could not be reached; retry in a moment",
            ),
        }
    }
}

/// Validates an execution id: what ECS task ids and our own ids look like.
pub fn validate_execution_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "execution id must be 1-128 characters of letters, digits, '-', '_' or '.'",
        ))
    }
}

/// Decodes an `application/x-www-form-urlencoded` query string.
pub fn parse_query(raw: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v)?;
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter '{k}' is given more than once; give it once"
            )));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("the query string has a malformed %-escape")
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("the query string is not valid UTF-8"))
}

/// Parses a non-negative integer parameter.
pub fn parse_index(name: &str, value: Option<&String>, default: u64) -> Result<u64, ApiError> {
    let bad = |v: &str| {
        ApiError::bad_request(format!(
            "{name} must be an integer from 0 to {MAX_INDEX}, got '{}'",
            v.chars().take(40).collect::<String>()
        ))
    };
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_INDEX)
            .ok_or_else(|| bad(v)),
    }
}

/// The largest index or count a request may name: every store and JSON reader (a browser's
/// numbers included) holds it exactly.
pub const MAX_INDEX: u64 = (1 << 53) - 1;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base URL of the WebSocket endpoint (`ws://127.0.0.1:8787/ws`, `wss://…/prod`).
    pub websocket_url: Option<String>,
    /// Least time between two read-triggered reconciliations of one running execution; it
    /// doubles (up to `reconcile_max_interval_ms`) after every one that found nothing missing,
    /// and is back to this after one that recovered lines (evidence of loss).
    pub reconcile_interval_ms: i64,
    pub reconcile_max_interval_ms: i64,
    /// How long one `POST …/complete` may work on the re-read completion takes before it
    /// answers 503 `in_progress` (progress is kept; repeating the request continues). API
    /// Gateway gives an integration 29 s.
    pub complete_budget_ms: i64,
    /// How long a read may spend reconciling (lazy population of a long stream, catching up)
    /// before it serves what is committed; the next read continues.
    pub read_reconcile_budget_ms: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            websocket_url: None,
            reconcile_interval_ms: 5_000,
            reconcile_max_interval_ms: 300_000,
            complete_budget_ms: 20_000,
            read_reconcile_budget_ms: 5_000,
        }
    }
}

/// The HTTP API service.
#[derive(Clone)]
pub struct Api {
    reader: Reader,
    populator: Populator,
    completer: Completer,
    keys: ApiKeys,
    signer: TokenSigner,
    clock: Arc<dyn Clock>,
    config: ApiConfig,
}

impl Api {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: Reader,
        reconciler: Reconciler,
        completer: Completer,
        fanout: FanOut,
        keys: ApiKeys,
        signer: TokenSigner,
        clock: Arc<dyn Clock>,
        config: ApiConfig,
    ) -> Api {
        let populator = Populator::new(
            reader.clone(),
            reconciler,
            fanout,
            clock.clone(),
            ReconcileSchedule {
                interval_ms: config.reconcile_interval_ms,
                max_interval_ms: config.reconcile_max_interval_ms,
                budget_ms: config.read_reconcile_budget_ms,
            },
        );
        Api {
            reader,
            populator,
            completer,
            keys,
            signer,
            clock,
            config,
        }
    }

    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    /// The WebSocket URL handed to clients (without token), if any.
    pub fn websocket_url(&self) -> Option<&str> {
        self.config.websocket_url.as_deref()
    }

    /// Serves one request; never panics on input, never leaks internals.
    pub async fn handle(&self, req: HttpRequest) -> HttpResponse {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn route(&self, req: HttpRequest) -> Result<HttpResponse, ApiError> {
        let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').collect();
        if segments.as_slice() == ["", "api", "v1", "executions"] {
            self.keys
                .check(req.api_key.as_deref())
                .map_err(ApiError::from_denied)?;
            if req.method != "GET" {
                return Err(ApiError::new(
                    405,
                    "method_not_allowed",
                    format!("{} is not allowed on {}", req.method, req.path),
                ));
            }
            return self.list(&parse_query(&req.query)?).await;
        }
        let (id, action) = match segments.as_slice() {
            ["", "api", "v1", "executions", id] => (*id, None),
            ["", "api", "v1", "executions", id, action] => (*id, Some(*action)),
            _ => {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    format!(
                        "no route for {} {}; see the API reference",
                        req.method, req.path
                    ),
                ));
            }
        };
        self.keys
            .check(req.api_key.as_deref())
            .map_err(ApiError::from_denied)?;
        let id = percent_decode(id)?;
        validate_execution_id(&id)?;
        let query = parse_query(&req.query)?;
        match (req.method.as_str(), action) {
            ("GET", Some("logs")) => {
                self.logs(&id, &query, accepts_lines(req.accept.as_deref()))
                    .await
            }
            ("GET", None) => self.status(&id).await,
            ("POST", Some("complete")) => self.complete(&id, &req.body).await,
            (_, None | Some("logs" | "complete")) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{} is not allowed on {}", req.method, req.path),
            )),
            _ => Err(ApiError::new(
                404,
                "not_found",
                format!(
                    "no route for {} {}; see the API reference",
                    req.method, req.path
                ),
            )),
        }
    }

    async fn logs(
        &self,
        id: &str,
        query: &HashMap<String, String>,
        dense: bool,
    ) -> Result<HttpResponse, ApiError> {
        for k in query.keys() {
            if !matches!(k.as_str(), "since_index" | "limit" | "tail" | "since_time") {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{k}'; use since_index, limit, tail and since_time"
                )));
            }
        }
        let mut since = parse_index("since_index", query.get("since_index"), 0)?;
        let limit = parse_index("limit", query.get("limit"), DEFAULT_LIMIT as u64)?;
        if limit == 0 || limit > MAX_LIMIT as u64 {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let tail = query
            .get("tail")
            .map(|_| parse_index("tail", query.get("tail"), 0))
            .transpose()?;
        let since_time = query
            .get("since_time")
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "since_time must be a time in milliseconds since the epoch, got '{v}'"
                    ))
                })
            })
            .transpose()?;
        if tail.is_some() && since_time.is_some() {
            return Err(ApiError::bad_request(
                "tail and since_time each choose where the page starts: give one of them",
            ));
        }
        let head = self.populator.head(id).await?;
        if let Some(n) = tail {
            // The last n lines committed now: the page starts after the line before them.
            since = since.max(head.last_index.saturating_sub(n));
        }
        if let Some(t) = since_time {
            match self
                .first_at_or_after(id, since, head.last_index, t)
                .await?
            {
                Start::At(i) => since = i,
                // Not found within this request's budget: the page covers what was looked
                // through (no events), and the client asks again from its `last_index`.
                Start::NotBefore(i) => {
                    let page = self
                        .reader
                        .page(id, i, 0)
                        .await?
                        .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
                    let mut r = self.logs_response(id, page);
                    r.last_index = i;
                    r.has_more = i < head.last_index;
                    return Ok(json(200, &r));
                }
            }
        }
        if dense && let Some(d) = self.reader.dense_page(id, since, limit as usize).await? {
            return Ok(HttpResponse {
                status: 200,
                body: lines::body(&self.logs_response(id, d.page), d.records)
                    .map_err(StoreError::backend_message)?,
                content_type: LINES_CONTENT_TYPE,
            });
        }
        let page = self
            .reader
            .page(id, since, limit as usize)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
        // The body's size is known closely enough to allocate it once.
        let size = page.events.iter().map(|e| e.wire_size()).sum::<usize>() + 1024;
        Ok(json_sized(200, &self.logs_response(id, page), size))
    }

    /// Where a page for `since_time = t` starts: after the line before the first line (by
    /// index, after `since`) whose timestamp is `t` or later; every line after it follows in
    /// index order, whatever its own timestamp. The lines are looked through in pages, at most
    /// [`SINCE_TIME_SCAN`] per request: a longer search answers how far it got.
    async fn first_at_or_after(
        &self,
        id: &str,
        since: u64,
        last_index: u64,
        t: i64,
    ) -> Result<Start, ApiError> {
        let mut at = since;
        let mut scanned = 0usize;
        while at < last_index {
            if scanned >= SINCE_TIME_SCAN {
                return Ok(Start::NotBefore(at));
            }
            let events = self
                .reader
                .store()
                .read_bounded(id, at, last_index, 10_000, crate::services::MAX_PAGE_BYTES)
                .await?;
            let Some(last) = events.last().map(|e| e.index) else {
                return Err(StoreError::Expired(id.to_string()).into());
            };
            if let Some(e) = events.iter().find(|e| e.timestamp >= t) {
                return Ok(Start::At(e.index - 1));
            }
            scanned += events.len();
            at = last;
        }
        Ok(Start::At(last_index))
    }

    fn logs_response(&self, id: &str, page: LogsPage) -> LogsResponse {
        let terminal = page.head.status.is_terminal();
        let websocket_url = match (&self.config.websocket_url, terminal) {
            (Some(base), false) => {
                let token = self.signer.sign(id, self.clock.now_ms() / 1000);
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(format!("{base}{sep}execution_id={id}&token={token}"))
            }
            _ => None,
        };
        LogsResponse {
            execution_id: id.to_string(),
            status: page.head.status,
            events: page.events,
            last_index: page.last_index,
            has_more: page.has_more,
            final_index: page.head.final_index.filter(|_| terminal),
            exit_code: page.head.exit_code.filter(|_| terminal),
            websocket_url,
        }
    }

    /// `GET /api/v1/executions?limit=N&days=D`: the most recent executions, newest first.
    async fn list(&self, query: &HashMap<String, String>) -> Result<HttpResponse, ApiError> {
        if let Some(k) = query
            .keys()
            .find(|k| !matches!(k.as_str(), "limit" | "days"))
        {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{}'; use limit and days",
                k.chars().take(40).collect::<String>()
            )));
        }
        let limit = parse_index("limit", query.get("limit"), DEFAULT_LIST_LIMIT)?;
        let days = parse_index("days", query.get("days"), DEFAULT_LIST_DAYS)?;
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
            )));
        }
        if !(1..=MAX_LIST_DAYS).contains(&days) {
            return Err(ApiError::bad_request(format!(
                "days must be between 1 and {MAX_LIST_DAYS}, got {days}"
            )));
        }
        let now = self.clock.now_ms();
        let after = now - days as i64 * 86_400_000;
        // A little ahead of now: clocks of the writers differ by a few seconds.
        let executions = self
            .reader
            .store()
            .recent(after, now + 60_000, limit as usize)
            .await?;
        Ok(json(200, &ExecutionsResponse { executions }))
    }

    async fn status(&self, id: &str) -> Result<HttpResponse, ApiError> {
        let head = self.populator.head(id).await?;
        Ok(json(200, &status_response(&head)))
    }

    async fn complete(&self, id: &str, body: &[u8]) -> Result<HttpResponse, ApiError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                413,
                "payload_too_large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        let req: CompleteRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"status\":\"SUCCEEDED\",\"exit_code\":0}}: {e}"
            ))
        })?;
        let deadline = self.clock.now_ms() + self.config.complete_budget_ms;
        let head = self
            .completer
            .complete(id, req.status, req.exit_code, None, Some(deadline))
            .await?;
        Ok(json(200, &status_response(&head)))
    }
}

/// Lines one request looks through for `since_time` before it answers how far it got.
pub const SINCE_TIME_SCAN: usize = 100_000;

/// Where a `since_time` page starts.
enum Start {
    /// After this index.
    At(u64),
    /// Not found up to this index yet.
    NotBefore(u64),
}

pub fn status_response(head: &Head) -> StatusResponse {
    let terminal = head.status.is_terminal();
    StatusResponse {
        execution_id: head.execution_id.clone(),
        status: head.status,
        last_index: head.last_index,
        final_index: head.final_index.filter(|_| terminal),
        exit_code: head.exit_code.filter(|_| terminal),
        created_at: head.created_at,
        updated_at: head.updated_at,
    }
}

pub fn json<T: serde::Serialize>(status: u16, body: &T) -> HttpResponse {
    json_sized(status, body, 128)
}

/// [`json`] into a buffer of `capacity` bytes to start with.
fn json_sized<T: serde::Serialize>(status: u16, body: &T, capacity: usize) -> HttpResponse {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, body).expect("response bodies serialize");
    HttpResponse {
        status,
        body: String::from_utf8(buf).expect("serde_json writes UTF-8"),
        content_type: JSON_CONTENT_TYPE,
    }
}
