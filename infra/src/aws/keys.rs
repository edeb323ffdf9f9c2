//! `deploy rotate-key --env NAME [--retire-old]`: API key rotation without downtime. The keys
//! live in the stack's secret (`{"api_keys":[…],"token_secret":"…"}`, newest last); the API
//! function re-reads it when it meets a key it does not know and at least every 30 s, so both
//! keys are accepted between the two steps.

use anyhow::Context;
use serde_json::{Value, json};

use super::profile::write_profile;
use super::session::open;
use super::{AwsArgs, Output, readable};

/// What a rotation step does to the list of keys (newest last).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Append this new key.
    Add(String),
    /// Keep only the newest key.
    RetireOld,
}

/// The keys after `step`, and how many were retired. Refuses to retire when only one key is
/// left (that would lock everyone out or do nothing).
pub fn rotate(keys: &[String], step: &Step) -> anyhow::Result<(Vec<String>, usize)> {
    match step {
        Step::Add(k) => {
            let mut out = keys.to_vec();
            out.push(k.clone());
            Ok((out, 0))
        }
        Step::RetireOld => match keys.split_last() {
            Some((newest, old)) if !old.is_empty() => Ok((vec![newest.clone()], old.len())),
            _ => anyhow::bail!(
                "nothing to retire: the secret holds one API key; run `deploy rotate-key` (without --retire-old) to add a new one first"
            ),
        },
    }
}

/// `deploy rotate-key`
pub async fn rotate_key(args: &AwsArgs, retire_old: bool) -> anyhow::Result<()> {
    let (t, sdk, stacks) = open(args).await?;
    if stacks.status().await?.is_none() {
        anyhow::bail!(
            "stack {} does not exist; `deploy up --env {}` creates it with a key",
            t.stack,
            args.env
        );
    }
    let outputs = stacks.outputs().await?;
    // The output, else the name the template gives the secret (emulators without outputs).
    let arn = outputs
        .iter()
        .find(|(k, _)| k == "ApiSecretArn")
        .map_or_else(|| format!("{}/api", t.stack), |(_, v)| v.clone());
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let current = secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .map_err(|e| readable(&format!("reading the API keys from secret {arn}"), e))?;
    let mut secret: Value = current
        .secret_string()
        .and_then(|s| serde_json::from_str(s).ok())
        .filter(Value::is_object)
        .with_context(|| format!("secret {arn} is not the JSON object the stack created"))?;
    let keys: Vec<String> = secret["api_keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let step = if retire_old {
        Step::RetireOld
    } else {
        Step::Add(runvoy_runtime::random_hex(24))
    };
    let (after, retired) = rotate(&keys, &step)?;
    secret["api_keys"] = json!(after);
    // Everything else in the secret (the token secret) is kept as it is.
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(secret.to_string())
        .send()
        .await
        .map_err(|e| readable(&format!("writing the API keys to secret {arn}"), e))?;
    if retire_old {
        // Tokens handed out under the retired keys die with them.
        bump_token_generation(&secrets, &t.stack, false).await?;
    }
    let newest = after.last().cloned().unwrap_or_default();
    if !args.no_config {
        write_profile(args, &sdk, &outputs, Some(newest)).await?;
    }
    match args.output {
        Output::Json => println!(
            "{}",
            json!({
                "stack": t.stack,
                "keys": after.len(),
                "added": !retire_old,
                "retired": retired,
                "profile": (!args.no_config).then_some(&args.env),
            })
        ),
        Output::Text if retire_old => println!(
            "retired {retired} old API key(s) of {}; they stop being accepted within 30 seconds",
            t.stack
        ),
        Output::Text => println!(
            "added a new API key to {} ({} keys valid){}; retire the old one with `deploy rotate-key --env {} --retire-old` once every client has the new one",
            t.stack,
            after.len(),
            if args.no_config {
                String::new()
            } else {
                format!("; the CLI profile \"{}\" uses it", args.env)
            },
            args.env
        ),
    }
    Ok(())
}

/// Raises the token secret's generation (and, with `new_secret`, replaces its value): the API
/// and WebSocket functions read it again within 30 s, and refuse tokens minted before.
async fn bump_token_generation(
    secrets: &aws_sdk_secretsmanager::Client,
    stack: &str,
    new_secret: bool,
) -> anyhow::Result<u64> {
    let id = format!("{stack}/token");
    let current = secrets
        .get_secret_value()
        .secret_id(&id)
        .send()
        .await
        .map_err(|e| readable(&format!("reading the token secret {id}"), e))?;
    let mut secret: Value = current
        .secret_string()
        .and_then(|s| serde_json::from_str(s).ok())
        .filter(Value::is_object)
        .with_context(|| format!("secret {id} is not the JSON object the stack created"))?;
    let generation = secret["generation"].as_u64().unwrap_or(0) + 1;
    secret["generation"] = json!(generation);
    if new_secret {
        secret["token_secret"] = json!(runvoy_runtime::random_hex(24));
    }
    secrets
        .put_secret_value()
        .secret_id(&id)
        .secret_string(secret.to_string())
        .send()
        .await
        .map_err(|e| readable(&format!("writing the token secret {id}"), e))?;
    Ok(generation)
}

/// `deploy rotate-key --token-secret`: a new secret for WebSocket tokens.
pub async fn rotate_token_secret(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, sdk, stacks) = open(args).await?;
    if stacks.status().await?.is_none() {
        anyhow::bail!("stack {} does not exist", t.stack);
    }
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let generation = bump_token_generation(&secrets, &t.stack, true).await?;
    match args.output {
        Output::Json => println!(
            "{}",
            json!({"stack": t.stack, "token_secret": "replaced", "generation": generation})
        ),
        Output::Text => println!(
            "replaced the token secret of {} (generation {generation}); WebSocket tokens handed out before are refused within 30 seconds, and clients get new ones with their next page",
            t.stack
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_adds_newest_last_and_retires_all_but_it() {
        let one = vec!["a".to_string()];
        let (two, retired) = rotate(&one, &Step::Add("b".into())).unwrap();
        assert_eq!((two.clone(), retired), (vec!["a".into(), "b".into()], 0));
        assert_eq!(
            rotate(&two, &Step::RetireOld).unwrap(),
            (vec!["b".to_string()], 1)
        );
        let e = rotate(&one, &Step::RetireOld).unwrap_err().to_string();
        assert!(e.starts_with("nothing to retire"), "{e}");
        assert!(rotate(&[], &Step::RetireOld).is_err());
    }
}
