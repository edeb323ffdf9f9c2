//! `runvoy`: stream execution logs in strict index order, complete and without duplicates.

mod error;
mod follow;
mod http;
mod notice;
mod output;
mod settings;
mod terminal;
mod when;

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use crate::error::CliError;
use crate::follow::Follow;
use crate::http::ApiClient;
use crate::notice::Notices;
use crate::output::{Format, Printer};

/// Exit code for the CLI's own failures (unreachable, unauthorized, unknown execution).
const EXIT_CLI_FAILURE: u8 = 125;
/// Exit code for a usage error.
const EXIT_USAGE: u8 = 2;
/// How long `logs` waits for an execution that does not exist yet, by default.
const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Stream runvoy execution logs: every line exactly once, in order, however late you connect.
#[derive(Debug, Parser)]
#[command(name = "runvoy", version, about)]
struct Cli {
    /// Base URL of the runvoy API [env: RUNVOY_API_URL; default: the config file].
    #[arg(long, global = true)]
    api_url: Option<String>,
    /// API key [env: RUNVOY_API_KEY; default: the config file].
    #[arg(long, global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Profile of the config file to use [env: RUNVOY_PROFILE].
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Allow plain http:// to another machine (the key then crosses the network in clear).
    #[arg(long, global = true)]
    insecure: bool,
    /// Print progress notices even when stderr is not a terminal.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct LogArgs {
    /// Print what is there now and exit 0 instead of following until the execution ends.
    #[arg(long)]
    no_follow: bool,
    /// Start after this index (resume where a previous run stopped).
    #[arg(long, value_name = "N", default_value_t = 0)]
    since_index: u64,
    /// Start with the last N lines (then follow).
    #[arg(long, value_name = "N", conflicts_with = "since")]
    tail: Option<u64>,
    /// Start at the first line at or after this time: a duration back from now (10m, 1h30m,
    /// 2d) or an RFC 3339 time (2026-12-07T12:00:00Z). Later lines follow in index order.
    #[arg(long, value_name = "DURATION|TIME")]
    since: Option<String>,
    /// How long to wait for an execution that does not exist yet (an ECS task logs its first
    /// line only once its container runs), e.g. 30s, 5m; 0 fails at once. Default: 5m when
    /// following, 0 with --no-follow.
    #[arg(long, value_name = "DURATION", value_parser = when::parse_duration)]
    wait: Option<std::time::Duration>,
    /// One JSON object per line: {"index","event_id","timestamp","message"}.
    #[arg(long)]
    json: bool,
    /// Prefix each line with its timestamp (RFC 3339, UTC).
    #[arg(long)]
    timestamps: bool,
    /// Prefix each line with its index.
    #[arg(long)]
    index: bool,
    /// Write messages byte-exact to a terminal too (by default a terminal gets colours and tabs,
    /// and other control characters shown as ^X; pipes and files always get the bytes).
    #[arg(long)]
    raw: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream an execution's logs until it ends; exits with the execution's exit code.
    Logs {
        /// The execution id (the ECS task id).
        execution_id: String,
        #[command(flatten)]
        args: LogArgs,
    },
    /// Run a command as an execution on the local stack and stream its logs.
    Run {
        #[command(flatten)]
        args: LogArgs,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Show an execution's status (and the address of its page).
    Status {
        execution_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
        /// The same as --output json.
        #[arg(long)]
        json: bool,
    },
    /// List recent executions, newest first: id, status, exit code, lines, started, age.
    Ls {
        /// One JSON object per execution, per line.
        #[arg(long)]
        json: bool,
        /// At most this many (1–200).
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Executions started in the last this many days (1–31).
        #[arg(long, default_value_t = 7)]
        days: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let notices = Notices::new(cli.verbose);
    // One process-wide TLS provider for both HTTPS and WSS.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // One worker thread: the next page is fetched and decoded there while this thread prints.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            notices.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_CLI_FAILURE);
        }
    };
    let result = runtime.block_on(run(cli, notices));
    // Exit without waiting for a page still being fetched or decoded (after `| head`).
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(process_code(code)),
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(CliError::Usage(e)) => {
            notices.error(&e);
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            notices.error(&e.to_string());
            ExitCode::from(EXIT_CLI_FAILURE)
        }
    }
}

/// The process exit code for an execution's exit code: 0 only for 0; a code a process cannot
/// exit with (negative, or above 255) is 1, never a success.
fn process_code(code: i32) -> u8 {
    match code {
        0 => 0,
        1..=255 => code as u8,
        _ => 1,
    }
}

async fn run(cli: Cli, notices: Notices) -> Result<i32, CliError> {
    let settings = settings::resolve(cli.api_url, cli.api_key, cli.profile, cli.insecure)?;
    let client = ApiClient::new(settings)?;
    match cli.command {
        Command::Logs { execution_id, args } => {
            notices.info(&format!("page: {}", client.page_url(&execution_id)));
            logs(&client, &execution_id, args, notices).await
        }
        Command::Run { args, command } => {
            let id = client.run(&command).await?;
            notices.always(&format!("execution {id}"));
            notices.info(&format!("page: {}", client.page_url(&id)));
            logs(&client, &id, args, notices).await
        }
        Command::Ls { json, limit, days } => list(&client, json, limit, days).await,
        Command::Status {
            execution_id,
            output,
            json,
        } => {
            let s = client.status(&execution_id).await?;
            let page = client.page_url(&execution_id);
            let safe = |t: &str| terminal::visible_string(t);
            if json || matches!(output, OutputFormat::Json) {
                let mut v = serde_json::to_value(&s).expect("status serializes");
                v["page_url"] = serde_json::json!(page);
                println!("{v}");
            } else {
                // Text for a person: the server's text cannot drive the terminal.
                let mut line = format!(
                    "{}\t{}\tlast_index={}",
                    safe(&s.execution_id),
                    s.status.as_str(),
                    s.last_index
                );
                if let Some(f) = s.final_index {
                    line.push_str(&format!("\tfinal_index={f}"));
                }
                if let Some(c) = s.exit_code {
                    line.push_str(&format!("\texit_code={c}"));
                }
                line.push_str(&format!("\tpage={}", safe(&page)));
                println!("{line}");
            }
            Ok(0)
        }
    }
}

/// `runvoy ls`: recent executions, newest first; the lines of a running one from its status.
async fn list(client: &ApiClient, json: bool, limit: u64, days: u64) -> Result<i32, CliError> {
    let list = client.executions(limit, days).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut rows = Vec::new();
    for e in list.executions {
        let lines = match e.final_index {
            Some(f) => Some(f),
            None => client
                .status(&e.execution_id)
                .await
                .ok()
                .map(|s| s.last_index),
        };
        rows.push((e, lines));
    }
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if json {
        for (e, lines) in &rows {
            let v = serde_json::json!({
                "execution_id": e.execution_id,
                "status": e.status,
                "exit_code": e.exit_code,
                "lines": lines,
                "created_at": e.created_at,
                "started": output::rfc3339_ms(e.created_at),
                "page_url": client.page_url(&e.execution_id),
            });
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    writeln!(
        out,
        "{:<34} {:<9} {:>4} {:>9}  {:<24} {:>6}",
        "EXECUTION", "STATUS", "EXIT", "LINES", "STARTED", "AGE"
    )?;
    for (e, lines) in &rows {
        let age = std::time::Duration::from_millis((now - e.created_at).max(0) as u64);
        writeln!(
            out,
            "{:<34} {:<9} {:>4} {:>9}  {:<24} {:>6}",
            terminal::visible_string(&e.execution_id),
            e.status.as_str(),
            e.exit_code.map_or("-".to_string(), |c| c.to_string()),
            lines.map_or("?".to_string(), |l| l.to_string()),
            output::rfc3339_ms(e.created_at),
            when::show(age),
        )?;
    }
    Ok(0)
}

async fn logs(
    client: &ApiClient,
    id: &str,
    args: LogArgs,
    notices: Notices,
) -> Result<i32, CliError> {
    let start = match (args.tail, &args.since) {
        (Some(n), _) => Some(crate::http::Start::Tail(n)),
        (None, Some(text)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Some(crate::http::Start::Time(
                when::parse_since(text, now).map_err(CliError::Usage)?,
            ))
        }
        (None, None) => None,
    };
    let wait = args.wait.unwrap_or(if args.no_follow {
        std::time::Duration::ZERO
    } else {
        DEFAULT_WAIT
    });
    let mut printer = Printer::new(Format {
        json: args.json,
        timestamps: args.timestamps,
        index: args.index,
        terminal_safe: !args.raw && std::io::stdout().is_terminal(),
    });
    // Event ids are printed with --json only: other formats take the dense pages.
    let client = client.clone().with_dense_pages(!args.json);
    let follow = Follow::new(&client, id, &mut printer, notices, args.since_index)
        .starting(start)
        .waiting(wait);
    if args.no_follow {
        follow.once().await
    } else {
        follow.run().await
    }
}

#[cfg(test)]
mod tests {
    use super::process_code;

    #[test]
    fn only_zero_exits_zero() {
        assert_eq!(process_code(0), 0);
        assert_eq!(process_code(3), 3);
        assert_eq!(process_code(255), 255);
        assert_eq!(process_code(-1), 1);
        assert_eq!(process_code(256), 1);
        assert_eq!(process_code(i32::MIN), 1);
    }
}
