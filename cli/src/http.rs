//! The HTTP side of the client: pages of logs, status, completion and local runs.

use std::time::Duration;

use runvoy_core::wire::{ErrorBody, LogsResponse, StatusResponse};
use serde::de::DeserializeOwned;

use crate::error::CliError;
use crate::settings::Settings;

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: Settings,
}

impl ApiClient {
    pub fn new(settings: Settings) -> Result<ApiClient, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("runvoy/", env!("CARGO_PKG_VERSION")))
            // The key goes only where --api-url points: a redirect is reported, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(ApiClient { http, settings })
    }

    pub async fn logs(&self, id: &str, since: u64, limit: usize) -> Result<LogsResponse, CliError> {
        let url = format!(
            "{}/api/v1/executions/{id}/logs?since_index={since}&limit={limit}",
            self.settings.api_url
        );
        self.send(id, self.http.get(url)).await
    }

    pub async fn status(&self, id: &str) -> Result<StatusResponse, CliError> {
        let url = format!("{}/api/v1/executions/{id}", self.settings.api_url);
        self.send(id, self.http.get(url)).await
    }

    /// Starts a command on the local stack; returns the execution id.
    pub async fn run(&self, command: &[String]) -> Result<String, CliError> {
        let url = format!("{}/local/v1/executions", self.settings.api_url);
        let v: serde_json::Value = self
            .send(
                "",
                self.http
                    .post(url)
                    .json(&serde_json::json!({ "command": command })),
            )
            .await?;
        v["execution_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CliError::Protocol("no execution_id in the response".into()))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        id: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let resp = req
            .header("X-API-Key", &self.settings.api_key)
            .send()
            .await
            .map_err(|e| CliError::Unreachable(self.settings.api_url.clone(), root_cause(&e)))?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("?")
                .to_string();
            return Err(CliError::Redirected(status, to));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| CliError::Unreachable(self.settings.api_url.clone(), root_cause(&e)))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| CliError::Protocol(e.to_string()));
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            401 => CliError::Unauthorized,
            403 => CliError::Forbidden(message),
            404 if !id.is_empty() && message.contains("was not found") => {
                CliError::NotFound(id.to_string())
            }
            _ => CliError::Server(status, message),
        })
    }
}

/// The innermost error's text ("Connection refused (os error 111)"), not the URL again.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
