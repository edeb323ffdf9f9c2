//! What invokes the functions, from the template: the subscription filter, the EventBridge
//! rules, the API routes — each only where a resource-based policy (`AWS::Lambda::Permission`)
//! lets its service invoke the function — and the asynchronous invocation settings
//! (`AWS::Lambda::EventInvokeConfig`) with their SQS on-failure destination.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::events::{self, Rule};
use crate::functions::{Functions, number};
use crate::iam::{Check, Policy, glob};
use crate::lambda::{AsyncConfig, FailureDestination, Function};
use crate::subscription::{Filter, Subscription};
use crate::template::{Place, Resolver, scalar};
use crate::{SERVICE_KEY, SimConfig, SimError};

/// The stack's subscription filter on the runner log group, started; and that group.
pub(crate) fn subscription(
    resolver: &Resolver,
    functions: &Functions,
    endpoint: &str,
    config: &SimConfig,
    trace: Arc<crate::trace::Trace>,
) -> Result<(Subscription, String), SimError> {
    let place = &resolver.place;
    let mut subscription = None;
    let mut group = None;
    for (id, _) in resolver.template().of_type("AWS::Logs::SubscriptionFilter") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        let g = p["LogGroupName"].as_str().unwrap_or_default().to_string();
        if p["FilterPattern"].as_str().unwrap_or_default() != "" {
            return Err(SimError::Template(format!(
                "{id}: the sim delivers every event; it cannot evaluate FilterPattern {}",
                p["FilterPattern"]
            )));
        }
        let dest_arn = p["DestinationArn"].as_str().unwrap_or_default();
        let dest = functions.by_arn(dest_arn).ok_or_else(|| {
            SimError::Template(format!(
                "{id}: destination {dest_arn} is not a function of the stack"
            ))
        })?;
        let source = format!(
            "arn:aws:logs:{}:{}:log-group:{g}:*",
            place.region, place.account
        );
        if !permitted(resolver, &dest, "logs.amazonaws.com", &source)? {
            return Err(SimError::Template(format!(
                "{id}: CloudWatch Logs may not invoke {}: no AWS::Lambda::Permission for logs.amazonaws.com from {source} (PutSubscriptionFilter would fail)",
                dest.spec.name
            )));
        }
        subscription = Some(Subscription::start(Filter {
            moto: endpoint.to_string(),
            group: g.clone(),
            name: resolver.physical(id).unwrap_or(id).to_string(),
            owner: place.account.clone(),
            region: place.region.clone(),
            config: async_config(resolver, &dest, &functions.roles, endpoint, config)?,
            destination: dest,
            chaos: config.chaos.clone(),
            trace: trace.clone(),
        }));
        group = Some(g);
    }
    match (subscription, group) {
        (Some(s), Some(g)) => Ok((s, g)),
        _ => Err(SimError::Template(
            "the template has no subscription filter on a runner log group".into(),
        )),
    }
}

/// The stack's enabled EventBridge rules and the functions they may invoke.
pub(crate) fn rules(
    resolver: &Resolver,
    functions: &Functions,
    endpoint: &str,
    config: &SimConfig,
) -> Result<Vec<Rule>, SimError> {
    let mut rules = Vec::new();
    for (id, _) in resolver.template().of_type("AWS::Events::Rule") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        if p["State"].as_str().unwrap_or("ENABLED") != "ENABLED" {
            continue;
        }
        let schedule = match p["ScheduleExpression"].as_str() {
            Some(expr) => {
                Some(events::rate(expr).map_err(|e| SimError::Template(format!("{id}: {e}")))?)
            }
            None => {
                events::validate(&p["EventPattern"])
                    .map_err(|e| SimError::Template(format!("{id}: {e}")))?;
                None
            }
        };
        let rule_arn = resolver.get_att(id, "Arn")?;
        let mut targets = Vec::new();
        for t in p["Targets"].as_array().into_iter().flatten() {
            let arn = t["Arn"].as_str().unwrap_or_default();
            let f = functions.by_arn(arn).ok_or_else(|| {
                SimError::Template(format!("{id}: target {arn} is not a function of the stack"))
            })?;
            if !permitted(resolver, &f, "events.amazonaws.com", &rule_arn)? {
                eprintln!(
                    "sim: rule {id} may not invoke {} (no AWS::Lambda::Permission for events.amazonaws.com); its events fail",
                    f.spec.name
                );
                continue;
            }
            targets.push((
                f.clone(),
                async_config(resolver, &f, &functions.roles, endpoint, config)?,
            ));
        }
        rules.push(Rule {
            name: id.to_string(),
            arn: rule_arn.clone(),
            pattern: p["EventPattern"].clone(),
            schedule,
            targets,
        });
    }
    Ok(rules)
}

pub(crate) fn host(api_id: &str, place: &Place) -> String {
    format!("{api_id}.execute-api.{}.amazonaws.com", place.region)
}

pub(crate) fn execute_api(api_id: &str, place: &Place, scheme: &str) -> String {
    format!("{scheme}://{}", host(api_id, place))
}

/// The API of a protocol: (logical id, id).
pub(crate) fn api_of(resolver: &Resolver, protocol: &str) -> Result<(String, String), SimError> {
    resolver
        .template()
        .of_type("AWS::ApiGatewayV2::Api")
        .find(|(id, _)| {
            resolver
                .properties(id)
                .is_ok_and(|p| p["ProtocolType"] == protocol)
        })
        .map(|(id, _)| {
            (
                id.to_string(),
                resolver.physical(id).unwrap_or(id).to_string(),
            )
        })
        .ok_or_else(|| SimError::Template(format!("the template has no {protocol} API")))
}

/// Route key → function of one API, for routes whose integration may invoke the function.
pub(crate) fn routes(
    resolver: &Resolver,
    api: &str,
    functions: &Functions,
) -> Result<Vec<(String, Arc<Function>)>, SimError> {
    let api_id = resolver.physical(api).unwrap_or(api).to_string();
    let mut out = Vec::new();
    for (rid, _) in resolver.template().of_type("AWS::ApiGatewayV2::Route") {
        let r = resolver.properties(rid)?;
        if r["ApiId"] != api_id.as_str() {
            continue;
        }
        let key = scalar(&r["RouteKey"]);
        let target = scalar(&r["Target"]);
        let integration = target.strip_prefix("integrations/").unwrap_or(&target);
        let Some((iid, _)) = resolver
            .template()
            .of_type("AWS::ApiGatewayV2::Integration")
            .find(|(i, _)| resolver.physical(i) == Some(integration))
        else {
            return Err(SimError::Template(format!(
                "{rid}: target {target} is not an integration of the stack"
            )));
        };
        let uri = scalar(&resolver.properties(iid)?["IntegrationUri"]);
        let arn = match uri.split_once("/functions/") {
            Some((_, rest)) => rest.trim_end_matches("/invocations").to_string(),
            None => uri.clone(),
        };
        let f = functions.by_arn(&arn).ok_or_else(|| {
            SimError::Template(format!("{iid}: {uri} is not a function of the stack"))
        })?;
        let (method, path) = key.split_once(' ').unwrap_or(("*", "*"));
        let source = format!(
            "arn:aws:execute-api:{}:{}:{api_id}/{}/{}{}",
            resolver.place.region,
            resolver.place.account,
            "*",
            if method == "ANY" { "*" } else { method },
            if key.starts_with('$') {
                format!("/{key}")
            } else {
                path.to_string()
            }
        );
        if !permitted(resolver, &f, "apigateway.amazonaws.com", &source)? {
            eprintln!(
                "sim: route {key} may not invoke {} (no AWS::Lambda::Permission for apigateway.amazonaws.com from {source}); it answers 500",
                f.spec.name
            );
            continue;
        }
        out.push((key, f));
    }
    Ok(out)
}

/// Whether a resource-based policy (`AWS::Lambda::Permission`) lets `principal` invoke `f`
/// from `source_arn`.
fn permitted(
    resolver: &Resolver,
    f: &Function,
    principal: &str,
    source_arn: &str,
) -> Result<bool, SimError> {
    for (id, _) in resolver.template().of_type("AWS::Lambda::Permission") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        let name = scalar(&p["FunctionName"]);
        let names_f = name == f.spec.name || name == f.spec.arn;
        let action = scalar(&p["Action"]);
        let allowed_action = action == "lambda:InvokeFunction" || action == "lambda:*";
        let source_ok = p
            .get("SourceArn")
            .is_none_or(|s| glob(&scalar(s), source_arn));
        let account_ok = p
            .get("SourceAccount")
            .is_none_or(|a| scalar(a) == resolver.place.account);
        if names_f
            && allowed_action
            && scalar(&p["Principal"]) == principal
            && source_ok
            && account_ok
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The asynchronous invocation settings of a function (its `AWS::Lambda::EventInvokeConfig`).
fn async_config(
    resolver: &Resolver,
    f: &Function,
    roles: &HashMap<String, Arc<Policy>>,
    moto: &str,
    config: &SimConfig,
) -> Result<AsyncConfig, SimError> {
    let mut out = AsyncConfig {
        max_retries: 2,
        retry_delays: config.retry_delays.clone(),
        on_failure: None,
        duplicate: config.chaos.lambda_dup,
    };
    for (id, _) in resolver
        .template()
        .of_type("AWS::Lambda::EventInvokeConfig")
    {
        let p = resolver.properties(id)?;
        let name = scalar(&p["FunctionName"]);
        if name != f.spec.name && name != f.spec.arn {
            continue;
        }
        if let Some(n) = number(&p["MaximumRetryAttempts"]) {
            out.max_retries = n as u32;
        }
        if let Some(dest) = p["DestinationConfig"]["OnFailure"]["Destination"].as_str() {
            let queue = resolver
                .template()
                .of_type("AWS::SQS::Queue")
                .find(|(q, _)| resolver.get_att(q, "Arn").is_ok_and(|a| a == dest))
                .and_then(|(q, _)| resolver.physical(q).map(str::to_string))
                .ok_or_else(|| {
                    SimError::Template(format!("{id}: on-failure destination {dest} is not a queue of the stack (the sim delivers to SQS only)"))
                })?;
            out.on_failure = Some(Arc::new(SqsDestination {
                http: reqwest::Client::new(),
                moto: moto.to_string(),
                queue_url: queue,
                queue_arn: dest.to_string(),
                policy: roles
                    .get(&f.spec.logical_id)
                    .cloned()
                    .expect("every function has a role"),
            }));
        }
    }
    Ok(out)
}

/// Lambda sending a failed asynchronous invocation to SQS, with the function's role.
struct SqsDestination {
    http: reqwest::Client,
    moto: String,
    queue_url: String,
    queue_arn: String,
    policy: Arc<Policy>,
}

#[async_trait::async_trait]
impl FailureDestination for SqsDestination {
    async fn send(&self, record: Value) -> Result<(), String> {
        self.policy
            .check(&Check::new("sqs:SendMessage", self.queue_arn.clone()))?;
        let r = self
            .http
            .post(&self.moto)
            .header("x-amz-target", "AmazonSQS.SendMessage")
            .header("content-type", "application/x-amz-json-1.0")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={SERVICE_KEY}/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(json!({"QueueUrl": self.queue_url, "MessageBody": record.to_string()}).to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "SQS answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ))
        }
    }
}
