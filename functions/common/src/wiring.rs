//! Builds the services of a deployed function from its environment and the AWS SDK.

use std::sync::Arc;

use runvoy_aws::{ApiGatewayPusher, CloudWatchSource, DynamoConnections, DynamoStore, StreamNames};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::function::Function;
use runvoy_core::services::{EngineConfig, Ports, Services};
use runvoy_runtime::SystemClock;
use serde::Deserialize;
use tracing::{error, warn};

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

/// The API key secret: `{"api_keys":["…"]}`, newest last.
#[derive(Debug, Deserialize)]
pub struct KeySecret {
    pub api_keys: Vec<String>,
}

/// The token secret: `{"token_secret":"…"}`.
#[derive(Debug, Deserialize)]
pub struct TokenSecret {
    pub token_secret: String,
    /// Raised by `deploy rotate-key --retire-old` and `--token-secret`: tokens minted under an
    /// older generation are refused.
    #[serde(default)]
    pub generation: u64,
}

impl Deployment {
    /// Reads the environment and builds every adapter (the endpoint follows `AWS_ENDPOINT_URL`
    /// when set, so the same binary runs against an emulator).
    pub async fn from_env(function: Function) -> Result<Deployment, HandlerError> {
        let settings = Settings::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Deployment::new(function, settings, sdk)
    }

    pub fn new(
        function: Function,
        settings: Settings,
        sdk: aws_config::SdkConfig,
    ) -> Result<Deployment, HandlerError> {
        let names = StreamNames::new(&settings.stream_template).map_err(HandlerError::config)?;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        // The connections' writes come in bursts (one per follower per batch, 16 at a time):
        // their throttled retries draw on a token bucket of their own, so a burst cannot
        // leave the log commits without retries.
        let connections_client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .retry_partition(aws_sdk_dynamodb::config::retry::RetryPartition::new(
                    "runvoy-connections",
                ))
                .build(),
        );
        let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        let store = Arc::new(DynamoStore::new(dynamo, settings.logs_table.clone()));
        let endpoint = settings.websocket_endpoint.clone().ok_or_else(|| {
            HandlerError::config("environment variable RUNVOY_WEBSOCKET_ENDPOINT is not set")
        })?;
        let metrics = Arc::new(EmfMetrics::new(function.name()));
        let ports = Ports {
            store,
            connections: Arc::new(DynamoConnections::new(
                connections_client,
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
            completion_grace_ms: settings.completion_grace_secs * 1_000,
            // The API answers within API Gateway's 29 s (its reads reconcile for 5 s at most);
            // the forwarder and completion have 60 s and 900 s.
            throttle_patience_ms: if function == Function::Api {
                15_000
            } else {
                40_000
            },
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

    /// Reads the API keys and the token secret from Secrets Manager (the API function).
    pub async fn credentials(&self) -> Result<(ApiKeys, TokenSigner), HandlerError> {
        let keys = parse_api_keys(&self.api_key_text().await?)?;
        Ok((ApiKeys::new(keys), self.token_signer().await?))
    }

    /// Reads the token secret only (the WebSocket function, which may not read the keys).
    pub async fn token_signer(&self) -> Result<TokenSigner, HandlerError> {
        let text = self
            .secret_text(
                self.settings.token_secret_arn.as_deref(),
                "RUNVOY_TOKEN_SECRET_ARN",
            )
            .await?;
        parse_token_secret(&text)
    }

    async fn api_key_text(&self) -> Result<String, HandlerError> {
        self.secret_text(self.settings.secret_arn.as_deref(), "RUNVOY_SECRET_ARN")
            .await
    }

    async fn secret_text(&self, arn: Option<&str>, var: &str) -> Result<String, HandlerError> {
        let arn = arn.ok_or_else(|| {
            HandlerError::config(format!("environment variable {var} is not set"))
        })?;
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let out = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| HandlerError::Config {
                message: format!("cannot read secret {arn}: {}", runvoy_aws::describe(&e)),
                source: Some(Box::new(e)),
            })?;
        out.secret_string()
            .map(str::to_string)
            .ok_or_else(|| HandlerError::config(format!("secret {arn} has no string value")))
    }
}

/// Keeps a warm function's API keys current after `deploy rotate-key`: the secret is read
/// again when a request presents a key the function does not know (at most once per
/// [`KeyRefresh::MISS_INTERVAL`], so wrong keys cannot turn into a flood of reads) and at
/// least once per [`KeyRefresh::MAX_AGE`] (so a retired key stops working within it).
pub struct KeyRefresh {
    keys: ApiKeys,
    last: std::sync::Mutex<std::time::Instant>,
    /// When the last read that succeeded was.
    read_ok: std::sync::Mutex<std::time::Instant>,
}

impl KeyRefresh {
    pub const MISS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);
    /// Keys that could not be read again for this long are no longer trusted: a retired key
    /// must not stay accepted because the secret became unreadable. Every key is refused until
    /// a read succeeds.
    pub const FAIL_CLOSED_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

    /// `keys` were read just now (at cold start).
    pub fn new(keys: ApiKeys) -> KeyRefresh {
        KeyRefresh {
            keys,
            last: std::sync::Mutex::new(std::time::Instant::now()),
            read_ok: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// Whether keys read `age` ago must be read again before answering a request whose key
    /// is `known` (or not).
    pub fn due(age: std::time::Duration, known: bool) -> bool {
        age >= Self::MAX_AGE || (!known && age >= Self::MISS_INTERVAL)
    }

    /// Called before each request with the key it presents.
    pub async fn before(&self, d: &Deployment, presented: Option<&str>) {
        let known = self.keys.check(presented).is_ok();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if !Self::due(last.elapsed(), known) {
                return;
            }
            // Counted as read even if it fails: a failing secret is not asked again at once.
            *last = std::time::Instant::now();
        }
        match d.api_key_text().await.and_then(|t| parse_api_keys(&t)) {
            Ok(keys) => {
                self.keys.replace(keys);
                *self.read_ok.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
            }
            Err(e) => self.read_failed(&e.to_string()),
        }
    }

    /// The keys held stay in force for a while; past [`KeyRefresh::FAIL_CLOSED_AFTER`] without
    /// a successful read, none is.
    fn read_failed(&self, why: &str) {
        let since = self
            .read_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if since >= Self::FAIL_CLOSED_AFTER {
            self.keys.replace(Vec::new());
            error!(
                unreadable_for_s = since.as_secs(),
                error = ?why,
                "refusing every API key: the key secret could not be read for too long"
            );
        } else {
            warn!(error = ?why, "keeping the API keys read before");
        }
    }
}

/// The API keys of the key secret; at least one of 16 or more characters.
pub fn parse_api_keys(text: &str) -> Result<Vec<String>, HandlerError> {
    let s: KeySecret = serde_json::from_str(text).map_err(|e| HandlerError::Config {
        message: format!("the API key secret must be JSON like {{\"api_keys\":[\"…\"]}}: {e}"),
        source: Some(Box::new(e)),
    })?;
    if s.api_keys.is_empty() {
        return Err(HandlerError::config("the API key secret holds no key"));
    }
    if let Some(i) = s.api_keys.iter().position(|k| k.len() < 16) {
        return Err(HandlerError::config(format!(
            "key {} of the API key secret has fewer than 16 characters; every key must have 16 or more (deploy rotate-key makes them)",
            i + 1
        )));
    }
    Ok(s.api_keys)
}

/// The signer of the token secret (16 or more characters).
pub fn parse_token_secret(text: &str) -> Result<TokenSigner, HandlerError> {
    let s: TokenSecret = serde_json::from_str(text).map_err(|e| HandlerError::Config {
        message: format!("the token secret must be JSON like {{\"token_secret\":\"…\"}}: {e}"),
        source: Some(Box::new(e)),
    })?;
    if s.token_secret.len() < 16 {
        return Err(HandlerError::config(
            "the token secret must have 16 or more characters",
        ));
    }
    Ok(TokenSigner::with_generation(
        s.token_secret.into_bytes(),
        s.generation,
        TOKEN_TTL_SECS,
    ))
}

/// Keeps a warm function's token secret current: read again at least every
/// [`TokenRefresh::MAX_AGE`], so a raised generation (a retired key) or a new secret reaches
/// every function within it. A failing read keeps what was read before.
pub struct TokenRefresh {
    signer: TokenSigner,
    last: std::sync::Mutex<std::time::Instant>,
}

impl TokenRefresh {
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn new(signer: TokenSigner) -> TokenRefresh {
        TokenRefresh {
            signer,
            last: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    pub async fn before(&self, d: &Deployment) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < Self::MAX_AGE {
                return;
            }
            *last = std::time::Instant::now();
        }
        match d.token_signer().await {
            Ok(fresh) => self.signer.adopt(&fresh),
            Err(e) => warn!(error = ?e.to_string(), "keeping the token secret read before"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_are_read_again_on_an_unknown_key_and_when_old() {
        let fresh = Duration::from_secs(1);
        assert!(!KeyRefresh::due(fresh, true));
        assert!(
            !KeyRefresh::due(fresh, false),
            "wrong keys cannot flood the secret"
        );
        assert!(KeyRefresh::due(KeyRefresh::MISS_INTERVAL, false));
        assert!(!KeyRefresh::due(KeyRefresh::MISS_INTERVAL, true));
        assert!(
            KeyRefresh::due(KeyRefresh::MAX_AGE, true),
            "a retired key expires"
        );
        let two = r#"{"api_keys":["old-key-0123456789","new-key-0123456789"]}"#;
        assert_eq!(parse_api_keys(two).unwrap().len(), 2);
        assert!(parse_api_keys(r#"{"api_keys":[]}"#).is_err());
        assert!(
            parse_api_keys(r#"{"api_keys":["short","long-enough-0123456789"]}"#).is_err(),
            "one long key does not make a short one acceptable"
        );
    }

    #[test]
    fn keys_that_cannot_be_read_again_are_refused_after_a_while() {
        let keys = ApiKeys::new(vec!["a-key-of-twenty-chars".into()]);
        let r = KeyRefresh::new(keys.clone());
        r.read_failed("throttled");
        assert!(
            keys.check(Some("a-key-of-twenty-chars")).is_ok(),
            "kept for a while"
        );
        *r.read_ok.lock().unwrap() -= KeyRefresh::FAIL_CLOSED_AFTER;
        r.read_failed("throttled");
        assert!(
            keys.check(Some("a-key-of-twenty-chars")).is_err(),
            "then refused: a retired key does not live on"
        );
    }
}
