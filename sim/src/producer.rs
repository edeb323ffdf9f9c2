//! The producers of the sim, in place of ECS tasks: `POST /local/v1/streams/{id}/events` writes
//! lines with `PutLogEvents` into the runner group on moto; `POST /local/v1/executions` runs a
//! command, writes its output the way ECS's awslogs driver does (lines of one read share a
//! millisecond) and emits the ECS "Task State Change" events at its start and stop. Plus the
//! sim's own controls: `POST /local/v1/sim/ttl-sweep` and `GET /local/v1/sim/stats`.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runvoy_core::api::{ApiError, validate_execution_id};
use runvoy_local::http::{MAX_PRODUCER_BODY, PutEvents, RunRequest};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Shared;

/// CloudWatch's `PutLogEvents` limits: events and bytes (each event counts 26 bytes more).
const PUT_EVENTS: usize = 10_000;
const PUT_BYTES: usize = 1_048_576;
/// How long the runner holds lines before writing them (ECS's awslogs driver: up to 5 s).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/local/v1/executions", post(run_command))
        .route("/local/v1/streams/{id}/events", post(put_events))
        .route("/local/v1/sim/ttl-sweep", post(ttl_sweep))
        .route("/local/v1/sim/schedule", post(fire_schedule))
        .route("/local/v1/sim/stats", get(stats))
        .route(
            "/local/v1/sim/deliveries",
            get(deliveries).post(trace_deliveries),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared)
}

fn respond(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    let r = e.into_response();
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        r.body,
    )
        .into_response()
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    shared.keys.check(key).map_err(ApiError::from_denied)
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        "payload_too_large",
        "the request body is larger than 16 MB; send smaller batches",
    )
}

async fn body_json<T: for<'a> Deserialize<'a>>(body: Body, example: &str) -> Result<T, ApiError> {
    let bytes = to_bytes(body, MAX_PRODUCER_BODY)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON like {example}: {e}")))
}

async fn put_events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        authorize(&shared, &headers)?;
        validate_execution_id(&id)?;
        let body = to_bytes(body, MAX_PRODUCER_BODY)
            .await
            .map_err(|_| too_large())?;
        let lines = PutEvents::parse(&body, crate::lambda::now_ms())?;
        let n = lines.len();
        shared.create_stream(&id).await?;
        shared.put(&id, lines).await?;
        Ok(respond(200, json!({"execution_id": id, "accepted": n})))
    }
    .await;
    result.unwrap_or_else(error)
}

impl Shared {
    pub(crate) async fn create_stream(&self, id: &str) -> Result<(), ApiError> {
        let r = self
            .logs
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(self.stream_name(id))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(()),
            Err(e) => Err(ApiError::new(
                502,
                "source_unavailable",
                format!(
                    "CloudWatch Logs (moto) refused CreateLogStream: {}",
                    e.message().unwrap_or("no message")
                ),
            )),
        }
    }

    pub(crate) fn stream_name(&self, id: &str) -> String {
        self.stream_template.replace("{execution_id}", id)
    }

    /// `PutLogEvents` in CloudWatch's batches: chronological (a stable sort, so lines of one
    /// millisecond keep their order), ≤ 10,000 events, ≤ 1 MB.
    pub(crate) async fn put(
        &self,
        id: &str,
        mut lines: Vec<(i64, String)>,
    ) -> Result<(), ApiError> {
        lines.sort_by_key(|l| l.0);
        let stream = self.stream_name(id);
        let mut batch: Vec<InputLogEvent> = Vec::new();
        let mut bytes = 0;
        let total = lines.len();
        for (i, (ts, message)) in lines.into_iter().enumerate() {
            let size = message.len() + 26;
            if !batch.is_empty() && (batch.len() == PUT_EVENTS || bytes + size > PUT_BYTES) {
                self.put_batch(&stream, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(
                InputLogEvent::builder()
                    .timestamp(ts)
                    .message(message)
                    .build()
                    .expect("timestamp and message are set"),
            );
            if i + 1 == total {
                self.put_batch(&stream, std::mem::take(&mut batch)).await?;
            }
        }
        if let Some(s) = &self.subscription {
            s.poke();
        }
        Ok(())
    }

    async fn put_batch(&self, stream: &str, batch: Vec<InputLogEvent>) -> Result<(), ApiError> {
        let events = batch.len() as u64;
        let bytes: u64 = batch.iter().map(|e| e.message().len() as u64).sum();
        let out = self
            .logs
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(stream)
            .set_log_events(Some(batch))
            .send()
            .await
            .map_err(|e| {
                ApiError::new(
                    502,
                    "source_unavailable",
                    format!(
                        "CloudWatch Logs (moto) refused PutLogEvents: {}",
                        e.message().unwrap_or("no message")
                    ),
                )
            })?;
        self.ledger.ingested(events, bytes);
        if let Some(r) = out.rejected_log_events_info() {
            return Err(ApiError::bad_request(format!(
                "CloudWatch Logs rejected events (too old: up to index {:?}, too new: from index {:?}); timestamps must be within the last 14 days and at most 2 hours ahead",
                r.too_old_log_event_end_index(),
                r.too_new_log_event_start_index()
            )));
        }
        Ok(())
    }
}

async fn run_command(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        authorize(&shared, &headers)?;
        let req: RunRequest = body_json(body, r#"{"command":["sh","-c","echo hi"]}"#).await?;
        let id = start(shared.clone(), req.command).await?;
        Ok::<_, ApiError>(respond(
            201,
            json!({"execution_id": id, "status": "RUNNING"}),
        ))
    }
    .await;
    result.unwrap_or_else(error)
}

/// Starts `command` as an ECS task would run it; returns the execution (task) id once its
/// stream exists.
async fn start(shared: Arc<Shared>, command: Vec<String>) -> Result<String, ApiError> {
    let mut child = shared.groups.spawn(&command)?;
    let id = runvoy_runtime::random_hex(16);
    shared.create_stream(&id).await?;
    let _ = std::fs::create_dir_all(&shared.runs);
    let _ = std::fs::write(shared.runs.join(&id), command.join(" "));
    shared.task_event(&id, "RUNNING", None);
    let (tx, mut rx) = mpsc::channel::<Vec<String>>(64);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(runvoy_local::runner::read_chunks(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(runvoy_local::runner::read_chunks(err, tx.clone()));
    }
    drop(tx);
    let task_id = id.clone();
    tokio::spawn(async move {
        let mut buf: Vec<(i64, String)> = Vec::new();
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(lines) => {
                        let now = crate::lambda::now_ms();
                        buf.extend(lines.into_iter().map(|l| (now, l)));
                        if buf.len() >= PUT_EVENTS {
                            write(&shared, &task_id, &mut buf).await;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep(FLUSH_EVERY), if !buf.is_empty() => {
                    write(&shared, &task_id, &mut buf).await;
                }
            }
        }
        write(&shared, &task_id, &mut buf).await;
        let code = match shared.groups.wait(&mut child).await {
            Ok(s) => runvoy_local::runner::exit_status(s).1,
            Err(_) => None,
        };
        shared.task_event(&task_id, "STOPPED", code);
        let _ = std::fs::remove_file(shared.runs.join(&task_id));
    });
    Ok(id)
}

impl Shared {
    /// Tasks whose commands a stop of the sim killed: their STOPPED event (without an exit
    /// code) is emitted now, as ECS would have, so their executions complete.
    pub(crate) fn stop_interrupted_runs(&self) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(&self.runs)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(id) = entry.file_name().to_str() {
                self.task_event(id, "STOPPED", None);
                n += 1;
            }
            let _ = std::fs::remove_file(entry.path());
        }
        n
    }
}

async fn write(shared: &Shared, id: &str, buf: &mut Vec<(i64, String)>) {
    if buf.is_empty() {
        return;
    }
    let lines = std::mem::take(buf);
    for attempt in 0..5u32 {
        match shared.put(id, lines.clone()).await {
            Ok(()) => return,
            Err(e) => {
                eprintln!("sim: writing task {id}'s output failed: {}", e.message);
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
}

impl Shared {
    /// Emits an "ECS Task State Change" event for the runner task `id`.
    fn task_event(&self, id: &str, status: &str, exit_code: Option<i32>) {
        let p = &self.place;
        let task_arn = format!(
            "arn:aws:ecs:{}:{}:task/{}/{id}",
            p.region, p.account, self.cluster
        );
        let cluster_arn = format!(
            "arn:aws:ecs:{}:{}:cluster/{}",
            p.region, p.account, self.cluster
        );
        let mut container = json!({"name": "runner", "lastStatus": status, "taskArn": task_arn});
        if let Some(c) = exit_code {
            container["exitCode"] = json!(c);
        }
        let mut detail = json!({
            "clusterArn": cluster_arn,
            "taskArn": task_arn,
            "lastStatus": status,
            "desiredStatus": if status == "STOPPED" { "STOPPED" } else { "RUNNING" },
            "group": "family:runvoy-runner",
            "launchType": "FARGATE",
            "containers": [container],
        });
        let now = crate::lambda::rfc3339(crate::lambda::now_ms());
        if status == "STOPPED" {
            detail["stopCode"] = json!("EssentialContainerExited");
            detail["stoppedReason"] = json!("Essential container in task exited");
            detail["stoppingAt"] = json!(now);
            detail["executionStoppedAt"] = json!(now);
            detail["stoppedAt"] = json!(now);
        } else {
            detail["startedAt"] = json!(now);
        }
        let matched = self
            .bus
            .put("aws.ecs", "ECS Task State Change", vec![task_arn], detail);
        if status == "STOPPED" && matched.is_empty() {
            eprintln!("sim: no rule matched the STOPPED event of task {id}; it will not complete");
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Sweep {
    /// Sweep as if it were this time (ms); default now.
    now: Option<i64>,
}

async fn ttl_sweep(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        authorize(&shared, &headers)?;
        let req: Sweep = optional_json(body, r#"{"now": 1767225600000}"#).await?;
        let now = req.now.unwrap_or_else(crate::lambda::now_ms);
        let deleted = shared
            .sweeper
            .sweep(now / 1000)
            .await
            .map_err(|e| ApiError::new(502, "sweep_failed", e))?;
        Ok::<_, ApiError>(respond(200, json!({"deleted": deleted, "now": now})))
    }
    .await;
    result.unwrap_or_else(error)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Fire {
    /// The rule's logical id; default every scheduled rule.
    rule: Option<String>,
}

/// An optional JSON body (64 KB at most): empty gives the default; else it must parse, or the
/// answer shows what it should look like (`example`).
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = to_bytes(body, 64 * 1024).await.unwrap_or_default();
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON like {example}: {e}")))
}

/// Fires the template's scheduled rules now (the janitor), instead of at their next period.
async fn fire_schedule(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        authorize(&shared, &headers)?;
        let req: Fire = optional_json(body, r#"{"rule": "JanitorSchedule"}"#).await?;
        let fired = shared.bus.fire_schedules(req.rule.as_deref());
        Ok::<_, ApiError>(respond(200, json!({"fired": fired})))
    }
    .await;
    result.unwrap_or_else(error)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TraceRequest {
    /// Lines, pushes and moto calls kept at most.
    max_records: Option<usize>,
}

/// Starts the delivery trace (again, forgetting what it kept).
async fn trace_deliveries(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        authorize(&shared, &headers)?;
        let req: TraceRequest = optional_json(body, r#"{"max_records": 1000000}"#).await?;
        let max = req.max_records.unwrap_or(crate::trace::DEFAULT_MAX_RECORDS);
        shared.trace.start(max);
        Ok::<_, ApiError>(respond(200, json!({"on": true, "max_records": max})))
    }
    .await;
    result.unwrap_or_else(error)
}

/// One execution's traced deliveries and pushes.
async fn deliveries(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(e) = authorize(&shared, &headers) {
        return error(e);
    }
    let Some(execution) = query.get("execution") else {
        return error(ApiError::bad_request(
            "name the execution: /local/v1/sim/deliveries?execution=ID",
        ));
    };
    respond(200, shared.trace.report(execution))
}

async fn stats(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&shared, &headers) {
        return error(e);
    }
    respond(200, shared.stats())
}
