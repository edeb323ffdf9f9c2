//! The WebSocket function: `$connect` checks the token and stores the connection with its
//! cursor, `$disconnect` forgets it, `$default` serves `resume` and `ping`.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use runvoy_core::api::ApiError;
use runvoy_core::ws::WsService;

use crate::HandlerError;

pub async fn handle(
    ws: &WsService,
    req: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let ctx = &req.request_context;
    let Some(connection_id) = ctx.connection_id.clone() else {
        return Ok(response(
            400,
            r#"{"error":"the event has no connection id","code":"bad_request"}"#.into(),
        ));
    };
    match ctx.route_key.as_deref().unwrap_or("$default") {
        "$connect" => {
            let query = encode_query(&req);
            match ws.connect(&connection_id, &query).await {
                Ok(_) => Ok(response(200, String::new())),
                // A refused $connect: API Gateway closes the handshake with this status.
                Err(e) => Ok(error(e)),
            }
        }
        "$disconnect" => {
            ws.disconnect(&connection_id).await?;
            Ok(response(200, String::new()))
        }
        _ => {
            ws.message(&connection_id, req.body.as_deref().unwrap_or_default())
                .await?;
            Ok(response(200, String::new()))
        }
    }
}

/// Rebuilds a query string from API Gateway's decoded parameters.
fn encode_query(req: &ApiGatewayWebsocketProxyRequest) -> String {
    let mut pairs: Vec<String> = req
        .query_string_parameters
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    pairs.sort();
    pairs.join("&")
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error(e: ApiError) -> ApiGatewayProxyResponse {
    let status = e.status;
    response(status, e.into_response().body)
}

fn response(status: u16, body: String) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = i64::from(status);
    if !body.is_empty() {
        r.body = Some(Body::Text(body));
    }
    r
}
