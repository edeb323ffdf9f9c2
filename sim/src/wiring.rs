//! Starting the sim: deploy the template to moto through the deploy tool, read back what moto
//! created, and build from the template's own definitions every piece moto skips — functions
//! with their roles, the APIs and their routes, the subscription filter, the rules, TTL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runvoy_core::auth::ApiKeys;
use tokio::sync::watch;

use crate::apigw::http::{HttpApi, INTEGRATION_TIMEOUT, Route};
use crate::apigw::websocket::WebSocketApi;
use crate::deployed::{ACCOUNT, emulate_secrets, read_stack, service_sdk};
use crate::events::EventBus;
use crate::gate::{self, Gate};
use crate::ledger::{self, Ledger};
use crate::template::{Place, Resolver, Template};
use crate::timing::{DynamoChaos, DynamoTiming};
use crate::trace::Trace;
use crate::ttl::Sweeper;
use crate::{
    Deployer, Deployment, Shared, SimConfig, SimError, SimStack, functions, moto, package,
    producer, triggers, ttl,
};

pub(crate) async fn start(
    config: SimConfig,
    deployer: &dyn Deployer,
) -> Result<SimStack, SimError> {
    let state = &config.state_dir;
    std::fs::create_dir_all(state.join("logs"))
        .map_err(|e| SimError::State(format!("{}: {e}", state.display())))?;
    let creds = runvoy_local::state::credentials(state, config.api_key.as_deref())
        .map_err(|e| SimError::State(e.to_string()))?;
    let endpoint = match &config.endpoint_url {
        Some(url) => {
            moto::wait_until_up(url).await?;
            url.trim_end_matches('/').to_string()
        }
        None => moto::own(state).await?,
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
    // The WebSocket API: `--websocket-listen`, else the port this state directory used last
    // (clients holding its `websocket_url` reconnect there), else any free one. Clients read it
    // from the `websocket_url` the HTTP API hands out.
    let ws_file = state.join("websocket-port");
    let ws_listener = match config.websocket_listen {
        Some(want) => tokio::net::TcpListener::bind(want)
            .await
            .map_err(|e| SimError::Listen(want, format!("{e} (--websocket-listen)")))?,
        None => {
            let last = std::fs::read_to_string(&ws_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
                .filter(|p| *p != addr.port());
            let again = match last {
                Some(p) => tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), p))
                    .await
                    .ok(),
                None => None,
            };
            match again {
                Some(l) => l,
                None => tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                    .await
                    .map_err(|e| SimError::Listen(SocketAddr::new(addr.ip(), 0), e.to_string()))?,
            }
        }
    };
    let ws_addr = ws_listener
        .local_addr()
        .map_err(|e| SimError::Listen(addr, e.to_string()))?;
    let _ = std::fs::write(&ws_file, ws_addr.port().to_string());

    let http_api_id = triggers::api_of(&resolver, "HTTP")?;
    let ws_api_id = triggers::api_of(&resolver, "WEBSOCKET")?;
    let hosts = [
        (
            triggers::execute_api(&http_api_id.1, &place, "https"),
            format!("http://{addr}"),
        ),
        (
            triggers::execute_api(&ws_api_id.1, &place, "https"),
            format!("http://{ws_addr}"),
        ),
        (
            triggers::execute_api(&ws_api_id.1, &place, "wss"),
            format!("ws://{ws_addr}"),
        ),
    ];

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let mut functions = functions::functions(&resolver, &s3, &config, gate_addr, &hosts).await?;
    let callers = Arc::new(std::mem::take(&mut functions.callers));
    let stream_template = resolver
        .param("StreamTemplate")
        .unwrap_or_else(|| "task/runner/{execution_id}".into());
    let ledger = Arc::new(Ledger::new(ledger::key_schemas(&resolver)?));
    let trace = Arc::new(Trace::new(&stream_template));
    let gate = Arc::new(
        Gate::new(
            endpoint.clone(),
            callers.clone(),
            place.clone(),
            config.get_log_events_per_sec,
        )
        .with_timing(DynamoTiming::new(DynamoChaos {
            txn_skew_ms: config.chaos.txn_skew_ms.unwrap_or(0),
            throttle_wcu: config.chaos.throttle_wcu,
            sdk_retry: config.chaos.sdk_retry,
        }))
        .with_ledger(ledger.clone())
        .with_trace(trace.clone()),
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // HTTP API.
    let http_routes = triggers::routes(&resolver, &http_api_id.0, &functions)?
        .into_iter()
        .map(|(key, function)| Route { key, function })
        .collect::<Vec<_>>();
    let http_api = Arc::new(HttpApi {
        api_id: http_api_id.1.clone(),
        domain: triggers::host(&http_api_id.1, &place),
        account: place.account.clone(),
        routes: http_routes,
        timeout: INTEGRATION_TIMEOUT,
        ledger: ledger.clone(),
    });
    // WebSocket API.
    let stage = resolver
        .template()
        .of_type("AWS::ApiGatewayV2::Stage")
        .filter_map(|(id, _)| resolver.properties(id).ok())
        .find(|p| p["ApiId"] == ws_api_id.1.as_str())
        .and_then(|p| p["StageName"].as_str().map(str::to_string))
        .ok_or_else(|| SimError::Template("the WebSocket API has no stage".into()))?;
    let ws = Arc::new(
        WebSocketApi::new(
            ws_api_id.1.clone(),
            stage,
            triggers::host(&ws_api_id.1, &place),
            place.account.clone(),
            place.region.clone(),
            triggers::routes(&resolver, &ws_api_id.0, &functions)?
                .into_iter()
                .collect(),
            callers.clone(),
            config.chaos.ws_cut_ms.map(Duration::from_millis),
            config.chaos.connect_ms.map(Duration::from_millis),
            shutdown_rx.clone(),
        )
        .with_ledger(ledger.clone())
        .with_trace(trace.clone()),
    );

    // Subscription filter, EventBridge rules, TTL.
    let (subscription, group) =
        triggers::subscription(&resolver, &functions, &endpoint, &config, trace.clone())?;
    let rules = triggers::rules(&resolver, &functions, &endpoint, &config)?;
    let ttl_tables = ttl::tables(&resolver)?;
    moto::set_ingest_lag(
        &endpoint,
        &place,
        &group,
        config.chaos.ingest_lag_ms.unwrap_or(0),
    )
    .await?;

    let shared = Arc::new(Shared {
        keys: ApiKeys::new(vec![creds.api_key.clone()]),
        groups: Default::default(),
        logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
        group,
        stream_template,
        cluster: stack_name.clone(),
        runs: state.join("running-tasks"),
        place: place.clone(),
        bus: EventBus {
            rules,
            account: place.account.clone(),
            region: place.region.clone(),
            pending: state.join("pending-invocations"),
        },
        subscription: Some(subscription),
        sweeper: Sweeper {
            client: aws_sdk_dynamodb::Client::new(&sdk),
            tables: ttl_tables,
        },
        gate: gate.clone(),
        functions: functions.list.clone(),
        policies: functions.policies.clone(),
        ws: ws.clone(),
        ledger,
        trace,
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
    // With each client's address: the delivery trace names a connection by its port.
    let mut ws_shutdown = shutdown_rx.clone();
    servers.push(tokio::spawn(async move {
        let _ = axum::serve(
            ws_listener,
            ws_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = ws_shutdown.wait_for(|s| *s).await;
        })
        .await;
    }));
    for rule in shared.bus.rules.iter().filter(|r| r.schedule.is_some()) {
        servers.push(tokio::spawn(schedule_loop(
            shared.clone(),
            rule.name.clone(),
            rule.schedule.unwrap_or_default(),
            shutdown_rx.clone(),
        )));
    }
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

/// Fires a scheduled rule at its period, as EventBridge does.
async fn schedule_loop(
    shared: Arc<Shared>,
    rule: String,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
        shared.bus.fire_schedules(Some(&rule));
    }
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
