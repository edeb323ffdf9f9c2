//! `deploy up --env local`: the whole stack in the foreground, until Ctrl+C.

use std::path::PathBuf;

use anyhow::Context;
use runvoy_config::{Config, Profile};
use runvoy_local::{LocalConfig, LocalStack};

use crate::UpArgs;

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".runvoy/local"));
    let config = LocalConfig {
        listen: args.listen,
        state_dir: state_dir.clone(),
        api_key: args.api_key,
        chaos: args.chaos.unwrap_or_default(),
        allow_remote: args.allow_remote,
        ..LocalConfig::default()
    };
    let sim_only = config.chaos.sim_only();
    if !sim_only.is_empty() {
        anyhow::bail!(
            "--chaos {} plays AWS's timing, which only the sim emulates (the local stack has no CloudWatch ingestion, DynamoDB or Lambda to delay): run `deploy up --env sim` with it",
            sim_only.join(", ")
        );
    }
    let chaos = (!config.chaos.is_calm()).then(|| format!("{:?}", config.chaos));
    let stack = LocalStack::start(config).await?;
    println!("runvoy local stack is up");
    println!("  HTTP API:   {}", stack.http_url());
    println!("  WebSocket:  {}", stack.websocket_url());
    println!("  API key:    {}", stack.api_key);
    println!("  state:      {}", state_dir.display());
    if let Some(c) = chaos {
        println!("  chaos:      {c}");
    }
    if !args.no_config {
        let path = write_default_profile("local", &stack.http_url(), &stack.api_key)?;
        println!(
            "  CLI config: {} (profile \"local\", the default)",
            path.display()
        );
    }
    println!("Press Ctrl+C to stop.");
    wait_for_signal().await;
    eprintln!("stopping: closing WebSocket sessions");
    stack.stop().await;
    eprintln!("stopped");
    Ok(())
}

/// Writes the CLI profile of a stack this tool runs in the foreground and makes it the
/// default: the stack just started is the one the CLI talks to.
pub fn write_default_profile(
    name: &str,
    api_url: &str,
    api_key: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let path = runvoy_config::default_path()?;
    let mut cfg = Config::load(&path)?;
    cfg.upsert(
        name,
        Profile {
            api_url: api_url.to_string(),
            api_key: api_key.to_string(),
        },
    );
    cfg.default_profile = Some(name.to_string());
    cfg.save(&path)
        .with_context(|| "writing the CLI config".to_string())?;
    Ok(path)
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
