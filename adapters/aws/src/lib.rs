//! AWS adapters of runvoy's ports: the DynamoDB log store and connection store, the CloudWatch
//! Logs source and subscription payload decoding, and the API Gateway WebSocket pusher.
//! Everything here talks to AWS through the SDK with a configurable endpoint, so the same code
//! runs against moto in tests and against the real services in production.

pub mod cloudwatch;
pub mod dynamo;
pub mod identity;
pub mod pusher;
pub mod subscription;

pub use cloudwatch::{CloudWatchSource, StreamNames};
pub use dynamo::{DynamoConnections, DynamoStore, create_tables};
pub use pusher::ApiGatewayPusher;

/// Loads the SDK configuration from the environment, optionally pointed at an emulator.
pub async fn sdk_config(endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Formats an SDK error with its whole context (service code and message), in one line.
pub fn describe<E: std::error::Error>(e: &E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
}

#[cfg(feature = "testkit")]
pub mod testkit;
