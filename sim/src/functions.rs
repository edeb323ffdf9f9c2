//! The stack's Lambda functions as the sim runs them: for each `AWS::Lambda::Function`, its
//! code from the zip its `Code` names, the environment, timeout, memory and concurrency the
//! template gives it plus what Lambda itself sets, and its role's policy with the access key that
//! names it to the IAM gate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::gate::Caller;
use crate::iam::Policy;
use crate::lambda::{Function, FunctionSpec};
use crate::template::{Resolver, scalar};
use crate::{SimConfig, SimError, package};

/// The functions, and who they are to the gate.
#[derive(Default)]
pub(crate) struct Functions {
    pub list: Vec<Arc<Function>>,
    /// Access key → function and policy.
    pub callers: HashMap<String, Caller>,
    /// Function name → its role's policy.
    pub policies: Vec<(String, Arc<Policy>)>,
    /// Function logical id → its role's policy.
    pub roles: HashMap<String, Arc<Policy>>,
}

impl Functions {
    /// The function an ARN (or name, qualified or not) names.
    pub fn by_arn(&self, arn: &str) -> Option<Arc<Function>> {
        let arn = arn.trim_end_matches(":$LATEST");
        self.list
            .iter()
            .find(|f| f.spec.arn == arn || f.spec.name == arn)
            .cloned()
    }
}

/// Builds every function of the stack. `hosts` maps the emulated APIs' execute-api origins to
/// their local addresses; `gate` is where the functions' AWS calls go.
pub(crate) async fn functions(
    resolver: &Resolver,
    s3: &aws_sdk_s3::Client,
    config: &SimConfig,
    gate: SocketAddr,
    hosts: &[(String, String)],
) -> Result<Functions, SimError> {
    let mut out = Functions::default();
    let place = &resolver.place;
    let state = &config.state_dir;
    for (fid, _) in resolver.template().of_type("AWS::Lambda::Function") {
        if !resolver.active(fid)? {
            continue;
        }
        let props = resolver.properties(fid)?;
        let name = resolver.physical(fid).unwrap_or(fid).to_string();
        let arn = resolver.get_att(fid, "Arn")?;
        let binary = package::bootstrap(
            s3,
            props["Code"]["S3Bucket"].as_str().unwrap_or_default(),
            props["Code"]["S3Key"].as_str().unwrap_or_default(),
            &config.cache_dir,
        )
        .await?;
        let role = role_of(resolver, fid)?;
        let policy = Arc::new(Policy::of_role(resolver, &role, &name)?);
        let key = access_key(&name);
        let mut env: Vec<(String, String)> = props["Environment"]["Variables"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), rewrite(&scalar(v), hosts)))
            .collect();
        let memory = number(&props["MemorySize"]).unwrap_or(128);
        let log_group = props["LoggingConfig"]["LogGroup"]
            .as_str()
            .map_or_else(|| format!("/aws/lambda/{name}"), str::to_string);
        let task_root = binary
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for (k, v) in [
            ("AWS_REGION", place.region.clone()),
            ("AWS_DEFAULT_REGION", place.region.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", log_group),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".into()),
            ("AWS_ACCESS_KEY_ID", key.clone()),
            ("AWS_SECRET_ACCESS_KEY", "sim-secret".into()),
            ("AWS_SESSION_TOKEN", format!("sim-session-{name}")),
            (
                "_HANDLER",
                props["Handler"].as_str().unwrap_or("bootstrap").into(),
            ),
            ("LAMBDA_TASK_ROOT", task_root),
            ("TZ", ":UTC".into()),
            ("LANG", "en_US.UTF-8".into()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
            // The one addition: where "AWS" is. The gate checks IAM and forwards to moto.
            ("AWS_ENDPOINT_URL", format!("http://{gate}")),
        ] {
            env.push((k.into(), v));
        }
        let f = Function::new(FunctionSpec {
            logical_id: fid.to_string(),
            name: name.clone(),
            arn,
            binary,
            env,
            timeout: Duration::from_secs(number(&props["Timeout"]).unwrap_or(3)),
            memory_mb: memory,
            log_file: state.join("logs").join(format!("{name}.log")),
            max_concurrency: number(&props["ReservedConcurrentExecutions"])
                .map_or(config.max_concurrency, |n| n as usize),
        });
        out.callers.insert(
            key,
            Caller {
                function: name.clone(),
                policy: policy.clone(),
            },
        );
        out.policies.push((name.clone(), policy.clone()));
        out.roles.insert(fid.to_string(), policy);
        out.list.push(f);
    }
    Ok(out)
}

// The access key a function signs with (it names the function to the gate).
fn access_key(function: &str) -> String {
    let d = Sha256::digest(function.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02X}")).collect();
    format!("ASIA{hex}")
}

pub(crate) fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Points the execute-api hosts of the emulated APIs at their local addresses.
pub(crate) fn rewrite(value: &str, hosts: &[(String, String)]) -> String {
    hosts
        .iter()
        .fold(value.to_string(), |v, (from, to)| v.replace(from, to))
}

/// The logical id of the role a function's `Role` names (`Fn::GetAtt [Role, Arn]`).
fn role_of(resolver: &Resolver, function: &str) -> Result<String, SimError> {
    let raw = &resolver.template().resource(function).expect("exists")["Properties"]["Role"];
    raw.get("Fn::GetAtt")
        .and_then(|a| a.get(0).and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| {
            SimError::Template(format!(
                "{function}: Role must be Fn::GetAtt of a role in the stack, so the sim can read its policies"
            ))
        })
}
