//! The WebSocket pusher over the API Gateway Management API (`PostToConnection`). The endpoint
//! is configurable: real AWS needs `https://{api}.execute-api.{region}.amazonaws.com/{stage}`,
//! moto serves `/@connections/{id}` without a stage.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use runvoy_core::ports::{PushError, Pusher};

use crate::describe;

#[derive(Clone)]
pub struct ApiGatewayPusher {
    client: Client,
}

impl ApiGatewayPusher {
    pub fn new(client: Client) -> ApiGatewayPusher {
        ApiGatewayPusher { client }
    }

    /// A client for the management endpoint of one WebSocket API stage. It never retries: the
    /// range a push carries is claimed before it is sent, so a retry a second later could land
    /// after the next range another forwarder pushed meanwhile (a jump for the client), and a
    /// retried 5xx could deliver one message twice. A failed push is a hole the client fills
    /// over HTTP (spec §6.4).
    pub fn for_endpoint(sdk: &aws_config::SdkConfig, endpoint: &str) -> ApiGatewayPusher {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::disabled())
            .build();
        ApiGatewayPusher::new(Client::from_conf(conf))
    }
}

#[async_trait]
impl Pusher for ApiGatewayPusher {
    async fn push(&self, connection_id: &str, text: &str) -> Result<(), PushError> {
        let r = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(text.as_bytes()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_gone_exception()) => {
                Err(PushError::Gone)
            }
            Err(e) => Err(PushError::Failed(describe(&e))),
        }
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        let r = self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_gone_exception()) => Ok(()),
            Err(e) => Err(PushError::Failed(describe(&e))),
        }
    }
}
