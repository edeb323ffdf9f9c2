//! Starting the sim: deploy the template to moto through the deploy tool, read back what moto
//! created, and build from the template's own definitions every piece moto skips — functions
//! with their roles, the APIs and their routes, the subscription filter, the rules, TTL.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use runvoy_core::auth::ApiKeys;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::apigw::http::{HttpApi, INTEGRATION_TIMEOUT, Route};
use crate::apigw::websocket::WebSocketApi;
use crate::events::{self, EventBus, Rule};
use crate::gate::{self, Caller, Gate};
use crate::iam::{Check, Policy, glob};
use crate::lambda::{AsyncConfig, FailureDestination, Function, FunctionSpec};
use crate::subscription::{Filter, Subscription};
use crate::template::{Place, Resolver, Template, scalar};
use crate::ttl::{Sweeper, TtlTable};
use crate::{
    Deployer, Deployment, SERVICE_KEY, Shared, SimConfig, SimError, SimStack, moto, package,
    producer,
};

/// moto's account.
const ACCOUNT: &str = "123456789012";

pub(crate) async fn start(
    config: SimConfig,
    deployer: &dyn Deployer,
) -> Result<SimStack, SimError> {
    let state = &config.state_dir;
    std::fs::create_dir_all(state.join("logs"))
        .map_err(|e| SimError::State(format!("{}: {e}", state.display())))?;
    let creds = runvoy_local::state::credentials(state, config.api_key.as_deref())
        .map_err(|e| SimError::State(e.to_string()))?;
    let (own_moto, endpoint) = match &config.endpoint_url {
        Some(url) => {
            moto::wait_until_up(url).await?;
            (None, url.trim_end_matches('/').to_string())
        }
        None => {
            let m = moto::start(state).await?;
            let e = m.endpoint.clone();
            (Some(m), e)
        }
    };

    let artifacts = state.join("artifacts");
    package::zip_functions(&config.functions_dir, &artifacts)?;
    let stack_name = format!("{}-sim", config.project);
    deployer
        .deploy(&Deployment {
            endpoint: endpoint.clone(),
            region: config.region.clone(),
            project: config.project.clone(),
            stack_name: stack_name.clone(),
            template: config.template.clone(),
            artifacts_dir: artifacts,
            api_key: creds.api_key.clone(),
        })
        .await
        .map_err(SimError::Deploy)?;

    let sdk = service_sdk(&endpoint, &config.region).await;
    let template = Template::parse(&config.template)?;
    let (mut params, physical) = read_stack(&sdk, &stack_name, &template).await?;
    // NoEcho parameters read back masked; the sim knows the key it deployed.
    params.insert("ApiKey".into(), creds.api_key.clone());
    let place = Place {
        region: config.region.clone(),
        account: ACCOUNT.into(),
        stack_name: stack_name.clone(),
    };
    let mut resolver = Resolver::new(template, &params, physical, place.clone())?;
    emulate_secrets(&mut resolver, &sdk).await?;

    let (gate_listener, gate_addr) = gate::bind()
        .await
        .map_err(|e| SimError::Listen(([127, 0, 0, 1], 0).into(), e.to_string()))?;
    let http_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| SimError::Listen(config.listen, e.to_string()))?;
    let addr = http_listener
        .local_addr()
        .map_err(|e| SimError::Listen(config.listen, e.to_string()))?;
    let ws_want = config
        .websocket_listen
        .unwrap_or_else(|| SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)));
    let ws_listener = tokio::net::TcpListener::bind(ws_want).await.map_err(|e| {
        SimError::Listen(
            ws_want,
            format!("{e} (the WebSocket API listens on the port after --listen)"),
        )
    })?;
    let ws_addr = ws_listener
        .local_addr()
        .map_err(|e| SimError::Listen(ws_want, e.to_string()))?;

    let http_api_id = api_of(&resolver, "HTTP")?;
    let ws_api_id = api_of(&resolver, "WEBSOCKET")?;
    let hosts = [
        (
            execute_api(&http_api_id.1, &place, "https"),
            format!("http://{addr}"),
        ),
        (
            execute_api(&ws_api_id.1, &place, "https"),
            format!("http://{ws_addr}"),
        ),
        (
            execute_api(&ws_api_id.1, &place, "wss"),
            format!("ws://{ws_addr}"),
        ),
    ];

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let mut functions: Vec<(String, Arc<Function>)> = Vec::new();
    let mut callers: HashMap<String, Caller> = HashMap::new();
    let mut policies = Vec::new();
    let mut roles: HashMap<String, Arc<Policy>> = HashMap::new();
    for (fid, _) in resolver.template().of_type("AWS::Lambda::Function") {
        if !resolver.active(fid)? {
            continue;
        }
        let props = resolver.properties(fid)?;
        let name = resolver.physical(fid).unwrap_or(fid).to_string();
        let arn = resolver.get_att(fid, "Arn")?;
        let binary = package::bootstrap(
            &s3,
            props["Code"]["S3Bucket"].as_str().unwrap_or_default(),
            props["Code"]["S3Key"].as_str().unwrap_or_default(),
            &config.cache_dir,
        )
        .await?;
        let role = role_of(&resolver, fid)?;
        let policy = Arc::new(Policy::of_role(&resolver, &role, &name)?);
        let key = access_key(&name);
        let mut env: Vec<(String, String)> = props["Environment"]["Variables"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), rewrite(&scalar(v), &hosts)))
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
            ("AWS_ENDPOINT_URL", format!("http://{gate_addr}")),
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
        callers.insert(
            key,
            Caller {
                function: name.clone(),
                policy: policy.clone(),
            },
        );
        policies.push((name.clone(), policy.clone()));
        roles.insert(fid.to_string(), policy);
        functions.push((fid.to_string(), f));
    }
    let by_arn = |arn: &str| -> Option<Arc<Function>> {
        let arn = arn.trim_end_matches(":$LATEST");
        functions
            .iter()
            .find(|(_, f)| f.spec.arn == arn || f.spec.name == arn)
            .map(|(_, f)| f.clone())
    };
    let callers = Arc::new(callers);
    let gate = Arc::new(Gate::new(
        endpoint.clone(),
        callers.clone(),
        place.clone(),
        config.get_log_events_per_sec,
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // HTTP API.
    let http_routes = routes(&resolver, &http_api_id.0, &by_arn)?
        .into_iter()
        .map(|(key, function)| Route { key, function })
        .collect::<Vec<_>>();
    let http_api = Arc::new(HttpApi {
        api_id: http_api_id.1.clone(),
        domain: host(&http_api_id.1, &place),
        account: place.account.clone(),
        routes: http_routes,
        timeout: INTEGRATION_TIMEOUT,
    });
    // WebSocket API.
    let stage = resolver
        .template()
        .of_type("AWS::ApiGatewayV2::Stage")
        .filter_map(|(id, _)| resolver.properties(id).ok())
        .find(|p| p["ApiId"] == ws_api_id.1.as_str())
        .and_then(|p| p["StageName"].as_str().map(str::to_string))
        .ok_or_else(|| SimError::Template("the WebSocket API has no stage".into()))?;
    let ws = Arc::new(WebSocketApi::new(
        ws_api_id.1.clone(),
        stage,
        host(&ws_api_id.1, &place),
        place.account.clone(),
        place.region.clone(),
        routes(&resolver, &ws_api_id.0, &by_arn)?
            .into_iter()
            .collect(),
        callers.clone(),
        config.chaos.ws_cut_ms.map(Duration::from_millis),
        config.chaos.connect_ms.map(Duration::from_millis),
        shutdown_rx.clone(),
    ));

    // Subscription filter, EventBridge rules, TTL.
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
        let dest = by_arn(dest_arn).ok_or_else(|| {
            SimError::Template(format!(
                "{id}: destination {dest_arn} is not a function of the stack"
            ))
        })?;
        let source = format!(
            "arn:aws:logs:{}:{}:log-group:{g}:*",
            place.region, place.account
        );
        if !permitted(&resolver, &dest, "logs.amazonaws.com", &source)? {
            return Err(SimError::Template(format!(
                "{id}: CloudWatch Logs may not invoke {}: no AWS::Lambda::Permission for logs.amazonaws.com from {source} (PutSubscriptionFilter would fail)",
                dest.spec.name
            )));
        }
        subscription = Some(Subscription::start(Filter {
            moto: endpoint.clone(),
            group: g.clone(),
            name: resolver.physical(id).unwrap_or(id).to_string(),
            owner: place.account.clone(),
            region: place.region.clone(),
            config: async_config(&resolver, &dest, &roles, &endpoint, &config)?,
            destination: dest,
            chaos: config.chaos.clone(),
        }));
        group = Some(g);
    }
    let group = group.ok_or_else(|| {
        SimError::Template("the template has no subscription filter on a runner log group".into())
    })?;
    let mut rules = Vec::new();
    for (id, _) in resolver.template().of_type("AWS::Events::Rule") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        if p["State"].as_str().unwrap_or("ENABLED") != "ENABLED" {
            continue;
        }
        events::validate(&p["EventPattern"])
            .map_err(|e| SimError::Template(format!("{id}: {e}")))?;
        let rule_arn = resolver.get_att(id, "Arn")?;
        let mut targets = Vec::new();
        for t in p["Targets"].as_array().into_iter().flatten() {
            let arn = t["Arn"].as_str().unwrap_or_default();
            let f = by_arn(arn).ok_or_else(|| {
                SimError::Template(format!("{id}: target {arn} is not a function of the stack"))
            })?;
            if !permitted(&resolver, &f, "events.amazonaws.com", &rule_arn)? {
                eprintln!(
                    "sim: rule {id} may not invoke {} (no AWS::Lambda::Permission for events.amazonaws.com); its events fail",
                    f.spec.name
                );
                continue;
            }
            targets.push((
                f.clone(),
                async_config(&resolver, &f, &roles, &endpoint, &config)?,
            ));
        }
        rules.push(Rule {
            name: id.to_string(),
            pattern: p["EventPattern"].clone(),
            targets,
        });
    }
    let mut ttl_tables = Vec::new();
    for (id, _) in resolver.template().of_type("AWS::DynamoDB::Table") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        if p["TimeToLiveSpecification"]["Enabled"] == true {
            ttl_tables.push(TtlTable {
                name: resolver.physical(id).unwrap_or(id).to_string(),
                attribute: scalar(&p["TimeToLiveSpecification"]["AttributeName"]),
                keys: p["KeySchema"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| scalar(&k["AttributeName"]))
                    .collect(),
            });
        }
    }

    let shared = Arc::new(Shared {
        keys: ApiKeys::new(vec![creds.api_key.clone()]),
        logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
        group,
        stream_template: resolver
            .param("StreamTemplate")
            .unwrap_or_else(|| "task/runner/{execution_id}".into()),
        cluster: stack_name.clone(),
        runs: state.join("running-tasks"),
        place: place.clone(),
        bus: EventBus {
            rules,
            account: place.account.clone(),
            region: place.region.clone(),
            pending: state.join("pending-invocations"),
        },
        subscription,
        sweeper: Sweeper {
            client: aws_sdk_dynamodb::Client::new(&sdk),
            tables: ttl_tables,
        },
        gate: gate.clone(),
        functions: functions.iter().map(|(_, f)| f.clone()).collect(),
        policies,
        ws: ws.clone(),
    });

    let mut servers = vec![gate.serve(gate_listener)];
    let resumed = shared.bus.resume_pending();
    let interrupted = shared.stop_interrupted_runs();
    if resumed + interrupted > 0 {
        eprintln!(
            "sim: {resumed} asynchronous invocation(s) run again, {interrupted} interrupted task(s) reported stopped"
        );
    }
    let api = http_api.clone();
    let router = producer::router(shared.clone()).fallback(move |req: axum::extract::Request| {
        let api = api.clone();
        async move { api.serve(req).await }
    });
    servers.push(serve(http_listener, router, shutdown_rx.clone()));
    let ws_router = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let ws = ws.clone();
        async move { ws.serve(req).await }
    });
    servers.push(serve(ws_listener, ws_router, shutdown_rx.clone()));
    servers.push(tokio::spawn(ttl_loop(
        shared.clone(),
        config.ttl_every,
        shutdown_rx,
    )));
    Ok(SimStack {
        addr,
        websocket_addr: ws_addr,
        api_key: creds.api_key,
        moto_endpoint: endpoint,
        stack_name,
        shared,
        shutdown: shutdown_tx,
        servers,
        _moto: own_moto,
    })
}

fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
    })
}

async fn ttl_loop(shared: Arc<Shared>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                for f in &shared.functions {
                    f.stop_all();
                }
                return;
            }
        }
        if let Err(e) = shared.sweeper.sweep(crate::lambda::now_ms() / 1000).await {
            eprintln!("sim: TTL sweep failed: {e}");
        }
    }
}

/// An SDK configuration for the sim's own calls to moto, as the AWS services themselves.
async fn service_sdk(endpoint: &str, region: &str) -> aws_config::SdkConfig {
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
async fn read_stack(
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
/// `GenerateSecretString` as CloudFormation runs it. An existing secret keeps its generated
/// value; the fields the template sets are brought up to date.
async fn emulate_secrets(
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
        let mut value: serde_json::Map<String, Value> =
            match generate["SecretStringTemplate"].as_str() {
                Some(t) => serde_json::from_str(t).map_err(|e| {
                    SimError::Template(format!("{id}: SecretStringTemplate is not JSON: {e}"))
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
                let mut merged = old.clone();
                merged.extend(value);
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

/// The access key a function signs with (it names the function to the gate).
fn access_key(function: &str) -> String {
    let d = Sha256::digest(function.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02X}")).collect();
    format!("ASIA{hex}")
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn host(api_id: &str, place: &Place) -> String {
    format!("{api_id}.execute-api.{}.amazonaws.com", place.region)
}

fn execute_api(api_id: &str, place: &Place, scheme: &str) -> String {
    format!("{scheme}://{}", host(api_id, place))
}

/// Points the execute-api hosts of the emulated APIs at their local addresses.
fn rewrite(value: &str, hosts: &[(String, String)]) -> String {
    hosts
        .iter()
        .fold(value.to_string(), |v, (from, to)| v.replace(from, to))
}

/// The API of a protocol: (logical id, id).
fn api_of(resolver: &Resolver, protocol: &str) -> Result<(String, String), SimError> {
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

/// Route key → function of one API, for routes whose integration may invoke the function.
fn routes(
    resolver: &Resolver,
    api: &str,
    by_arn: &dyn Fn(&str) -> Option<Arc<Function>>,
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
        let f = by_arn(&arn).ok_or_else(|| {
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
