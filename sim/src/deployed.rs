//! The deployed stack as moto holds it: an SDK for the sim's own calls (as the AWS services
//! themselves), the stack's parameters and physical ids read back, ids for the resources moto
//! skips, and the Secrets Manager secrets its CloudFormation does not create.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::functions::number;
use crate::template::{Resolver, Template};
use crate::{SERVICE_KEY, SimError};

/// moto's account.
pub(crate) const ACCOUNT: &str = "123456789012";

/// An SDK configuration for the sim's own calls to moto, as the AWS services themselves.
pub(crate) async fn service_sdk(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            SERVICE_KEY,
            "sim",
            None,
            None,
            "sim",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// The stack's parameters and physical ids as moto has them, plus ids for what moto skips.
pub(crate) async fn read_stack(
    sdk: &aws_config::SdkConfig,
    stack: &str,
    template: &Template,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), SimError> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let fail = |e: &dyn ProvideErrorMetadata| {
        SimError::Deploy(format!(
            "reading stack {stack} back: {}",
            e.message().unwrap_or("no message")
        ))
    };
    let described = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| fail(&e))?;
    let params = described
        .stacks()
        .first()
        .map(|s| {
            s.parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_string(),
                        p.parameter_value()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let resources = cfn
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| fail(&e))?;
    let mut physical: BTreeMap<String, String> = resources
        .stack_resources()
        .iter()
        .filter_map(|r| {
            Some((
                r.logical_resource_id()?.to_string(),
                r.physical_resource_id()?.to_string(),
            ))
        })
        .collect();
    for (id, r) in template.resources() {
        let ty = r["Type"].as_str().unwrap_or_default();
        if ty.starts_with("AWS::ApiGatewayV2::") || ty == "AWS::Logs::SubscriptionFilter" {
            let len = if ty == "AWS::ApiGatewayV2::Api" {
                10
            } else {
                7
            };
            physical.insert(id.clone(), sim_id(stack, id, len));
        }
    }
    Ok((params, physical))
}

/// Creates the stack's Secrets Manager secrets in moto (its CloudFormation skips them), with
/// `GenerateSecretString` as CloudFormation runs it. An existing secret keeps its values
/// (generated or rotated); fields the template gained are added.
pub(crate) async fn emulate_secrets(
    resolver: &mut Resolver,
    sdk: &aws_config::SdkConfig,
) -> Result<(), SimError> {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    let ids: Vec<String> = resolver
        .template()
        .of_type("AWS::SecretsManager::Secret")
        .map(|(id, _)| id.to_string())
        .collect();
    for id in ids {
        if !resolver.active(&id)? {
            continue;
        }
        let p = resolver.properties(&id)?;
        let name = p["Name"].as_str().map_or_else(
            || format!("{}-{id}", resolver.place.stack_name),
            str::to_string,
        );
        let generate = &p["GenerateSecretString"];
        // The value: `SecretString`, or `GenerateSecretString`'s template plus its generated key.
        let mut value: serde_json::Map<String, Value> = match generate["SecretStringTemplate"]
            .as_str()
            .or_else(|| p["SecretString"].as_str())
        {
            Some(t) => serde_json::from_str(t).map_err(|e| {
                SimError::Template(format!(
                    "{id}: the secret's string is not a JSON object (the sim emulates JSON secrets only): {e}"
                ))
            })?,
            None => serde_json::Map::new(),
        };
        let fail = |e: String| SimError::Moto(format!("secret {name}: {e}"));
        let existing = sm.get_secret_value().secret_id(&name).send().await;
        let arn = match existing {
            Ok(out) => {
                let old: serde_json::Map<String, Value> = out
                    .secret_string()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default();
                // As CloudFormation, which leaves a secret alone while its properties do not
                // change: values already there (a rotated key list) stay, fields the template
                // gained are added.
                let mut merged = old.clone();
                for (k, v) in value {
                    merged.entry(k).or_insert(v);
                }
                if merged != old {
                    sm.put_secret_value()
                        .secret_id(&name)
                        .secret_string(Value::Object(merged).to_string())
                        .send()
                        .await
                        .map_err(|e| {
                            fail(e.message().unwrap_or("PutSecretValue failed").to_string())
                        })?;
                }
                out.arn().unwrap_or_default().to_string()
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                if let Some(k) = generate["GenerateStringKey"].as_str() {
                    let len = number(&generate["PasswordLength"]).unwrap_or(32) as usize;
                    value.insert(
                        k.to_string(),
                        json!(random_password(len, generate["ExcludePunctuation"] == true)),
                    );
                }
                sm.create_secret()
                    .name(&name)
                    .secret_string(Value::Object(value).to_string())
                    .send()
                    .await
                    .map_err(|e| fail(e.message().unwrap_or("CreateSecret failed").to_string()))?
                    .arn()
                    .unwrap_or_default()
                    .to_string()
            }
            Err(e) => {
                return Err(fail(
                    e.message().unwrap_or("GetSecretValue failed").to_string(),
                ));
            }
        };
        resolver.set_physical(&id, arn);
    }
    Ok(())
}

fn random_password(len: usize, no_punctuation: bool) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const ALL: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-.:;<=>?[]^_{|}~";
    let set = if no_punctuation { ALNUM } else { ALL };
    (0..len)
        .map(|_| set[rand::random_range(0..set.len())] as char)
        .collect()
}

/// A stable id shaped like API Gateway's (lowercase letters and digits).
fn sim_id(stack: &str, logical: &str, len: usize) -> String {
    let d = Sha256::digest(format!("{stack}/{logical}").as_bytes());
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    d.iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
