//! `runvoy`: stream execution logs in strict index order, complete and without duplicates.

mod error;
mod follow;
mod http;
mod notice;
mod output;
mod settings;
mod terminal;

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
    /// Show an execution's status.
    Status {
        execution_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
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
    let settings = settings::resolve(cli.api_url, cli.api_key, cli.profile)?;
    let client = ApiClient::new(settings)?;
    match cli.command {
        Command::Logs { execution_id, args } => logs(&client, &execution_id, args, notices).await,
        Command::Run { args, command } => {
            let id = client.run(&command).await?;
            notices.always(&format!("execution {id}"));
            logs(&client, &id, args, notices).await
        }
        Command::Status {
            execution_id,
            output,
        } => {
            let s = client.status(&execution_id).await?;
            match output {
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string(&s).expect("status serializes"))
                }
                OutputFormat::Text => {
                    let mut line = format!(
                        "{}\t{}\tlast_index={}",
                        s.execution_id,
                        s.status.as_str(),
                        s.last_index
                    );
                    if let Some(f) = s.final_index {
                        line.push_str(&format!("\tfinal_index={f}"));
                    }
                    if let Some(c) = s.exit_code {
                        line.push_str(&format!("\texit_code={c}"));
                    }
                    println!("{line}");
                }
            }
            Ok(0)
        }
    }
}

async fn logs(
    client: &ApiClient,
    id: &str,
    args: LogArgs,
    notices: Notices,
) -> Result<i32, CliError> {
    let mut printer = Printer::new(Format {
        json: args.json,
        timestamps: args.timestamps,
        index: args.index,
        terminal_safe: !args.raw && std::io::stdout().is_terminal(),
    });
    // Event ids are printed with --json only: other formats take the dense pages.
    let client = client.clone().with_dense_pages(!args.json);
    let follow = Follow::new(&client, id, &mut printer, notices, args.since_index);
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
