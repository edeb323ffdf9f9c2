//! The core's framework-free [`HttpResponse`] as an axum response: what the routes answer, and
//! what the guard in front of them refuses with.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use runvoy_core::api::HttpResponse;

pub(crate) fn respond(r: HttpResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A logs page is JSON or dense depending on `Accept`.
    let headers = [
        (header::CONTENT_TYPE, r.content_type),
        (header::VARY, "Accept"),
    ];
    (status, headers, r.body).into_response()
}
