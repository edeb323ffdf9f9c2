//! `deploy diff --env NAME`: what `up` would change, as a change set that is created, read
//! and discarded.

use super::cloudformation::{self, Plan};
use super::session::{AwsArgs, open};
use super::{Output, artifacts, envfile, stack_json};
use crate::template;

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
    let changes = match stacks
        .plan(cloudformation::Source::Body(&body), &params)
        .await?
    {
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
