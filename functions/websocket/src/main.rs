//! The WebSocket Lambda: `$connect`, `$disconnect` and `$default` (resume, ping).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use runvoy_lambda::websocket;
use runvoy_lambda::wiring::{Deployment, TokenRefresh};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log lines go to stderr at Lambda's log level and format (`AWS_LAMBDA_LOG_LEVEL`,
    // `AWS_LAMBDA_LOG_FORMAT`); stdout carries only the EMF metric lines.
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let d = Deployment::from_env(runvoy_lambda::Function::Websocket).await?;
    // Only the token secret: this function cannot read the API keys.
    let signer = d.token_signer().await?;
    let refresh = TokenRefresh::new(signer.clone());
    let ws = d.services.ws(signer);
    let (ws, d, refresh) = (&ws, &d, &refresh);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            refresh.before(d).await;
            let result = websocket::handle(ws, event.payload).await;
            d.metrics.flush(runvoy_lambda::emf::now_ms());
            result.map_err(Error::from)
        },
    ))
    .await
}
