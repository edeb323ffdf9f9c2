//! `deploy status --env NAME`: the stack's status and outputs, and the `logConfiguration` the
//! runner container needs for them.

use super::session::{AwsArgs, Target, open};
use super::{Output, stack_json};

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
fn log_configuration(t: &Target, outputs: &[(String, String)]) -> serde_json::Value {
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
