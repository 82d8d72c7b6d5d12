//! Operations endpoints: `/healthz`, `/readyz`, `/metrics` and the OpenAPI
//! document of the REST API.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The OpenAPI 3 document of `/api/v1` (hand-written, kept in step with
/// [`crate::api`] by a test that checks every route is described).
pub const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 once the first cluster listing is in, 503 before.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.controller().is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first cluster listing").into_response()
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

/// `GET /api/v1/openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
