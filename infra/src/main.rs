//! `deploy`: runs the whole stack locally (`up`, env `local`), or deploys it to AWS.

mod local;
mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Deploy runvoy log streaming.
#[derive(Debug, Parser)]
#[command(name = "deploy", version, about)]
struct Cli {
    /// More output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring an environment up. `local` (the default) runs the whole stack on this machine in
    /// the foreground until Ctrl+C.
    Up(UpArgs),
    /// Print the CloudFormation template (deterministic; checked in at
    /// deployments/cloudformation-backend.yaml).
    Render {
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Environment name: `local`, or one with a `deployments/<env>.toml`.
    #[arg(long, default_value = "local")]
    env: String,
    /// Address of the local HTTP API and WebSocket.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Where the local stack keeps its database and credentials.
    #[arg(long, default_value = ".runvoy/local")]
    state_dir: PathBuf,
    /// API key to accept (default: generated once and kept in the state directory).
    #[arg(long, env = "RUNVOY_LOCAL_API_KEY")]
    api_key: Option<String>,
    /// Make the subscription emulator misbehave, e.g. dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-500.
    #[arg(long)]
    chaos: Option<runvoy_local::Chaos>,
    /// Do not write the CLI config file.
    #[arg(long)]
    no_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) if args.env == "local" => local::up(args).await,
            Command::Render { json } => {
                let t = template::backend();
                if json {
                    println!("{:#}", t.to_value());
                } else {
                    print!("{}", t.to_yaml());
                }
                Ok(())
            }
            Command::Up(args) => Err(anyhow::anyhow!(
                "environment '{}' is not deployable from this build: only `--env local` is available",
                args.env
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
