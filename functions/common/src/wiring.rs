//! Builds the services of a deployed function from its environment and the AWS SDK.

use std::sync::Arc;

use runvoy_aws::{ApiGatewayPusher, CloudWatchSource, DynamoConnections, DynamoStore, StreamNames};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::services::{EngineConfig, Ports, Services};
use runvoy_runtime::SystemClock;
use serde::Deserialize;

use crate::HandlerError;
use crate::emf::EmfMetrics;
use crate::settings::Settings;

/// Lifetime of WebSocket tokens handed out in `websocket_url`.
pub const TOKEN_TTL_SECS: i64 = 3600;

/// What every function has after cold start.
pub struct Deployment {
    pub settings: Settings,
    pub services: Services,
    pub metrics: Arc<EmfMetrics>,
    pub names: StreamNames,
    pub sdk: aws_config::SdkConfig,
}

/// The secret the stack creates: `{"api_keys":["…"],"token_secret":"…"}`.
#[derive(Debug, Deserialize)]
pub struct Secret {
    pub api_keys: Vec<String>,
    pub token_secret: String,
}

impl Deployment {
    /// Reads the environment and builds every adapter (the endpoint follows `AWS_ENDPOINT_URL`
    /// when set, so the same binary runs against an emulator).
    pub async fn from_env(function: &str) -> Result<Deployment, HandlerError> {
        let settings = Settings::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Deployment::new(function, settings, sdk)
    }

    pub fn new(
        function: &str,
        settings: Settings,
        sdk: aws_config::SdkConfig,
    ) -> Result<Deployment, HandlerError> {
        let names = StreamNames::new(&settings.stream_template).map_err(HandlerError::Config)?;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        let store = Arc::new(DynamoStore::new(
            dynamo.clone(),
            settings.logs_table.clone(),
        ));
        let endpoint = settings.websocket_endpoint.clone().ok_or_else(|| {
            HandlerError::Config("environment variable RUNVOY_WEBSOCKET_ENDPOINT is not set".into())
        })?;
        let metrics = Arc::new(EmfMetrics::new(function));
        let ports = Ports {
            store,
            connections: Arc::new(DynamoConnections::new(
                dynamo,
                settings.connections_table.clone(),
            )),
            source: Arc::new(CloudWatchSource::new(
                logs,
                settings.log_group.clone(),
                names.clone(),
            )),
            pusher: Arc::new(ApiGatewayPusher::for_endpoint(&sdk, &endpoint)),
            clock: Arc::new(SystemClock),
            metrics: metrics.clone(),
        };
        let config = EngineConfig {
            retention_secs: settings.retention_days * 86_400,
            ..EngineConfig::default()
        };
        Ok(Deployment {
            services: Services::new(ports, config),
            settings,
            metrics,
            names,
            sdk,
        })
    }

    /// Reads the API keys and the token secret from Secrets Manager.
    pub async fn credentials(&self) -> Result<(ApiKeys, TokenSigner), HandlerError> {
        let arn = self.settings.secret_arn.as_deref().ok_or_else(|| {
            HandlerError::Config("environment variable RUNVOY_SECRET_ARN is not set".into())
        })?;
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let out = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| HandlerError::Config(format!("cannot read secret {arn}: {e}")))?;
        let text = out
            .secret_string()
            .ok_or_else(|| HandlerError::Config(format!("secret {arn} has no string value")))?;
        parse_secret(text)
    }
}

pub fn parse_secret(text: &str) -> Result<(ApiKeys, TokenSigner), HandlerError> {
    let s: Secret = serde_json::from_str(text).map_err(|e| {
        HandlerError::Config(format!(
            "the API secret must be JSON like {{\"api_keys\":[\"…\"],\"token_secret\":\"…\"}}: {e}"
        ))
    })?;
    if s.api_keys.iter().all(|k| k.len() < 16) || s.token_secret.len() < 16 {
        return Err(HandlerError::Config(
            "the API secret needs at least one API key and a token secret of 16 or more characters"
                .into(),
        ));
    }
    Ok((
        ApiKeys::new(s.api_keys),
        TokenSigner::new(s.token_secret.into_bytes(), TOKEN_TTL_SECS),
    ))
}
