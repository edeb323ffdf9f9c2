//! `deploy up|diff|down|status|build --env NAME`: the CloudFormation stack on AWS (or an emulator
//! with `--endpoint-url`).

pub mod artifacts;
pub mod envfile;
pub mod stack;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use aws_config::BehaviorVersion;
use runvoy_config::{Config, Profile};

use crate::template;
use envfile::EnvFile;
use stack::{Plan, Stacks};

/// Options shared by the AWS commands.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// Environment: reads deployments/<env>.toml.
    #[arg(long)]
    pub env: String,
    /// AWS region (default: the env file's `region`).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile for credentials.
    #[arg(long)]
    pub profile: Option<String>,
    /// Talk to an emulator (moto) instead of AWS.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Apply without asking (CI).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan without calling AWS.
    #[arg(long)]
    pub dry_run: bool,
    /// Use function zips from this directory (`<bin>/bootstrap.zip`) instead of building.
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Directory of the environment files.
    #[arg(long, default_value = "deployments")]
    pub deployments_dir: PathBuf,
    /// Do not write the CLI config file.
    #[arg(long)]
    pub no_config: bool,
}

pub(crate) struct Target {
    pub env: EnvFile,
    pub region: String,
    pub stack: String,
}

fn target(args: &AwsArgs) -> anyhow::Result<Target> {
    let env = EnvFile::load(&args.deployments_dir, &args.env)?;
    let region = args
        .region
        .clone()
        .or_else(|| env.region.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no region for environment '{}': set `region` in its file or pass --region",
                args.env
            )
        })?;
    let stack = env.stack_name(&args.env);
    Ok(Target { env, region, stack })
}

async fn sdk(args: &AwsArgs, region: &str) -> anyhow::Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let provider = sdk.credentials_provider().ok_or_else(no_credentials)?;
    use aws_credential_types::provider::ProvideCredentials;
    provider
        .provide_credentials()
        .await
        .map_err(|_| no_credentials())?;
    Ok(sdk)
}

/// The environment, an SDK configuration with credentials, and its stack.
async fn open(args: &AwsArgs) -> anyhow::Result<(Target, aws_config::SdkConfig, Stacks)> {
    let t = target(args)?;
    let sdk = sdk(args, &t.region).await?;
    let stacks = Stacks {
        client: aws_sdk_cloudformation::Client::new(&sdk),
        name: t.stack.clone(),
    };
    Ok((t, sdk, stacks))
}

fn no_credentials() -> anyhow::Error {
    anyhow::anyhow!(
        "no AWS credentials found; set AWS_PROFILE (or pass --profile) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )
}

fn lambda_dir(env: &EnvFile) -> PathBuf {
    PathBuf::from("target").join(format!("lambda-{}", env.architecture))
}

/// `deploy build --env NAME`
pub fn build(args: &AwsArgs) -> anyhow::Result<()> {
    let t = target(args)?;
    let dir = lambda_dir(&t.env);
    artifacts::build(&PathBuf::from("."), &t.env.architecture, &dir)?;
    for a in artifacts::find(&dir)? {
        println!("{}  {}  {}", a.id, a.key(), a.path.display());
    }
    Ok(())
}

/// `deploy up --env NAME`
pub async fn up(args: &AwsArgs) -> anyhow::Result<()> {
    let t = target(args)?;
    let dir = match &args.artifacts {
        Some(d) => d.clone(),
        None => {
            let d = lambda_dir(&t.env);
            if !args.dry_run {
                eprintln!("building functions ({})", t.env.architecture);
                artifacts::build(&PathBuf::from("."), &t.env.architecture, &d)?;
            }
            d
        }
    };
    let arts = artifacts::find(&dir);
    if args.dry_run {
        println!("plan for environment '{}' (nothing is called)", args.env);
        println!("  stack:        {} in {}", t.stack, t.region);
        println!(
            "  bucket:       {}",
            t.env
                .artifacts_bucket
                .clone()
                .unwrap_or_else(|| format!("{}-artifacts-<account>-{}", t.env.project, t.region))
        );
        match &arts {
            Ok(list) => list
                .iter()
                .for_each(|a| println!("  artifact:     {}", a.key())),
            Err(_) => println!("  artifacts:    built by `cargo lambda build --release` first"),
        }
        for (k, v) in &t.env.parameters {
            println!("  parameter:    {k} = {v}");
        }
        println!(
            "  then: create a change set, show it, execute it{}",
            if args.yes { "" } else { " after confirmation" }
        );
        return Ok(());
    }
    let arts = arts?;
    let sdk = sdk(args, &t.region).await?;
    let (outputs, new_key) =
        apply(args, &t, &sdk, &arts, &template::backend().to_yaml(), None).await?;
    for (k, v) in &outputs {
        println!("{k} = {v}");
    }
    if !args.no_config {
        write_profile(args, &sdk, &outputs, new_key).await?;
    }
    Ok(())
}

/// Uploads the artifacts, then creates and executes the change set of `body`; returns the
/// stack's outputs and the API key it was created with (when it was created). `api_key` sets
/// the key instead of generating one on creation.
pub(crate) async fn apply(
    args: &AwsArgs,
    t: &Target,
    sdk: &aws_config::SdkConfig,
    arts: &[artifacts::Artifact],
    body: &str,
    api_key: Option<String>,
) -> anyhow::Result<(Vec<(String, String)>, Option<String>)> {
    let s3 = s3_client(sdk, args.endpoint_url.is_some());
    let bucket = match &t.env.artifacts_bucket {
        Some(b) => b.clone(),
        None => {
            let id = aws_sdk_sts::Client::new(sdk)
                .get_caller_identity()
                .send()
                .await
                .context("finding the AWS account")?;
            format!(
                "{}-artifacts-{}-{}",
                t.env.project,
                id.account().unwrap_or("account"),
                t.region
            )
        }
    };
    ensure_bucket(&s3, &bucket, &t.region).await?;
    for a in arts {
        let key = a.key();
        if s3
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .is_ok()
        {
            eprintln!("  unchanged    s3://{bucket}/{key}");
            continue;
        }
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&a.path).await?;
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .with_context(|| format!("uploading {}", a.path.display()))?;
        eprintln!("  uploaded     s3://{bucket}/{key}");
    }
    let stacks = Stacks {
        client: aws_sdk_cloudformation::Client::new(sdk),
        name: t.stack.clone(),
    };
    let exists = stacks.status().await?.is_some();
    let new_key = match api_key {
        Some(k) => Some(k),
        None => (!exists).then(|| runvoy_local::state::random_hex(24)),
    };
    let mut params: Vec<(String, Option<String>)> = vec![
        ("ProjectName".into(), Some(t.env.project.clone())),
        ("ArtifactsBucket".into(), Some(bucket.clone())),
        ("Architecture".into(), Some(t.env.architecture.clone())),
        ("ApiKey".into(), new_key.clone()),
    ];
    for a in arts {
        params.push((format!("{}CodeKey", a.id), Some(a.key())));
    }
    for (k, v) in &t.env.parameters {
        params.push((k.clone(), Some(v.clone())));
    }
    match stacks.plan(body, &params).await? {
        Plan::NoChanges => eprintln!("no changes: stack {} is up to date", t.stack),
        Plan::Changes { name, kind, lines } => {
            eprintln!("change set for {} ({}):", t.stack, kind.as_str());
            for l in &lines {
                eprintln!("  {l}");
            }
            if !confirm(args)? {
                stacks.discard(&name).await?;
                anyhow::bail!("not applied");
            }
            stacks.apply(&name).await?;
        }
    }
    Ok((stacks.outputs().await?, new_key))
}

fn confirm(args: &AwsArgs) -> anyhow::Result<bool> {
    if args.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("stdin is not a terminal, so nothing can be confirmed; pass --yes to apply");
    }
    eprint!("apply these changes? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn s3_client(sdk: &aws_config::SdkConfig, emulator: bool) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(emulator)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) -> anyhow::Result<()> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let mut req = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "creating bucket {bucket}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )
    })?;
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .context("blocking public access to the artifacts bucket")?;
    eprintln!("  created      s3://{bucket}");
    Ok(())
}

/// Writes the environment's profile: the API URL output and the key (new, or from the secret).
async fn write_profile(
    args: &AwsArgs,
    sdk: &aws_config::SdkConfig,
    outputs: &[(String, String)],
    new_key: Option<String>,
) -> anyhow::Result<()> {
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    let path = runvoy_config::default_path()?;
    if let Some(profile) = profile_from(&secrets, outputs, new_key).await? {
        let mut cfg = Config::load(&path)?;
        cfg.upsert(&args.env, profile);
        cfg.save(&path)?;
        eprintln!("CLI config: {} (profile \"{}\")", path.display(), args.env);
    }
    Ok(())
}

/// The CLI profile a stack's outputs describe; `None` when it has no API URL output.
async fn profile_from(
    secrets: &aws_sdk_secretsmanager::Client,
    outputs: &[(String, String)],
    new_key: Option<String>,
) -> anyhow::Result<Option<Profile>> {
    let get = |k: &str| outputs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(api_url) = get("ApiUrl") else {
        eprintln!("the stack has no ApiUrl output; CLI config not written");
        return Ok(None);
    };
    let api_key = match new_key {
        Some(k) => k,
        None => {
            let arn = get("ApiSecretArn").context("the stack has no ApiSecretArn output")?;
            let secret = secrets
                .get_secret_value()
                .secret_id(&arn)
                .send()
                .await
                .context("reading the API key from the stack's secret")?;
            let v: serde_json::Value =
                serde_json::from_str(secret.secret_string().unwrap_or("{}"))?;
            v["api_keys"][0]
                .as_str()
                .context("the API secret holds no key")?
                .to_string()
        }
    };
    Ok(Some(Profile { api_url, api_key }))
}

/// `deploy diff --env NAME`: the change set, not executed.
pub async fn diff(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, _, stacks) = open(args).await?;
    let mut params: Vec<(String, Option<String>)> = envfile::MANAGED
        .iter()
        .map(|k| (k.to_string(), None))
        .collect();
    params.retain(|(k, _)| k != "ProjectName");
    params.push(("ProjectName".into(), Some(t.env.project.clone())));
    for (k, v) in &t.env.parameters {
        params.push((k.clone(), Some(v.clone())));
    }
    if stacks.status().await?.is_none() {
        anyhow::bail!("stack {} does not exist yet; `up` creates it", t.stack);
    }
    match stacks.plan(&template::backend().to_yaml(), &params).await? {
        Plan::NoChanges => println!("no changes"),
        Plan::Changes { name, lines, .. } => {
            if lines.is_empty() {
                println!("parameters change; no resource changes are reported");
            }
            lines.iter().for_each(|l| println!("{l}"));
            stacks.discard(&name).await?;
        }
    }
    Ok(())
}

/// `deploy status --env NAME`
pub async fn status(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, _, stacks) = open(args).await?;
    match stacks.status().await? {
        None => println!("{}: not deployed", t.stack),
        Some(s) => {
            println!("{}: {}", t.stack, s.as_str());
            for (k, v) in stacks.outputs().await? {
                println!("{k} = {v}");
            }
        }
    }
    Ok(())
}

/// `deploy down --env NAME`
pub async fn down(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, _, stacks) = open(args).await?;
    if stacks.status().await?.is_none() {
        println!("{}: not deployed", t.stack);
        return Ok(());
    }
    eprintln!("deleting stack {}", t.stack);
    if !confirm(args)? {
        anyhow::bail!("not deleted");
    }
    stacks.delete().await?;
    println!("{}: deleted", t.stack);
    Ok(())
}

/// AWS options of commands that take an environment positionally elsewhere (smoke).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsOnly {
    /// AWS region (default: the env file's `region`).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile for credentials.
    #[arg(long)]
    pub profile: Option<String>,
    /// Talk to an emulator instead of AWS.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Directory of the environment files.
    #[arg(long, default_value = "deployments")]
    pub deployments_dir: PathBuf,
}

impl AwsOnly {
    /// The runner log group of the environment's stack, to write smoke lines into.
    pub async fn sink(&self, env: &str) -> anyhow::Result<crate::smoke::Sink> {
        let args = AwsArgs {
            env: env.to_string(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            yes: false,
            dry_run: false,
            artifacts: None,
            deployments_dir: self.deployments_dir.clone(),
            no_config: true,
        };
        let (t, sdk, stacks) = open(&args).await?;
        let group = stacks
            .outputs()
            .await?
            .into_iter()
            .find(|(k, _)| k == "RunnerLogGroup")
            .map(|(_, v)| v)
            .context("the stack has no RunnerLogGroup output; is it deployed?")?;
        let stream_template = t
            .env
            .parameters
            .get("StreamTemplate")
            .cloned()
            .unwrap_or_else(|| "task/runner/{execution_id}".into());
        Ok(crate::smoke::Sink::CloudWatch {
            client: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            group,
            stream_template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::primitives::DateTime;
    use aws_sdk_cloudformation::types::{Output, Stack, StackStatus};
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_smithy_mocks::{mock, mock_client};

    #[tokio::test]
    async fn outputs_become_the_cli_profile() {
        let described = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_output(|| {
            DescribeStacksOutput::builder()
                .stacks(
                    Stack::builder()
                        .stack_name("runvoy-prod")
                        .stack_status(StackStatus::UpdateComplete)
                        .creation_time(DateTime::from_secs(0))
                        .outputs(
                            Output::builder()
                                .output_key("ApiUrl")
                                .output_value("https://api.example")
                                .build(),
                        )
                        .outputs(
                            Output::builder()
                                .output_key("ApiSecretArn")
                                .output_value("arn:secret")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let cfn = mock_client!(aws_sdk_cloudformation, [&described]);
        let outputs = Stacks {
            client: cfn,
            name: "runvoy-prod".into(),
        }
        .outputs()
        .await
        .unwrap();
        assert_eq!(
            outputs[0],
            ("ApiUrl".to_string(), "https://api.example".to_string())
        );

        let secret = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some("arn:secret"))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .secret_string(r#"{"api_keys":["key-from-the-secret"],"token_secret":"t"}"#)
                    .build()
            });
        let sm = mock_client!(aws_sdk_secretsmanager, [&secret]);
        // An update keeps the key: it is read back from the stack's secret.
        let p = profile_from(&sm, &outputs, None).await.unwrap().unwrap();
        assert_eq!(
            (p.api_url.as_str(), p.api_key.as_str()),
            ("https://api.example", "key-from-the-secret")
        );
        // A creation uses the key it generated.
        let p = profile_from(&sm, &outputs, Some("new-key".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.api_key, "new-key");
        // No API URL (moto): nothing to write.
        assert!(profile_from(&sm, &[], None).await.unwrap().is_none());
    }
}
