//! The forwarder Lambda: CloudWatch Logs subscription → exactly-once append → fan-out.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use runvoy_lambda::forwarder;
use runvoy_lambda::wiring::Deployment;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log lines go to stderr at Lambda's log level and format (`AWS_LAMBDA_LOG_LEVEL`,
    // `AWS_LAMBDA_LOG_FORMAT`); stdout carries only the EMF metric lines.
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let d = Deployment::from_env(runvoy_lambda::Function::Forwarder).await?;
    let d = &d;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let result = forwarder::handle(&d.services, &d.names, &d.metrics, &event.payload).await;
        d.metrics.flush(runvoy_lambda::emf::now_ms());
        // An error fails the invocation: AWS retries it, then sends it to the on-failure queue.
        result
            .map(|f| serde_json::json!({"appended": f.appended, "duplicates": f.duplicates}))
            .map_err(Error::from)
    }))
    .await
}
