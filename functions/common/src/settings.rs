//! Settings every function reads from its environment (set by the CloudFormation template).

use crate::HandlerError;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `RUNVOY_LOGS_TABLE`: the `{project}-execution-logs` table.
    pub logs_table: String,
    /// `RUNVOY_CONNECTIONS_TABLE`.
    pub connections_table: String,
    /// `RUNVOY_LOG_GROUP`: the runner log group (`/aws/ecs/{project}/runner`).
    pub log_group: String,
    /// `RUNVOY_STREAM_TEMPLATE`, default `task/runner/{execution_id}`.
    pub stream_template: String,
    /// `RUNVOY_SECRET_ARN`: the secret holding the API keys, `{"api_keys":[…]}` (newest last).
    pub secret_arn: Option<String>,
    /// `RUNVOY_TOKEN_SECRET_ARN`: the secret signing WebSocket tokens, `{"token_secret":"…"}`.
    pub token_secret_arn: Option<String>,
    /// `RUNVOY_WEBSOCKET_URL`: `wss://…/{stage}`, handed to clients.
    pub websocket_url: Option<String>,
    /// `RUNVOY_WEBSOCKET_ENDPOINT`: the management endpoint (`https://…/{stage}`) for pushes.
    pub websocket_endpoint: Option<String>,
    /// `RUNVOY_RETENTION_DAYS`, default 7.
    pub retention_days: i64,
    /// `RUNVOY_RUNNER_CONTAINER`: the container whose exit code is the execution's, default `runner`.
    pub runner_container: String,
    /// `RUNVOY_COMPLETION_GRACE_SECONDS`, default 5: how long after a stop completion waits
    /// before its final re-read (CloudWatch's ingestion delay).
    pub completion_grace_secs: i64,
    /// `RUNVOY_COMPLETION_QUEUE_URL`, `RUNVOY_FORWARDER_QUEUE_URL`: the on-failure queues the
    /// janitor re-drives (the completion function only).
    pub completion_queue_url: Option<String>,
    pub forwarder_queue_url: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> Result<String, HandlerError> {
    var(name).ok_or_else(|| HandlerError::config(format!("environment variable {name} is not set")))
}

impl Settings {
    pub fn from_env() -> Result<Settings, HandlerError> {
        let retention_days = match var("RUNVOY_RETENTION_DAYS") {
            None => 7,
            Some(v) => v.parse().ok().filter(|d: &i64| *d > 0).ok_or_else(|| {
                HandlerError::config(format!(
                    "RUNVOY_RETENTION_DAYS must be a positive number of days, got {v}"
                ))
            })?,
        };
        let completion_grace_secs = match var("RUNVOY_COMPLETION_GRACE_SECONDS") {
            None => 5,
            Some(v) => v.parse().ok().filter(|s: &i64| (0..=300).contains(s)).ok_or_else(|| {
                HandlerError::config(format!(
                    "RUNVOY_COMPLETION_GRACE_SECONDS must be a number of seconds from 0 to 300, got {v}"
                ))
            })?,
        };
        Ok(Settings {
            completion_grace_secs,
            completion_queue_url: var("RUNVOY_COMPLETION_QUEUE_URL"),
            forwarder_queue_url: var("RUNVOY_FORWARDER_QUEUE_URL"),
            logs_table: required("RUNVOY_LOGS_TABLE")?,
            connections_table: required("RUNVOY_CONNECTIONS_TABLE")?,
            log_group: required("RUNVOY_LOG_GROUP")?,
            stream_template: var("RUNVOY_STREAM_TEMPLATE")
                .unwrap_or_else(|| "task/runner/{execution_id}".into()),
            secret_arn: var("RUNVOY_SECRET_ARN"),
            token_secret_arn: var("RUNVOY_TOKEN_SECRET_ARN"),
            websocket_url: var("RUNVOY_WEBSOCKET_URL"),
            websocket_endpoint: var("RUNVOY_WEBSOCKET_ENDPOINT"),
            retention_days,
            runner_container: var("RUNVOY_RUNNER_CONTAINER").unwrap_or_else(|| "runner".into()),
        })
    }
}
