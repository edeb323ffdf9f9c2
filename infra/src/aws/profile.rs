//! The CLI profile of an environment, written after `up` and `rotate-key`: the stack's API URL
//! output and its API key (the one it was created with, or the newest in its secret).

use anyhow::Context;
use runvoy_config::{Config, Profile};

use super::{AwsArgs, readable};

/// Writes the environment's profile: the API URL output and the key (new, or from the secret).
pub(super) async fn write_profile(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::cloudformation::Stacks;
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
