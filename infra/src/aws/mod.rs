//! `deploy up|diff|down|status|build --env NAME`: the CloudFormation stack on AWS (or an emulator
//! with `--endpoint-url`).

pub mod artifacts;
pub mod envfile;
mod errors;
pub mod keys;
pub mod stack;

pub use errors::readable;

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

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub(crate) struct Target {
    pub env: EnvFile,
    pub region: String,
    pub stack: String,
}

/// The environment. Its region is `--region`, else the file's `region`, else (empty here,
/// resolved by [`sdk`]) what the AWS configuration says: `AWS_REGION`, `AWS_DEFAULT_REGION`,
/// the profile's `region`.
fn target(args: &AwsArgs) -> anyhow::Result<Target> {
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
async fn sdk(args: &AwsArgs, t: &mut Target) -> anyhow::Result<aws_config::SdkConfig> {
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
async fn open(args: &AwsArgs) -> anyhow::Result<(Target, aws_config::SdkConfig, Stacks)> {
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

fn lambda_dir(env: &EnvFile) -> PathBuf {
    PathBuf::from("target").join(format!("lambda-{}", env.architecture))
}

/// `deploy build --env NAME`
pub fn build(args: &AwsArgs) -> anyhow::Result<()> {
    let t = target(args)?;
    let dir = args.artifacts.clone().unwrap_or_else(|| lambda_dir(&t.env));
    artifacts::build(&PathBuf::from("."), &t.env.architecture, &dir)?;
    for a in artifacts::find(&dir)? {
        println!(
            "{}  {}  {}",
            a.function.logical_id(),
            a.key(),
            a.path.display()
        );
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
        let region = if t.region.is_empty() {
            "the region of the AWS configuration"
        } else {
            t.region.as_str()
        };
        println!("  stack:        {} in {region}", t.stack);
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
    let mut t = t;
    let sdk = sdk(args, &mut t).await?;
    let body = match &args.template {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the template {}", path.display()))?,
        None => template::backend().to_yaml(),
    };
    let applied = apply(args, &t, &sdk, &arts, &body, None).await?;
    match args.output {
        Output::Json => println!(
            "{}",
            stack_json(
                &t.stack,
                Some(&applied.status),
                &applied.outputs,
                &applied.changes
            )
        ),
        Output::Text => {
            for (k, v) in &applied.outputs {
                println!("{k} = {v}");
            }
        }
    }
    if !args.no_config {
        write_profile(args, &sdk, &applied.outputs, applied.new_key).await?;
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
) -> anyhow::Result<Applied> {
    let s3 = s3_client(sdk, args.endpoint_url.is_some());
    // Every S3 call names the account that must own the bucket: a bucket of the same name
    // created first by someone else is refused, never written to.
    let account = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| readable("finding the AWS account (STS GetCallerIdentity)", e))?
        .account()
        .unwrap_or_default()
        .to_string();
    let bucket = t.env.bucket(&account, &t.region)?;
    ensure_bucket(&s3, &bucket, &t.region, &account, &args.env).await?;
    for a in arts {
        let key = a.key();
        // An object under this key is trusted only when it says it holds this code: the key
        // is a prefix of the hash, and an object may have been written by hand or half-way.
        let existing = s3
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .expected_bucket_owner(&account)
            .send()
            .await
            .ok()
            .and_then(|h| h.metadata().and_then(|m| m.get(BOOTSTRAP_SHA256).cloned()));
        if existing.as_deref() == Some(a.sha256.as_str()) {
            eprintln!("  unchanged    s3://{bucket}/{key}");
            continue;
        }
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&a.path).await?;
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .expected_bucket_owner(&account)
            .metadata(BOOTSTRAP_SHA256, &a.sha256)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                readable(
                    &format!("uploading {} to s3://{bucket}/{key}", a.path.display()),
                    e,
                )
            })?;
        eprintln!("  uploaded     s3://{bucket}/{key}");
    }
    let stacks = Stacks {
        client: aws_sdk_cloudformation::Client::new(sdk),
        name: t.stack.clone(),
        role_arn: args.role_arn.clone(),
    };
    let exists = match stacks.status().await? {
        None => false,
        Some(status) => match stack::next_step(&t.stack, &args.env, &status) {
            stack::Next::Update => true,
            // A first creation that rolled back left no resources (the logs table's policy
            // keeps none on a failed create) and so no data: it is deleted and created again.
            stack::Next::Recreate
                if args.recreate
                    || status == aws_sdk_cloudformation::types::StackStatus::RollbackComplete =>
            {
                eprintln!(
                    "deleting stack {} ({}: its creation failed) to create it again",
                    t.stack,
                    status.as_str()
                );
                stacks.delete().await?;
                false
            }
            stack::Next::Recreate => {
                anyhow::bail!(stack::recreate_advice(&t.stack, &args.env, &status))
            }
            stack::Next::Refuse(why) => anyhow::bail!(why),
        },
    };
    check_subscription_room(sdk, &t.stack, &t.env).await?;
    if exists {
        // Where the lines are kept is chosen at creation: switching it on a live stack would
        // create a second table of the same name before the first is removed (CloudFormation
        // refuses), or delete the stored lines.
        let deployed = stacks.parameters().await?;
        let was = deployed
            .iter()
            .find(|(k, _)| k == "RetainLogsTable")
            .map_or("false", |(_, v)| v.as_str());
        let wanted = t
            .env
            .parameters
            .get("RetainLogsTable")
            .map_or("false", String::as_str);
        if was != wanted {
            anyhow::bail!(
                "stack {} was created with RetainLogsTable = \"{was}\" and deployments/{}.toml asks for \"{wanted}\": it is chosen at creation (the logs table keeps its name, so CloudFormation cannot create the other one before deleting this one); set RetainLogsTable = \"{was}\" in deployments/{}.toml, or back the lines up and recreate the stack",
                t.stack,
                args.env,
                args.env
            );
        }
    }
    let new_key = match api_key {
        Some(k) => Some(k),
        None => (!exists).then(|| runvoy_local::state::random_hex(24)),
    };
    let mut params: Vec<(String, Option<String>)> = vec![
        ("ArtifactsBucket".into(), Some(bucket.clone())),
        ("Architecture".into(), Some(t.env.architecture.clone())),
        ("ApiKey".into(), new_key.clone()),
    ];
    for a in arts {
        params.push((format!("{}CodeKey", a.function.logical_id()), Some(a.key())));
    }
    params.push((
        "QueueRetentionSeconds".into(),
        Some(t.env.queue_retention_secs().to_string()),
    ));
    for (k, v) in &t.env.parameters {
        params.push((k.clone(), Some(v.clone())));
    }
    // A template past CloudFormation's inline limit goes by S3, named by its content.
    let url;
    let source = if body.len() > stack::TEMPLATE_BODY_MAX {
        let digest: String = {
            use sha2::Digest;
            sha2::Sha256::digest(body.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let key = format!("templates/{}.yaml", &digest[..16]);
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .expected_bucket_owner(&account)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .map_err(|e| readable(&format!("uploading the template to s3://{bucket}/{key}"), e))?;
        eprintln!(
            "  template of {} bytes (over CloudFormation's {} inline): s3://{bucket}/{key}",
            body.len(),
            stack::TEMPLATE_BODY_MAX
        );
        url = format!("https://{bucket}.s3.{}.amazonaws.com/{key}", t.region);
        stack::Source::Url(&url)
    } else {
        stack::Source::Body(body)
    };
    let changes = match stacks.plan(source, &params).await? {
        Plan::NoChanges => {
            eprintln!("no changes: stack {} is up to date", t.stack);
            Vec::new()
        }
        Plan::Changes {
            name,
            kind,
            changes,
        } => {
            eprintln!("change set for {} ({}):", t.stack, kind.as_str());
            for c in &changes {
                eprintln!("  {c}");
            }
            let lost = stack::data_lost(&changes);
            if !lost.is_empty() && !args.allow_data_loss {
                stacks.discard(&name).await?;
                anyhow::bail!(
                    "nothing was applied: this change set would {} of stack {}, losing what they hold; keep their names and settings, or pass --allow-data-loss to apply it anyway",
                    lost.join(", "),
                    t.stack
                );
            }
            if !confirm(args)? {
                stacks.discard(&name).await?;
                anyhow::bail!("not applied");
            }
            stacks.apply(&name).await?;
            changes
        }
    };
    Ok(Applied {
        status: stacks
            .status()
            .await?
            .map_or_else(String::new, |s| s.as_str().to_string()),
        outputs: stacks.outputs().await?,
        new_key,
        changes,
    })
}

/// What `up` did.
pub(crate) struct Applied {
    pub status: String,
    pub outputs: Vec<(String, String)>,
    /// The API key the stack was created with (when it was).
    pub new_key: Option<String>,
    pub changes: Vec<stack::Change>,
}

/// A stack as `--output json` prints it.
fn stack_json(
    stack: &str,
    status: Option<&str>,
    outputs: &[(String, String)],
    changes: &[stack::Change],
) -> serde_json::Value {
    serde_json::json!({
        "stack": stack,
        "status": status,
        "outputs": outputs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "changes": changes,
    })
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

/// The sentence for a bucket this account does not own.
fn not_our_bucket(bucket: &str, account: &str, env: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the artifacts bucket s3://{bucket} exists but does not belong to account {account} (or these credentials may not list it: s3:ListBucket), so no function code is uploaded to it; set artifacts_bucket in deployments/{env}.toml to a bucket of this account"
    )
}

/// The artifacts bucket, owned by `account`: checked, or created private and encrypted.
async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    account: &str,
    env: &str,
) -> anyhow::Result<()> {
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match s3
        .head_bucket()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .send()
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => {}
            // Another account's bucket (or one this account may not read): never ours.
            Some(403) => return Err(not_our_bucket(bucket, account, env)),
            _ => {
                return Err(readable(
                    &format!("checking the artifacts bucket s3://{bucket}"),
                    e,
                ));
            }
        },
    }
    let mut req = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    if let Err(e) = req.send().await {
        return Err(match e.code() {
            // Taken between the check and the creation.
            Some("BucketAlreadyExists") => not_our_bucket(bucket, account, env),
            _ => readable(&format!("creating the artifacts bucket {bucket}"), e),
        });
    }
    s3.put_public_access_block()
        .bucket(bucket)
        .expected_bucket_owner(account)
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
        .map_err(|e| readable(&format!("blocking public access to s3://{bucket}"), e))?;
    let sse = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
        .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .build()?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .server_side_encryption_configuration(
            aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                .rules(
                    aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(sse)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .map_err(|e| readable(&format!("enabling encryption of s3://{bucket}"), e))?;
    eprintln!("  created      s3://{bucket} (private, encrypted)");
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
                .map_err(|e| readable(&format!("reading the API key from secret {arn}"), e))?;
            let v: serde_json::Value =
                serde_json::from_str(secret.secret_string().unwrap_or("{}"))?;
            // Newest last: after `rotate-key`, the new key.
            v["api_keys"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|k| k.as_str())
                .context("the API secret holds no key")?
                .to_string()
        }
    };
    Ok(Some(Profile { api_url, api_key }))
}

/// `deploy diff --env NAME`: the change set, not executed. Returns whether changes are pending.
pub async fn diff(args: &AwsArgs) -> anyhow::Result<bool> {
    let (t, _, stacks) = open(args).await?;
    let mut params: Vec<(String, Option<String>)> = envfile::MANAGED
        .iter()
        .map(|k| (k.to_string(), None))
        .collect();
    // What the environment file decides is compared, not kept.
    params.retain(|(k, _)| k != "Architecture");
    params.push(("Architecture".into(), Some(t.env.architecture.clone())));
    // With the zips `up` will deploy, their code is compared too (a code-only change is
    // pending); without them, the deployed code is kept.
    if let Some(dir) = &args.artifacts {
        for a in artifacts::find(dir)? {
            let name = format!("{}CodeKey", a.function.logical_id());
            params.retain(|(k, _)| *k != name);
            params.push((name, Some(a.key())));
        }
    } else {
        eprintln!(
            "function code is not compared; pass --artifacts DIR (from `deploy build --artifacts DIR`) to compare it"
        );
    }
    params.retain(|(k, _)| k != "QueueRetentionSeconds");
    params.push((
        "QueueRetentionSeconds".into(),
        Some(t.env.queue_retention_secs().to_string()),
    ));
    for (k, v) in &t.env.parameters {
        params.push((k.clone(), Some(v.clone())));
    }
    if stacks.status().await?.is_none() {
        // Everything is pending (as `terraform plan` on an empty state): `up` creates it.
        match args.output {
            Output::Json => {
                let mut v = stack_json(&t.stack, None, &[], &[]);
                v["pending"] = serde_json::json!(true);
                println!("{v}");
            }
            Output::Text => println!("stack {} does not exist yet; `up` creates it", t.stack),
        }
        return Ok(true);
    }
    let body = template::backend().to_yaml();
    let changes = match stacks.plan(stack::Source::Body(&body), &params).await? {
        Plan::NoChanges => None,
        Plan::Changes { name, changes, .. } => {
            stacks.discard(&name).await?;
            Some(changes)
        }
    };
    match args.output {
        Output::Json => {
            let status = stacks.status().await?.map(|s| s.as_str().to_string());
            let mut v = stack_json(
                &t.stack,
                status.as_deref(),
                &[],
                changes.as_deref().unwrap_or_default(),
            );
            v["pending"] = serde_json::json!(changes.is_some());
            println!("{v}");
        }
        Output::Text => match &changes {
            None => println!("no changes"),
            Some(list) if list.is_empty() => {
                println!("parameters change; no resource changes are reported")
            }
            Some(list) => list.iter().for_each(|c| println!("{c}")),
        },
    }
    Ok(changes.is_some())
}

/// A log group takes at most two subscription filters. When the stack subscribes to a group
/// of its own making there is room; an existing group (`RunnerLogGroupName`) may be full, and
/// the deploy would fail midway (a create rolled back): refused first, with the names.
async fn check_subscription_room(
    sdk: &aws_config::SdkConfig,
    stack: &str,
    env: &envfile::EnvFile,
) -> anyhow::Result<()> {
    let Some(group) = env
        .parameters
        .get("RunnerLogGroupName")
        .filter(|g| !g.is_empty())
    else {
        return Ok(());
    };
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let out = logs
        .describe_subscription_filters()
        .log_group_name(group)
        .send()
        .await
        .map_err(|e| readable(&format!("reading the subscription filters of {group}"), e))?;
    let ours = format!("{stack}-RunnerSubscriptionFilter");
    let names: Vec<&str> = out
        .subscription_filters()
        .iter()
        .filter_map(|f| f.filter_name())
        .collect();
    let others: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with(&ours))
        .collect();
    if others.len() >= 2 && others.len() == names.len() {
        anyhow::bail!(
            "log group {group} already has {} subscription filters ({}), the most CloudWatch Logs allows, and the stack needs one for its forwarder: remove one of them, or set RunnerLogGroupName to another group; nothing was changed",
            others.len(),
            others.join(", ")
        );
    }
    Ok(())
}

/// The metadata key of an uploaded zip naming the sha256 of its `bootstrap`.
const BOOTSTRAP_SHA256: &str = "bootstrap-sha256";

/// `deploy status --env NAME`
pub async fn status(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, _, stacks) = open(args).await?;
    let status = stacks.status().await?;
    let outputs = match status {
        Some(_) => stacks.outputs().await?,
        None => Vec::new(),
    };
    let logging = log_configuration(&t, &outputs);
    match args.output {
        Output::Json => {
            let mut v = stack_json(&t.stack, status.as_ref().map(|s| s.as_str()), &outputs, &[]);
            v["log_configuration"] = logging;
            println!("{v}");
        }
        Output::Text => match &status {
            None => println!("{}: not deployed", t.stack),
            Some(s) => {
                println!("{}: {}", t.stack, s.as_str());
                for (k, v) in &outputs {
                    println!("{k} = {v}");
                }
                println!(
                    "\nThe runner container of an ECS task definition logs with (container name {}):\n\"logConfiguration\": {:#}",
                    t.env
                        .parameters
                        .get("RunnerContainerName")
                        .map_or("runner", String::as_str),
                    logging
                );
                println!(
                    "\"mode\": \"blocking\" keeps the awslogs driver from dropping lines when its buffer fills (its default since June 2025 drops them); completion takes the exit code of that container."
                );
            }
        },
    }
    Ok(())
}

/// The `logConfiguration` of the runner container for this environment: the stack's runner
/// group, the stream prefix its `StreamTemplate` expects (`{prefix}/{container}/{task id}`),
/// and the blocking mode, so no line is dropped before CloudWatch.
pub fn log_configuration(t: &Target, outputs: &[(String, String)]) -> serde_json::Value {
    let group = outputs
        .iter()
        .find(|(k, _)| k == "RunnerLogGroup")
        .map(|(_, v)| v.clone())
        .or_else(|| {
            t.env
                .parameters
                .get("RunnerLogGroupName")
                .filter(|g| !g.is_empty())
                .cloned()
        })
        .unwrap_or_else(|| format!("/aws/ecs/{}/runner", t.stack));
    let template = t
        .env
        .parameters
        .get("StreamTemplate")
        .map_or("task/runner/{execution_id}", String::as_str);
    let prefix = template.split('/').next().unwrap_or("task");
    serde_json::json!({
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": group,
            "awslogs-region": t.region,
            "awslogs-stream-prefix": prefix,
            "mode": "blocking",
        }
    })
}

/// `deploy down --env NAME`
pub async fn down(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, _, stacks) = open(args).await?;
    // A stack left in REVIEW_IN_PROGRESS (a first change set never run) has a name and no
    // resources; it is deleted too, or the next `up` would meet it.
    let deleted = if stacks.raw_status().await?.is_none() {
        false
    } else {
        eprintln!("deleting stack {}", t.stack);
        if !confirm(args)? {
            anyhow::bail!("not deleted");
        }
        stacks.delete().await?;
        true
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"stack": t.stack, "status": if deleted { "DELETE_COMPLETE" } else { "NOT_DEPLOYED" }})
        ),
        Output::Text if deleted => println!("{}: deleted", t.stack),
        Output::Text => println!("{}: not deployed", t.stack),
    }
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
            recreate: false,
            allow_data_loss: false,
            output: crate::aws::Output::Text,
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
            role_arn: None,
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
