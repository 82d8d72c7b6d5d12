//! Operations endpoints: `/healthz`, `/readyz`, `/metrics` and the OpenAPI
//! document of the REST API ([`crate::openapi`]).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 while the controller loop runs, has had its first
/// cluster listing and both watches are current; 503 saying which is
/// missing otherwise.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let controller = state.controller();
    if !controller.is_running() {
        (StatusCode::SERVICE_UNAVAILABLE, "the controller loop is not running").into_response()
    } else if !controller.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first cluster listing").into_response()
    } else if !controller.watches_current() {
        (StatusCode::SERVICE_UNAVAILABLE, "a cluster watch is being resubscribed").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(&state),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
/// `GET /api/v1/openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json()).into_response()
}
