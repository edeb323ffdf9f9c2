//! Lambda, emulated: a function is its real binary run in execution environments (child
//! processes, one invocation at a time each, kept warm), each behind its own Runtime API, with
//! the environment, timeout and memory the template gives the function. Synchronous invokes
//! return the response or the error Lambda would; asynchronous invokes are retried as the
//! function's `EventInvokeConfig` says and then sent to its on-failure destination.

pub mod runtime;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc, oneshot};

use runtime::{Invocation, RuntimeApi, Settled};

/// How long an environment may take to start (AWS: 10 s of init).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the template says about one function, resolved.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub name: String,
    pub arn: String,
    pub binary: PathBuf,
    /// The template's `Environment.Variables` plus what Lambda itself sets.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_mb: u64,
    pub log_file: PathBuf,
    pub max_concurrency: usize,
}

/// Why an invocation failed, as Lambda reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// The function returned an error, crashed, or ran out of memory.
    Function { error_type: String, message: String },
    /// It ran past its timeout and its environment was stopped.
    Timeout(Duration),
    /// Its response is larger than 6 MB.
    ResponseTooLarge(usize),
    /// Its payload is larger than the invocation type allows.
    PayloadTooLarge(usize),
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Function {
                error_type,
                message,
            } => write!(f, "{error_type}: {message}"),
            InvokeError::Timeout(d) => {
                write!(f, "Task timed out after {:.2} seconds", d.as_secs_f64())
            }
            InvokeError::ResponseTooLarge(n) => write!(
                f,
                "Function.ResponseSizeTooLarge: Response payload size ({n} bytes) exceeded maximum allowed payload size (6291556 bytes)."
            ),
            InvokeError::PayloadTooLarge(n) => {
                write!(f, "RequestEntityTooLargeException: payload of {n} bytes")
            }
        }
    }
}

/// Counters of one function.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FunctionStats {
    pub invocations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub cold_starts: u64,
    pub max_duration_ms: u64,
    pub max_rss_mb: u64,
    /// Asynchronous events whose every attempt failed (sent to the on-failure destination).
    pub async_exhausted: u64,
    /// Lambda's billed duration: every invocation from its environment being taken (started,
    /// on a cold start) to its result, rounded up to the millisecond, added up.
    pub billed_ms: u64,
    /// The memory the function is configured with (billed with the duration).
    pub memory_mb: u64,
    /// Lines the function and Lambda wrote to its log (Lambda ingests them into CloudWatch
    /// Logs): events and bytes.
    pub log_events: u64,
    pub log_bytes: u64,
}

/// Lines written to a function's log.
#[derive(Default)]
struct Logged {
    events: AtomicU64,
    bytes: AtomicU64,
}

impl Logged {
    fn add(&self, line: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
    }
}

/// A warm execution environment.
struct Environment {
    queue: mpsc::Sender<Invocation>,
    api: Arc<RuntimeApi>,
    /// Dropping it stops the process.
    stop: Option<oneshot::Sender<()>>,
    exited: tokio::sync::watch::Receiver<Option<String>>,
}

impl Drop for Environment {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub struct Function {
    pub spec: FunctionSpec,
    idle: Mutex<Vec<Environment>>,
    slots: Semaphore,
    stats: Mutex<FunctionStats>,
    /// Highest resident memory of any environment, MiB.
    peak_rss: Arc<Mutex<u64>>,
    logged: Arc<Logged>,
}

impl Function {
    pub fn new(spec: FunctionSpec) -> Arc<Function> {
        Arc::new(Function {
            slots: Semaphore::new(spec.max_concurrency.max(1)),
            spec,
            idle: Mutex::default(),
            stats: Mutex::default(),
            peak_rss: Arc::default(),
            logged: Arc::default(),
        })
    }

    pub fn stats(&self) -> FunctionStats {
        let mut s = self.stats.lock().expect("stats lock").clone();
        s.max_rss_mb = *self.peak_rss.lock().expect("peak lock");
        s.memory_mb = self.spec.memory_mb;
        s.log_events = self.logged.events.load(Ordering::Relaxed);
        s.log_bytes = self.logged.bytes.load(Ordering::Relaxed);
        s
    }

    /// Stops every idle execution environment.
    pub fn stop_all(&self) {
        self.idle.lock().expect("idle lock").clear();
    }

    /// A synchronous (`RequestResponse`) invocation.
    pub async fn invoke(&self, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        self.invoke_observed(payload, || {}).await
    }

    /// An invocation that calls `on_start` when the function's runtime takes the event.
    pub async fn invoke_observed(
        &self,
        payload: Vec<u8>,
        on_start: impl FnOnce() + Send,
    ) -> Result<Vec<u8>, InvokeError> {
        if payload.len() > runtime::MAX_RESPONSE_BYTES {
            return Err(InvokeError::PayloadTooLarge(payload.len()));
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        let started = Instant::now();
        let env = match self.idle.lock().expect("idle lock").pop() {
            Some(e) if e.exited.borrow().is_none() => Some(e),
            _ => None,
        };
        let env = match env {
            Some(e) => e,
            None => {
                self.stats.lock().expect("stats lock").cold_starts += 1;
                self.start()
                    .await
                    .map_err(|message| InvokeError::Function {
                        error_type: "Runtime.InitError".into(),
                        message,
                    })?
            }
        };
        let request_id = uuid_like();
        let (picked_tx, picked_rx) = oneshot::channel();
        let (settled_tx, settled_rx) = oneshot::channel();
        let deadline_ms = now_ms() + self.spec.timeout.as_millis() as i64;
        let inv = Invocation {
            request_id: request_id.clone(),
            payload,
            deadline_ms,
            function_arn: self.spec.arn.clone(),
            picked: picked_tx,
            settled: settled_tx,
        };
        self.log(&format!("START RequestId: {request_id} Version: $LATEST"))
            .await;
        let result = self.run(&env, inv, picked_rx, settled_rx, on_start).await;
        let took = started.elapsed();
        self.log(&format!(
            "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {:.2} ms\tMemory Size: {} MB{}",
            took.as_secs_f64() * 1000.0,
            self.spec.memory_mb,
            match &result {
                Err(e) => format!("\tStatus: error ({e})"),
                Ok(_) => String::new(),
            }
        ))
        .await;
        {
            let mut s = self.stats.lock().expect("stats lock");
            s.invocations += 1;
            s.max_duration_ms = s.max_duration_ms.max(took.as_millis() as u64);
            s.billed_ms += crate::ledger::billed_ms(took);
            match &result {
                Err(InvokeError::Timeout(_)) => s.timeouts += 1,
                Err(_) => s.errors += 1,
                Ok(_) => {}
            }
        }
        // An environment that failed an invocation by dying or timing out is gone; one that
        // answered (even with an error) stays warm.
        let healthy =
            env.exited.borrow().is_none() && !matches!(result, Err(InvokeError::Timeout(_)));
        if healthy {
            self.idle.lock().expect("idle lock").push(env);
        }
        result
    }

    async fn run(
        &self,
        env: &Environment,
        inv: Invocation,
        picked: oneshot::Receiver<()>,
        settled: oneshot::Receiver<Settled>,
        on_start: impl FnOnce(),
    ) -> Result<Vec<u8>, InvokeError> {
        let died = |env: &Environment| InvokeError::Function {
            error_type: "Runtime.ExitError".into(),
            message: env
                .exited
                .borrow()
                .clone()
                .or_else(|| env.api.init_error.lock().expect("init lock").clone())
                .unwrap_or_else(|| "Runtime exited without providing a reason".into()),
        };
        if env.queue.send(inv).await.is_err() {
            return Err(died(env));
        }
        let mut exited = env.exited.clone();
        tokio::select! {
            r = picked => if r.is_err() { return Err(died(env)); },
            _ = exited.wait_for(Option::is_some) => return Err(died(env)),
            _ = tokio::time::sleep(INIT_TIMEOUT) => {
                return Err(InvokeError::Function {
                    error_type: "Runtime.InitError".into(),
                    message: format!("the runtime did not ask for an invocation within {INIT_TIMEOUT:?}"),
                });
            }
        }
        on_start();
        let outcome = tokio::select! {
            s = settled => s.map_err(|_| died(env))?,
            _ = exited.wait_for(Option::is_some) => return Err(died(env)),
            _ = tokio::time::sleep(self.spec.timeout) => return Err(InvokeError::Timeout(self.spec.timeout)),
        };
        match outcome {
            Settled::Response(body) => Ok(body),
            Settled::TooLarge(n) => Err(InvokeError::ResponseTooLarge(n)),
            Settled::Error {
                error_type,
                message,
            } => Err(InvokeError::Function {
                error_type,
                message,
            }),
        }
    }

    /// Starts a new execution environment: a Runtime API on a free port and the binary.
    async fn start(&self) -> Result<Environment, String> {
        let (queue_tx, queue_rx) = mpsc::channel(1);
        let api = RuntimeApi::new(queue_rx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a Runtime API: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let router = api.clone().router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let mut cmd = Command::new(&self.spec.binary);
        cmd.env_clear()
            .envs(self.spec.env.iter().cloned())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("sim/[$LATEST]{}", &uuid_like()[..16]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} ({}): {e}",
                self.spec.name,
                self.spec.binary.display()
            )
        })?;
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(copy_lines(
                out,
                self.spec.log_file.clone(),
                self.logged.clone(),
            ));
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
        let memory = self.spec.memory_mb;
        let api2 = api.clone();
        let peak = self.peak_rss.clone();
        tokio::spawn(async move {
            let reason = supervise(child, stop_rx, memory, &peak).await;
            // The reason first: a caller woken by the abandoned invocation reads it.
            let _ = exit_tx.send(Some(reason));
            api2.abandon();
            server.abort();
        });
        Ok(Environment {
            queue: queue_tx,
            api,
            stop: Some(stop_tx),
            exited: exit_rx,
        })
    }

    /// A line of Lambda's own (`START`, `REPORT`, …), counted as one log event per line.
    async fn log(&self, line: &str) {
        for l in line.lines() {
            self.logged.add(l);
        }
        append(&self.spec.log_file, line).await;
    }
}

/// Waits for the process to end, stops it on request, and stops it when it uses more memory
/// than the function has (as Lambda does). Returns why it ended.
async fn supervise(
    mut child: tokio::process::Child,
    mut stop: oneshot::Receiver<()>,
    memory_mb: u64,
    peak: &Mutex<u64>,
) -> String {
    let pid = child.id();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(s) => format!("Runtime exited with error: {s}"),
                    Err(e) => format!("Runtime exited: {e}"),
                };
            }
            _ = &mut stop => {
                let _ = child.kill().await;
                return "stopped".into();
            }
            _ = tick.tick() => {
                if let Some(rss) = pid.and_then(rss_mb) {
                    {
                        let mut p = peak.lock().expect("peak lock");
                        *p = (*p).max(rss);
                    }
                    if rss > memory_mb {
                        let _ = child.kill().await;
                        return format!("Runtime exited with error: signal: killed (Runtime.OutOfMemory: {rss} MB used of {memory_mb} MB)");
                    }
                }
            }
        }
    }
}

/// Resident memory of a process in MiB (Linux).
fn rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

async fn copy_lines(
    out: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    file: PathBuf,
    logged: Arc<Logged>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        logged.add(&line);
        append(&file, &line).await;
    }
}

async fn append(file: &PathBuf, line: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .await
    {
        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A random request id shaped like Lambda's.
pub fn uuid_like() -> String {
    let h = runvoy_runtime::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Where an asynchronous invocation goes when every attempt failed.
#[async_trait::async_trait]
pub trait FailureDestination: Send + Sync {
    async fn send(&self, record: Value) -> Result<(), String>;
}

/// How Lambda handles asynchronous invocations of one function (its `EventInvokeConfig`).
#[derive(Clone)]
pub struct AsyncConfig {
    pub max_retries: u32,
    /// Waits before each retry (AWS: about a minute, then two; the sim is faster).
    pub retry_delays: Vec<Duration>,
    pub on_failure: Option<Arc<dyn FailureDestination>>,
    /// `--chaos lambda-dup=P`: Lambda's asynchronous invocation is at-least-once ("your
    /// function may receive the same event more than once", Lambda developer guide,
    /// *Asynchronous invocation*), and the copies can run at the same time: with probability
    /// P an event is also handed to a second, concurrent invocation.
    pub duplicate: f64,
}

/// Largest asynchronous payload Lambda accepts.
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;

impl Function {
    /// An asynchronous (`Event`) invocation: retried as configured, then sent to the on-failure
    /// destination. Resolves when the last attempt is settled.
    pub async fn invoke_async(
        self: Arc<Self>,
        payload: Vec<u8>,
        config: AsyncConfig,
    ) -> Result<(), InvokeError> {
        if payload.len() > MAX_ASYNC_PAYLOAD {
            return Err(InvokeError::PayloadTooLarge(payload.len()));
        }
        if config.duplicate > 0.0 && rand::random::<f64>() < config.duplicate {
            let (f, p, mut c) = (self.clone(), payload.clone(), config.clone());
            c.duplicate = 0.0;
            tokio::spawn(async move {
                let _ = f.invoke_async_once(p, c).await;
            });
        }
        self.invoke_async_once(payload, config).await
    }

    async fn invoke_async_once(
        self: Arc<Self>,
        payload: Vec<u8>,
        config: AsyncConfig,
    ) -> Result<(), InvokeError> {
        match self.invoke(payload.clone()).await {
            Ok(_) => Ok(()),
            Err(e) => self.retry_async(payload, config, e).await,
        }
    }

    /// The rest of an asynchronous invocation whose first attempt failed with `first`.
    pub async fn retry_async(
        self: Arc<Self>,
        payload: Vec<u8>,
        config: AsyncConfig,
        first: InvokeError,
    ) -> Result<(), InvokeError> {
        let mut last = first;
        for retry in 0..config.max_retries as usize {
            let d = config
                .retry_delays
                .get(retry)
                .or(config.retry_delays.last())
                .copied()
                .unwrap_or_default();
            tokio::time::sleep(d).await;
            match self.invoke(payload.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
        self.log(&format!(
            "async invocation failed after {} attempts: {last}",
            config.max_retries + 1
        ))
        .await;
        self.stats.lock().expect("stats lock").async_exhausted += 1;
        if let Some(dest) = &config.on_failure {
            let payload: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let record = json!({
                "version": "1.0",
                "timestamp": rfc3339(now_ms()),
                "requestContext": {
                    "requestId": uuid_like(),
                    "functionArn": format!("{}:$LATEST", self.spec.arn),
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": config.max_retries + 1,
                },
                "requestPayload": payload,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": last.to_string()},
            });
            if let Err(e) = dest.send(record).await {
                self.log(&format!(
                    "the on-failure destination refused the record: {e}"
                ))
                .await;
            }
        }
        Err(last)
    }
}

/// RFC 3339 UTC with milliseconds, as AWS writes times in events and responses.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(1_796_128_941_679), "2026-12-01T12:42:21.679Z");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_788), (2026, 12, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
