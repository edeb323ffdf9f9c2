//! The HTTP side of the client: pages of logs, status, completion and local runs.

use std::time::Duration;

use std::sync::{Arc, Mutex};

use runvoy_core::lines::{LINES_CONTENT_TYPE, LinesPage, LinesReader};
use runvoy_core::wire::{ErrorBody, LogsResponse, StatusResponse};
use serde::de::DeserializeOwned;

use crate::error::CliError;
use crate::settings::Settings;

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: Settings,
    dense: bool,
    /// Buffers of dense pages already printed, reused for the next ones (no fresh memory to
    /// fault in per page).
    buffers: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Buffers kept for reuse: as many as pages in flight.
const BUFFERS_KEPT: usize = 3;

/// Most bytes reserved up front for a page, whatever its `Content-Length` says, and the
/// largest buffer kept for reuse.
const RESERVE_AT_MOST: u64 = 8 * 1024 * 1024;

/// Largest dense page read (servers bound pages at 4 MB, one event larger than that alone).
const PAGE_AT_MOST: u64 = 64 * 1024 * 1024;
/// Largest other answer read (a status, a list of 200 executions).
const BODY_AT_MOST: u64 = 4 * 1024 * 1024;
/// Largest error answer read (one sentence, and a code).
const ERROR_AT_MOST: u64 = 64 * 1024;

/// A logs page as the server sent it: JSON (spec §4.1.2), or dense ([`runvoy_core::lines`]).
pub enum Page {
    Json(LogsResponse),
    Dense(LinesPage<Vec<u8>>),
}

impl Page {
    /// Every field but the events (those of a JSON page are still in it).
    pub fn meta(&self) -> &LogsResponse {
        match self {
            Page::Json(p) => p,
            Page::Dense(p) => &p.meta,
        }
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        match self {
            Page::Json(p) => p.events.len(),
            Page::Dense(p) => p.len(),
        }
    }
}

/// Where a first page starts when not at an index: the last N lines, or the first line at or
/// after a time (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Tail(u64),
    Time(i64),
}

impl ApiClient {
    /// The log page of an execution (served by the API at its root).
    pub fn page_url(&self, id: &str) -> String {
        format!("{}/executions/{id}", self.settings.api_url)
    }

    pub fn new(settings: Settings) -> Result<ApiClient, CliError> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("runvoy/", env!("CARGO_PKG_VERSION")))
            // The key goes only where --api-url points: a redirect is reported, not followed.
            .redirect(reqwest::redirect::Policy::none());
        if settings.api_url.starts_with("http://") {
            // Every request goes to that URL, so none uses TLS: loading the system's roots
            // (about a tenth of a short command's time) is skipped.
            http = http.tls_certs_only([]);
        }
        let http = http
            .build()
            .map_err(|e| CliError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(ApiClient {
            http,
            settings,
            dense: false,
            buffers: Arc::default(),
        })
    }

    /// Asks for dense logs pages (when the event ids are not needed); a server may still
    /// answer JSON, and both are read.
    pub fn with_dense_pages(mut self, dense: bool) -> ApiClient {
        self.dense = dense;
        self
    }

    pub async fn logs(&self, id: &str, since: u64, limit: usize) -> Result<Page, CliError> {
        self.logs_from(id, since, limit, None).await
    }

    /// [`ApiClient::logs`], starting where `start` says (after `since`).
    pub async fn logs_from(
        &self,
        id: &str,
        since: u64,
        limit: usize,
        start: Option<Start>,
    ) -> Result<Page, CliError> {
        let extra = match start {
            None => String::new(),
            Some(Start::Tail(n)) => format!("&tail={n}"),
            Some(Start::Time(t)) => format!("&since_time={t}"),
        };
        let url = format!(
            "{}/api/v1/executions/{id}/logs?since_index={since}&limit={limit}{extra}",
            self.settings.api_url
        );
        let mut req = self.http.get(url);
        if self.dense {
            req = req.header(reqwest::header::ACCEPT, LINES_CONTENT_TYPE);
        }
        let mut resp = self.respond(id, req).await?;
        if content_type(&resp).as_deref() != Some(LINES_CONTENT_TYPE) {
            let body = self
                .bounded(&mut resp, PAGE_AT_MOST, "a page of logs")
                .await?;
            return serde_json::from_slice(&body)
                .map(Page::Json)
                .map_err(|e| CliError::Protocol(e.to_string()));
        }
        // Records are read as the body arrives, into a buffer an earlier page left.
        let mut buf = self
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        // The announced size, within reason (a page is bounded at a few MB).
        let announced = resp.content_length().unwrap_or(0).min(RESERVE_AT_MOST);
        buf.reserve(announced as usize);
        let mut reader = LinesReader::default();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.cut(&e))? {
            if (buf.len() + chunk.len()) as u64 > PAGE_AT_MOST {
                return Err(CliError::Protocol(format!(
                    "a page of logs is larger than {} MB; servers bound pages at 4 MB",
                    PAGE_AT_MOST >> 20
                )));
            }
            buf.extend_from_slice(&chunk);
            reader.feed(&buf);
        }
        reader
            .finish(buf)
            .map(Page::Dense)
            .map_err(CliError::Protocol)
    }

    /// Keeps a printed dense page's buffer for a later page.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() > RESERVE_AT_MOST as usize {
            // An outsized page (one very long line): not kept for the rest of the run.
            return;
        }
        buf.clear();
        let mut kept = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < BUFFERS_KEPT {
            kept.push(buf);
        }
    }

    /// A body read whole, but never more than `limit` bytes: a server (or whatever answers at
    /// its address) cannot make the CLI hold more than that.
    async fn bounded(
        &self,
        resp: &mut reqwest::Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, CliError> {
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.cut(&e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(CliError::Protocol(format!(
                    "{what} is larger than {} KB, more than the API sends",
                    limit >> 10
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A body that stopped arriving.
    fn cut(&self, e: &reqwest::Error) -> CliError {
        CliError::Unreachable(self.settings.api_url.clone(), root_cause(e))
    }

    /// Recent executions, newest first (`GET /api/v1/executions`).
    pub async fn executions(
        &self,
        limit: u64,
        days: u64,
    ) -> Result<runvoy_core::wire::ExecutionsResponse, CliError> {
        let url = format!(
            "{}/api/v1/executions?limit={limit}&days={days}",
            self.settings.api_url
        );
        self.send("", self.http.get(url)).await
    }

    pub async fn status(&self, id: &str) -> Result<StatusResponse, CliError> {
        let url = format!("{}/api/v1/executions/{id}", self.settings.api_url);
        self.send(id, self.http.get(url)).await
    }

    /// Starts a command on the local stack; returns the execution id.
    pub async fn run(&self, command: &[String]) -> Result<String, CliError> {
        let url = format!("{}/local/v1/executions", self.settings.api_url);
        let v: serde_json::Value = self
            .send(
                "",
                self.http
                    .post(url)
                    .json(&serde_json::json!({ "command": command })),
            )
            .await?;
        v["execution_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CliError::Protocol("no execution_id in the response".into()))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        id: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let mut resp = self.respond(id, req).await?;
        let body = self.bounded(&mut resp, BODY_AT_MOST, "an answer").await?;
        serde_json::from_slice(&body).map_err(|e| CliError::Protocol(e.to_string()))
    }

    /// A successful response, its body still to read; any other answer as the error it means.
    async fn respond(
        &self,
        id: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let resp = req
            .header("X-API-Key", &self.settings.api_key)
            .send()
            .await
            .map_err(|e| CliError::Unreachable(self.settings.api_url.clone(), root_cause(&e)))?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("?")
                .to_string();
            return Err(CliError::Redirected(status, to));
        }
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        // At most the first 64 KB of an error answer: the sentence is at its start.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() as u64 >= ERROR_AT_MOST {
                body.truncate(ERROR_AT_MOST as usize);
                break;
            }
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            401 => CliError::Unauthorized,
            403 => CliError::Forbidden(message),
            404 if !id.is_empty() && message.contains("was not found") => {
                CliError::NotFound(id.to_string())
            }
            _ => CliError::Server(status, message),
        })
    }
}

/// The media type of a response, without parameters.
fn content_type(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
}

/// The innermost error's text ("Connection refused (os error 111)"), not the URL again.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
