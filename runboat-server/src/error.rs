//! Errors: [`ApiError`], what an HTTP handler answers, and [`Error`], what
//! starting the server can fail with.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::backend::BackendError;

/// An HTTP error answer: a status and a JSON body `{"detail": "..."}` (the
/// shape FastAPI gives the original's errors).
///
/// 4xx details say precisely what was wrong with the request; 5xx details
/// are generic, the cause is logged.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or the request is invalid, or the repo/branch is
    /// not supported: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong admin credentials: 401 with `WWW-Authenticate`.
    #[error("admin credentials required")]
    Unauthorized,
    /// A webhook signature did not verify: 401 (without a Basic challenge).
    #[error("{0}")]
    BadSignature(String),
    /// No such build (or no such log): 404.
    #[error("{0}")]
    NotFound(String),
    /// The action does not apply to the build in its current state: 409.
    #[error("{0}")]
    Conflict(String),
    /// The request body is over the limit: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// GitHub could not be asked (or answered an error): 502.
    #[error("GitHub lookup failed: {0}")]
    BadGateway(String),
    /// The controller is not available (starting or shutting down): 503.
    #[error("service unavailable")]
    Unavailable(#[source] BackendError),
    /// Anything else: 500, detail logged.
    #[error("internal server error")]
    Internal(#[source] BackendError),
}

/// `WWW-Authenticate` challenge of the admin endpoints.
pub const BASIC_CHALLENGE: &str = r#"Basic realm="runboat""#;

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 404 of an unknown build.
    pub fn unknown_build(name: &str) -> Self {
        ApiError::NotFound(format!("build {name:?} not found"))
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        if e.unavailable { ApiError::Unavailable(e) } else { ApiError::Internal(e) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match &self {
            ApiError::Internal(source) | ApiError::Unavailable(source) => {
                tracing::error!(status = status.as_u16(), error = %source, "request failed");
            }
            ApiError::BadGateway(detail) => {
                tracing::warn!(error = %detail, "GitHub lookup failed");
            }
            _ => {}
        }
        let mut response = (status, Json(json!({ "detail": self.to_string() }))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
        }
        response
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings could not be loaded.
    #[error("invalid settings: {0}")]
    Settings(#[source] runboat_core::Error),
    /// The settings file could not be read.
    #[error("cannot read the settings file {path}: {source}")]
    SettingsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound, or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The GitHub client could not be built.
    #[error("cannot set up the GitHub client: {0}")]
    GitHub(#[source] runboat_github::ClientError),
    /// The HTTP server task ended abnormally (it panicked or was cancelled).
    #[error("{0}")]
    ServerTask(String),
}

/// Result of this crate's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
