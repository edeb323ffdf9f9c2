//! `deploy`: runs the whole stack locally (`up`, env `local`), or deploys it to AWS.

mod aws;
mod local;
mod sim;
mod smoke;
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
    /// the foreground until Ctrl+C; `sim` runs the AWS path (the template, the function
    /// binaries, AWS's rules) on moto, also in the foreground.
    Up(Box<UpArgs>),
    /// Show what `up` would change on AWS (a change set, not executed). Exit status: 0 no
    /// changes, 2 changes pending, 1 an error (as `terraform plan -detailed-exitcode`).
    Diff(aws::AwsArgs),
    /// Delete an environment's stack.
    Down(aws::AwsArgs),
    /// Add a new API key (the old one stays valid) and point the CLI profile at it; with
    /// --retire-old, remove every key but the newest.
    RotateKey(RotateArgs),
    /// Print an environment's stack status and outputs.
    Status(aws::AwsArgs),
    /// Write test lines into a live stack and check I1–I6 end to end through its API.
    Smoke(SmokeArgs),
    /// Build the function zips with cargo-lambda (release, named by content hash).
    Build(aws::AwsArgs),
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
    /// Environment name: `local`, `sim`, or one with a `deployments/<env>.toml`.
    #[arg(long, default_value = "local")]
    env: String,
    /// Address of the HTTP API (local: and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Where the stack keeps its state (default .runvoy/<env>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// AWS: a service role CloudFormation acts with for the stack's resources (`RoleARN`);
    /// the caller needs `iam:PassRole` on it instead of rights on every resource.
    #[arg(long, value_name = "ARN", env = "CLOUDFORMATION_ROLE_ARN")]
    role_arn: Option<String>,
    /// API key to accept (default: generated once and kept in the state directory).
    #[arg(long, env = "RUNVOY_LOCAL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Make the subscription emulator misbehave, e.g. dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-500;
    /// ws-cut-ms=2000 cuts every WebSocket connection 2 s after it opened.
    #[arg(long)]
    chaos: Option<runvoy_local::Chaos>,
    /// The template to deploy (default: the rendered one), on AWS and the sim.
    #[arg(long)]
    template: Option<PathBuf>,
    /// sim: prebuilt function binaries (`<dir>/forwarder`, …) instead of building them.
    #[arg(long)]
    functions: Option<PathBuf>,
    /// sim: address of the WebSocket API (default: the port it had last, else a free one; clients find it in `websocket_url`).
    #[arg(long)]
    websocket_listen: Option<SocketAddr>,
    /// sim: the ProjectName of the stack (resource names), so several sims can share a moto.
    #[arg(long, default_value = "runvoy")]
    project: String,
    /// sim: the account's GetLogEvents quota shared by every function, calls per second.
    #[arg(long, default_value_t = 25.0)]
    get_log_events_per_sec: f64,
    /// Do not write the CLI config file.
    #[arg(long)]
    no_config: bool,
    /// local, sim: accept a --listen address other machines reach (plain HTTP; needs a key of
    /// 32 or more characters).
    #[arg(long)]
    allow_remote: bool,
    /// AWS environments: when the stack's creation failed (ROLLBACK_COMPLETE), delete it and
    /// create it again.
    #[arg(long)]
    recreate: bool,
    /// AWS environments: apply a change set that replaces or removes the logs table, the
    /// runner log group or the API key secret (their data is lost).
    #[arg(long)]
    allow_data_loss: bool,
    /// AWS environments: `json` prints the result as one JSON object on stdout.
    #[arg(long, value_enum, default_value = "text")]
    output: aws::Output,
    /// AWS region (AWS environments).
    #[arg(long)]
    region: Option<String>,
    /// AWS profile (AWS environments).
    #[arg(long)]
    profile: Option<String>,
    /// Emulator endpoint instead of AWS (AWS environments); sim: an existing moto started
    /// with scripts/moto-server (default: start one).
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Apply without asking (AWS environments).
    #[arg(long)]
    yes: bool,
    /// Print the plan without calling AWS (AWS environments).
    #[arg(long)]
    dry_run: bool,
    /// Function zips to deploy instead of building them (`<dir>/<bin>/bootstrap.zip`).
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// Directory of the environment files.
    #[arg(long, default_value = "deployments")]
    deployments_dir: PathBuf,
}

impl UpArgs {
    fn into_aws(self) -> aws::AwsArgs {
        aws::AwsArgs {
            env: self.env,
            region: self.region,
            profile: self.profile,
            endpoint_url: self.endpoint_url,
            yes: self.yes,
            dry_run: self.dry_run,
            artifacts: self.artifacts,
            deployments_dir: self.deployments_dir,
            no_config: self.no_config,
            recreate: self.recreate,
            allow_data_loss: self.allow_data_loss,
            output: self.output,
            state_dir: self.state_dir,
            role_arn: self.role_arn,
            template: self.template,
        }
    }
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    #[command(flatten)]
    aws: aws::AwsArgs,
    /// Remove every key but the newest (the old ones stop working within 30 s, and so do the
    /// WebSocket tokens handed out before).
    #[arg(long)]
    retire_old: bool,
    /// Replace the secret WebSocket tokens are signed with (every token handed out before is
    /// refused within 30 s); the API keys are left as they are.
    #[arg(long, conflicts_with = "retire_old")]
    token_secret: bool,
}

#[derive(Debug, clap::Args)]
struct SmokeArgs {
    /// `local` or `sim` (a running `deploy up`), or an AWS environment.
    #[arg(long, default_value = "local")]
    env: String,
    /// API URL (default: the environment's CLI profile or stack output).
    #[arg(long)]
    api_url: Option<String>,
    /// API key (default: RUNVOY_API_KEY, else the environment's CLI profile).
    #[arg(long, env = "RUNVOY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Lines to write.
    #[arg(long, default_value_t = 200)]
    lines: usize,
    /// Seconds to wait for the lines to arrive.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    aws: aws::AwsOnly,
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
    // `Ok(code)`: the command ran; some answer with a status of their own (diff: 2 = changes).
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Up(args) if args.env == "local" => done(local::up(*args).await),
            Command::Up(args) if args.env == "sim" => done(sim::up(*args).await),
            Command::Render { json } => {
                let t = template::backend();
                if json {
                    println!("{:#}", t.to_value());
                } else {
                    print!("{}", t.to_yaml());
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Up(args) => done(aws::up(&args.into_aws()).await),
            Command::Diff(a) => aws::diff(&a)
                .await
                .map(|pending| ExitCode::from(if pending { 2 } else { 0 })),
            Command::Down(a) if a.env == "sim" => done(sim::down(&a).await),
            Command::Down(a) => done(aws::down(&a).await),
            Command::RotateKey(a) if a.token_secret => {
                done(aws::keys::rotate_token_secret(&a.aws).await)
            }
            Command::RotateKey(a) => done(aws::keys::rotate_key(&a.aws, a.retire_old).await),
            Command::Status(a) => done(aws::status(&a).await),
            Command::Build(a) => done(aws::build(&a)),
            Command::Smoke(a) => done(smoke(a).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn smoke(a: SmokeArgs) -> anyhow::Result<()> {
    let profile = runvoy_config::Config::load(&runvoy_config::default_path()?)?
        .profile(Some(&a.env))
        .cloned();
    let api_url = a
        .api_url
        .or_else(|| profile.as_ref().map(|p| p.api_url.clone()));
    let api_key = a
        .api_key
        .or_else(|| profile.as_ref().map(|p| p.api_key.clone()));
    let (Some(api_url), Some(api_key)) = (api_url, api_key) else {
        anyhow::bail!(
            "no API for environment '{}': deploy it first, or pass --api-url and --api-key",
            a.env
        );
    };
    let sink = if a.env == "local" || a.env == "sim" {
        smoke::Sink::Local
    } else {
        a.aws.sink(&a.env).await?
    };
    let check = smoke::Smoke {
        api_url: api_url.trim_end_matches('/').to_string(),
        api_key,
        sink,
        lines: a.lines.max(4),
        timeout: std::time::Duration::from_secs(a.timeout),
    };
    for line in check.run().await? {
        println!("ok  {line}");
    }
    Ok(())
}
