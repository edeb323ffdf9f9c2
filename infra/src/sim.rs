//! `deploy up --env sim`: the AWS path on this machine. Builds the function binaries for this
//! machine, deploys the template to moto through the same code as `up --env NAME`, and runs
//! the sim (`runvoy-sim`) in the foreground until Ctrl+C.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use runvoy_core::function::Function;
use runvoy_sim::{Deployer, Deployment, SimConfig, SimStack};

use crate::UpArgs;
use crate::aws::{self, AwsArgs, Target, artifacts, envfile::EnvFile};
use crate::template;

/// Deploys for the sim with the deploy tool's own `apply`.
struct ToolDeployer;

#[async_trait::async_trait]
impl Deployer for ToolDeployer {
    async fn deploy(&self, d: &Deployment) -> Result<(), String> {
        let args = AwsArgs {
            env: "sim".into(),
            region: Some(d.region.clone()),
            profile: None,
            endpoint_url: Some(d.endpoint.clone()),
            yes: true,
            dry_run: false,
            artifacts: Some(d.artifacts_dir.clone()),
            deployments_dir: PathBuf::from("deployments"),
            no_config: true,
            recreate: false,
            allow_data_loss: false,
            output: crate::aws::Output::Text,
            state_dir: None,
            role_arn: None,
            template: None,
        };
        let target = Target {
            env: EnvFile {
                region: Some(d.region.clone()),
                project: d.project.clone(),
                stack_name: Some(d.stack_name.clone()),
                // One bucket for every sim on a moto: zips are named by content, so each
                // build is uploaded once.
                artifacts_bucket: Some("runvoy-sim-artifacts".into()),
                architecture: host_architecture().into(),
                parameters: BTreeMap::new(),
            },
            region: d.region.clone(),
            stack: d.stack_name.clone(),
        };
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(d.region.clone()))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIASIMDEPLOY0000000",
                "sim",
                None,
                None,
                "sim",
            ))
            .endpoint_url(&d.endpoint)
            .load()
            .await;
        let arts = artifacts::find(&d.artifacts_dir).map_err(|e| format!("{e:#}"))?;
        aws::apply(
            &args,
            &target,
            &sdk,
            &arts,
            &d.template,
            Some(d.api_key.clone()),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
    }
}

/// The `Architecture` parameter that describes this machine.
fn host_architecture() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    }
}

/// Builds the function binaries with the profile this tool was built with; returns their
/// directory.
fn build_functions() -> anyhow::Result<PathBuf> {
    let release = !cfg!(debug_assertions);
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build");
    if release {
        cmd.arg("--release");
    }
    for f in Function::ALL {
        cmd.args(["-p", f.name()]);
    }
    eprintln!(
        "building the functions for this machine ({})",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status().context(
        "cannot run cargo to build the functions; pass --functions DIR with prebuilt binaries",
    )?;
    anyhow::ensure!(status.success(), "building the functions failed ({status})");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    Ok(target.join(if release { "release" } else { "debug" }))
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    runvoy_local::check_exposure(args.listen, args.allow_remote, args.api_key.as_deref())?;
    let template = match &args.template {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the template {}", path.display()))?,
        None => template::backend().to_yaml(),
    };
    let functions_dir = match &args.functions {
        Some(d) => d.clone(),
        None => build_functions()?,
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".runvoy/sim"));
    let config = SimConfig {
        listen: args.listen,
        websocket_listen: args.websocket_listen,
        state_dir: state_dir.clone(),
        api_key: args.api_key.clone(),
        chaos: args.chaos.clone().unwrap_or_default(),
        template,
        endpoint_url: args.endpoint_url.clone(),
        functions_dir,
        project: args.project.clone(),
        region: args.region.clone().unwrap_or_else(|| "us-east-1".into()),
        get_log_events_per_sec: args.get_log_events_per_sec,
        ..SimConfig::default()
    };
    let stack = SimStack::start(config, &ToolDeployer).await?;
    println!("runvoy sim is up (the AWS path on moto)");
    println!("  HTTP API:   {}", stack.http_url());
    println!("  WebSocket:  ws://{}", stack.websocket_addr);
    println!("  API key:    {}", stack.api_key);
    println!(
        "  moto:       {} (stack {})",
        stack.moto_endpoint, stack.stack_name
    );
    println!(
        "  state:      {} (function logs in logs/)",
        state_dir.display()
    );
    if !args.no_config {
        let path = crate::local::write_default_profile("sim", &stack.http_url(), &stack.api_key)?;
        println!(
            "  CLI config: {} (profile \"sim\", the default)",
            path.display()
        );
    }
    println!("Press Ctrl+C to stop.");
    crate::local::wait_for_signal().await;
    eprintln!("stopping: closing WebSocket connections and function environments");
    stack.stop().await;
    eprintln!("stopped");
    Ok(())
}

/// `down --env sim`: stops the moto the sim keeps between starts, forgetting the AWS state it
/// held (the next `up --env sim` begins an empty world).
pub async fn down(args: &crate::aws::AwsArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".runvoy/sim"));
    if runvoy_sim::moto::stop(&state_dir).await {
        println!(
            "sim: stopped its moto ({}); the next `up --env sim` starts an empty one",
            state_dir.display()
        );
    } else {
        println!("sim: no moto of {} is running", state_dir.display());
    }
    Ok(())
}
