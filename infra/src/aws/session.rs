//! Where the AWS commands act and with what: their options (`AwsArgs`, `AwsOnly`), the
//! environment file and region they resolve to (`Target`), and an SDK configuration with
//! credentials found as the AWS CLI finds them.

use std::path::PathBuf;

use anyhow::Context;
use aws_config::BehaviorVersion;

use super::Output;
use super::cloudformation::Stacks;
use super::envfile::EnvFile;

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
    /// Function zips (`<bin>/bootstrap.zip`): `up` deploys them instead of building, `diff`
    /// compares their code, `build` writes them there.
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Directory of the environment files.
    #[arg(long, default_value = "deployments")]
    pub deployments_dir: PathBuf,
    /// Do not write the CLI config file.
    #[arg(long)]
    pub no_config: bool,
    /// When the stack's creation failed (ROLLBACK_COMPLETE), delete it and create it again.
    #[arg(long)]
    pub recreate: bool,
    /// Apply a change set that replaces or removes the logs table, the runner log group or the
    /// API key secret (their data is lost).
    #[arg(long)]
    pub allow_data_loss: bool,
    /// `json`: the result as one JSON object on stdout (progress stays on stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// `down --env sim`: the sim's state directory, whose moto is stopped (default .runvoy/sim).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A service role CloudFormation acts with when it creates, updates and deletes the
    /// stack's resources (`RoleARN`): the caller then needs `iam:PassRole` on it instead of
    /// rights on every resource (deployments/ci-policy.json).
    #[arg(long, value_name = "ARN", env = "CLOUDFORMATION_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// `up`: the template to deploy (default: the rendered one).
    #[arg(skip)]
    pub template: Option<PathBuf>,
}

/// An environment: its file, its region and its stack's name.
pub(crate) struct Target {
    pub env: EnvFile,
    pub region: String,
    pub stack: String,
}

/// The environment. Its region is `--region`, else the file's `region`, else (empty here,
/// resolved by [`sdk`]) what the AWS configuration says: `AWS_REGION`, `AWS_DEFAULT_REGION`,
/// the profile's `region`.
pub(super) fn target(args: &AwsArgs) -> anyhow::Result<Target> {
    let env = EnvFile::load(&args.deployments_dir, &args.env)?;
    let region = args
        .region
        .clone()
        .or_else(|| env.region.clone())
        .unwrap_or_default();
    let stack = env.stack_name(&args.env);
    Ok(Target { env, region, stack })
}

/// An SDK configuration with credentials, as the AWS CLI finds them: `--profile`, else
/// `AWS_PROFILE`, else the environment's keys, web identity (CI's OIDC role), the default
/// profile (SSO, `credential_process`, `role_arn` + `source_profile` included), the instance
/// role. Fills in the target's region when only the AWS configuration names it.
pub(super) async fn sdk(args: &AwsArgs, t: &mut Target) -> anyhow::Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if !t.region.is_empty() {
        loader = loader.region(aws_config::Region::new(t.region.clone()));
    }
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if t.region.is_empty() {
        t.region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            anyhow::anyhow!(
                "no region for environment '{}': set `region` in deployments/{}.toml, pass --region, or set AWS_REGION",
                args.env,
                args.env
            )
        })?;
    }
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| no_credentials("no credentials provider is configured".into()))?;
    use aws_credential_types::provider::ProvideCredentials;
    provider
        .provide_credentials()
        .await
        .map_err(|e| no_credentials(root_cause(&e)))?;
    Ok(sdk)
}

/// The innermost cause of an error, which says what really went wrong.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The environment, an SDK configuration with credentials, and its stack.
pub(super) async fn open(
    args: &AwsArgs,
) -> anyhow::Result<(Target, aws_config::SdkConfig, Stacks)> {
    let mut t = target(args)?;
    let sdk = sdk(args, &mut t).await?;
    let stacks = Stacks {
        client: aws_sdk_cloudformation::Client::new(&sdk),
        name: t.stack.clone(),
        role_arn: args.role_arn.clone(),
    };
    Ok((t, sdk, stacks))
}

fn no_credentials(why: String) -> anyhow::Error {
    anyhow::anyhow!(
        "no AWS credentials could be loaded ({why}); pass --profile or set AWS_PROFILE (for an SSO profile, run `aws sso login` first), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )
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
            recreate: false,
            allow_data_loss: false,
            output: Output::Text,
            state_dir: None,
            role_arn: None,
            template: None,
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
