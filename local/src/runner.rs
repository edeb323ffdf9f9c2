//! Runs a command as an execution: its stdout and stderr lines go to the local log source (and
//! on to the subscription emulator), its exit becomes the completion with its exit code.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runvoy_core::Status;
use runvoy_core::api::ApiError;
use runvoy_core::ports::Clock;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::App;

/// Longest line kept whole; longer output is split into events of this size.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Lines per source batch, and how long a partial batch may wait.
const BATCH_LINES: usize = 500;
const BATCH_WAIT: Duration = Duration::from_millis(10);

/// The process groups of the commands a stack started and that have not ended (their
/// leaders' pids): each command runs in a group of its own, so that what it starts ends with it.
#[derive(Debug, Default)]
pub struct ProcessGroups {
    pids: Mutex<BTreeSet<u32>>,
}

impl ProcessGroups {
    fn pids(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `command` with its output piped, in a process group of its own; a clear 400
    /// when it cannot.
    pub fn spawn(&self, command: &[String]) -> Result<Child, ApiError> {
        let Some(program) = command.first().filter(|p| !p.is_empty()) else {
            return Err(ApiError::bad_request(
                "command must be a non-empty array of strings, e.g. [\"sh\",\"-c\",\"echo hi\"]",
            ));
        };
        let mut cmd = Command::new(program);
        cmd.args(&command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| ApiError::bad_request(format!("cannot start '{program}': {e}")))?;
        if let Some(pid) = child.id() {
            self.pids().insert(pid);
        }
        Ok(child)
    }

    /// Waits for a command to exit, then ends what it left running in its group (as ECS
    /// stops a task when its main process exits).
    pub async fn wait(&self, child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
        let pid = child.id();
        let status = child.wait().await;
        if let Some(pid) = pid {
            signal_group(pid, "KILL");
            self.pids().remove(&pid);
        }
        status
    }

    /// Ends every running command's group: `TERM`, then `KILL` a second later. Called when
    /// the stack stops.
    pub async fn end_all(&self) {
        let pids: Vec<u32> = std::mem::take(&mut *self.pids()).into_iter().collect();
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            signal_group(*pid, "TERM");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for pid in &pids {
            signal_group(*pid, "KILL");
        }
    }
}

/// Signals the process group `pid` leads, with the shell's own `kill` (`kill -SIG -PGID`, which
/// dash and bash both take; this crate has no unsafe code for `kill(2)`, and the `kill` program
/// is not on every machine).
fn signal_group(pid: u32, signal: &str) {
    let _ = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{signal} -\"$0\""), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Starts `command`; returns the new execution's id once its stream and head exist.
pub async fn start(app: Arc<App>, command: Vec<String>) -> Result<String, ApiError> {
    let child = app.groups.spawn(&command)?;
    let execution_id = runvoy_runtime::random_hex(16);
    let now = app.clock.now_ms();
    app.source.create_stream(&execution_id, now)?;
    app.record_run(&execution_id, &command, now)?;
    // Creates the head, so the execution is readable at once.
    app.reconciler.reconcile(&execution_id).await?;
    tokio::spawn(pump(app, execution_id.clone(), child));
    Ok(execution_id)
}

async fn pump(app: Arc<App>, execution_id: String, mut child: Child) {
    let (tx, mut rx) = mpsc::channel::<Vec<String>>(64);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_chunks(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_chunks(err, tx.clone()));
    }
    drop(tx);
    let mut buf: Vec<(i64, String)> = Vec::new();
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(lines) => {
                    // Lines of one read share a timestamp, as ECS's awslogs driver stamps them.
                    let now = app.clock.now_ms();
                    buf.extend(lines.into_iter().map(|l| (now, l)));
                    if buf.len() >= BATCH_LINES {
                        app.write_source(&execution_id, std::mem::take(&mut buf));
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep(BATCH_WAIT), if !buf.is_empty() => {
                app.write_source(&execution_id, std::mem::take(&mut buf));
            }
        }
    }
    if !buf.is_empty() {
        app.write_source(&execution_id, buf);
    }
    let (status, code) = match app.groups.wait(&mut child).await {
        Ok(s) => exit_status(s),
        Err(_) => (Status::Failed, None),
    };
    // Completion reconciles the tail itself, so lines still in the emulator are not missed.
    for attempt in 0..10u32 {
        match app
            .completer
            .complete(&execution_id, status, code, None, None)
            .await
        {
            Ok(_) => break,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
            Err(e) => {
                eprintln!("runvoy-local: completing execution {execution_id} failed: {e}");
                break;
            }
        }
    }
    let _ = app.finish_run(&execution_id);
}

pub fn exit_status(s: std::process::ExitStatus) -> (Status, Option<i32>) {
    if let Some(code) = s.code() {
        let status = if code == 0 {
            Status::Succeeded
        } else {
            Status::Failed
        };
        return (status, Some(code));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return (Status::Stopped, Some(128 + sig));
        }
    }
    (Status::Failed, None)
}

/// Reads lines (lossy UTF-8, without the line ending), splitting any longer than
/// [`MAX_LINE_BYTES`], and sends the complete lines of each read together, as a log driver
/// sees them.
pub async fn read_chunks<R: AsyncRead + Unpin>(r: R, tx: mpsc::Sender<Vec<String>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => {
                if !line.is_empty() {
                    let _ = tx.send(vec![to_text(&line)]).await;
                }
                return;
            }
            Ok(chunk) => chunk,
        };
        let mut lines = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = MAX_LINE_BYTES - line.len();
            match rest.iter().take(room).position(|b| *b == b'\n') {
                Some(nl) => {
                    line.extend_from_slice(&rest[..nl]);
                    lines.push(to_text(&line));
                    line.clear();
                    rest = &rest[nl + 1..];
                }
                None => {
                    let n = rest.len().min(room);
                    line.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if line.len() >= MAX_LINE_BYTES {
                        lines.push(to_text(&line));
                        line.clear();
                    }
                }
            }
        }
        let consumed = chunk.len();
        reader.consume(consumed);
        if !lines.is_empty() && tx.send(lines).await.is_err() {
            return;
        }
    }
}

fn to_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}
