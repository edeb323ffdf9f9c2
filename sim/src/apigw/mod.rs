//! API Gateway, emulated from the template: the HTTP API (payload format 2.0) and the WebSocket
//! API with its `@connections` management endpoint.

pub mod http;
pub mod websocket;
