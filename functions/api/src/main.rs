//! The API Lambda: the HTTP routes of spec §4.1 behind `X-API-Key`.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use runvoy_lambda::api;
use runvoy_lambda::wiring::{Deployment, KeyRefresh, TokenRefresh};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log lines go to stderr at Lambda's log level and format (`AWS_LAMBDA_LOG_LEVEL`,
    // `AWS_LAMBDA_LOG_FORMAT`); stdout carries only the EMF metric lines.
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let d = Deployment::from_env(runvoy_lambda::Function::Api).await?;
    let (keys, signer) = d.credentials().await?;
    let config = runvoy_core_api_config(&d);
    let refresh = KeyRefresh::new(keys.clone());
    // The API signs tokens: with the generation the WebSocket function checks.
    let tokens = TokenRefresh::new(signer.clone());
    let service = d.services.api(keys, signer, config);
    let (service, d, refresh, tokens) = (&service, &d, &refresh, &tokens);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            let presented = event.payload.headers.get("x-api-key");
            refresh
                .before(d, presented.and_then(|v| v.to_str().ok()))
                .await;
            tokens.before(d).await;
            let response = api::handle(service, event.payload).await;
            d.metrics.flush(runvoy_lambda::emf::now_ms());
            Ok::<_, Error>(response)
        },
    ))
    .await
}

fn runvoy_core_api_config(d: &Deployment) -> runvoy_lambda::ApiConfig {
    runvoy_lambda::ApiConfig {
        websocket_url: d.settings.websocket_url.clone(),
        ..runvoy_lambda::ApiConfig::default()
    }
}
