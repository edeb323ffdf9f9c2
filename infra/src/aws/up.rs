//! `deploy build` and `deploy up --env NAME`: the function zips built and uploaded, the
//! template's change set created, shown, checked for data loss, confirmed and executed, and the
//! CLI profile written.

use std::path::PathBuf;

use anyhow::Context;

use super::artifacts::{self, Artifact};
use super::bucket::{ensure_bucket, s3_client, upload_artifacts, upload_template};
use super::cloudformation::{self, Plan, Stacks};
use super::envfile::{self, EnvFile};
use super::profile::write_profile;
use super::session::{AwsArgs, Target, sdk, target};
use super::{Output, confirm, readable, stack_json};
use crate::template;

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
    arts: &[Artifact],
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
    upload_artifacts(&s3, &bucket, &account, arts).await?;
    let stacks = Stacks {
        client: aws_sdk_cloudformation::Client::new(sdk),
        name: t.stack.clone(),
        role_arn: args.role_arn.clone(),
    };
    let exists = match stacks.status().await? {
        None => false,
        Some(status) => match cloudformation::next_step(&t.stack, &args.env, &status) {
            cloudformation::Next::Update => true,
            // A first creation that rolled back left no resources (the logs table's policy
            // keeps none on a failed create) and so no data: it is deleted and created again.
            cloudformation::Next::Recreate
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
            cloudformation::Next::Recreate => {
                anyhow::bail!(cloudformation::recreate_advice(
                    &t.stack, &args.env, &status
                ))
            }
            cloudformation::Next::Refuse(why) => anyhow::bail!(why),
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
        None => (!exists).then(|| runvoy_runtime::random_hex(24)),
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
    let source = if body.len() > cloudformation::TEMPLATE_BODY_MAX {
        let key = upload_template(&s3, &bucket, &account, body).await?;
        eprintln!(
            "  template of {} bytes (over CloudFormation's {} inline): s3://{bucket}/{key}",
            body.len(),
            cloudformation::TEMPLATE_BODY_MAX
        );
        url = format!("https://{bucket}.s3.{}.amazonaws.com/{key}", t.region);
        cloudformation::Source::Url(&url)
    } else {
        cloudformation::Source::Body(body)
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
            let lost = cloudformation::data_lost(&changes);
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
    pub changes: Vec<cloudformation::Change>,
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
