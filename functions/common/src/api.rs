//! The API function: API Gateway HTTP API (payload 2.0) events → the core HTTP API.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use runvoy_core::api::{Api, ApiError, HttpRequest};

/// Serves one request; every outcome is a JSON response (never a stack trace).
pub async fn handle(api: &Api, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let path = req.raw_path.as_deref().unwrap_or_default();
    let method = req.request_context.http.method.as_str();
    if let Some(page) = runvoy_web::serve(method, path, api.websocket_url()) {
        return page_response(page);
    }
    let body = match decode_body(&req) {
        Ok(b) => b,
        Err(e) => return respond(e.status, e.into_response().body),
    };
    let method = req.request_context.http.method.as_str().to_string();
    let request = HttpRequest {
        method,
        path: req.raw_path.clone().unwrap_or_default(),
        query: req.raw_query_string.clone().unwrap_or_default(),
        api_key: req
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        accept: req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    let r = api.handle(request).await;
    respond_as(r.status, r.body, r.content_type)
}

fn decode_body(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let Some(body) = &req.body else {
        return Ok(Vec::new());
    };
    if req.is_base64_encoded {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| ApiError::bad_request("the request body is not valid base64"))
    } else {
        Ok(body.clone().into_bytes())
    }
}

/// The log page or one of its assets, with its own headers (content type, CSP).
fn page_response(page: runvoy_web::Page) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    for (name, value) in &page.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(*name, v);
        }
    }
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(page.status);
    r.headers = headers;
    r.body = Some(Body::Text(String::from_utf8_lossy(page.body).into_owned()));
    r.is_base64_encoded = false;
    r
}

pub fn respond(status: u16, body: String) -> ApiGatewayV2httpResponse {
    respond_as(status, body, runvoy_core::api::JSON_CONTENT_TYPE)
}

fn respond_as(status: u16, body: String, content_type: &'static str) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    // A logs page is JSON or dense depending on `Accept`.
    headers.insert("vary", HeaderValue::from_static("Accept"));
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(Body::Text(body));
    r.is_base64_encoded = false;
    r
}
