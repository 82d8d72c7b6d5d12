//! Errors of this crate: one enum per concern, so that callers can map each
//! to the right answer (a bad signature is a 401, a malformed payload a 400,
//! a GitHub failure is logged), and [`Error`] gathering them.

use std::time::Duration;

/// Why a webhook signature was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header: {reason}")]
    Malformed { reason: &'static str },
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Why a webhook body could not be turned into an action.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("webhook body is {size} bytes, over the {limit} bytes limit")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "{event} webhook body is form-encoded; configure the webhook with content type application/json"
    )]
    FormEncoded { event: String },
    #[error("{event} webhook body is truncated JSON: {source}")]
    Truncated {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{event} webhook body is not valid JSON: {source}")]
    Syntax {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON, but a field is missing or has the wrong type.
    #[error("{event} webhook body does not have the expected fields: {source}")]
    Shape {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    /// A field is present with the right type but an impossible value.
    #[error("{event} webhook field `{field}` is invalid: {reason}")]
    Value { event: String, field: &'static str, reason: String },
}

/// What went wrong talking to the GitHub REST API.
///
/// Never contains the token: only methods, paths, statuses and excerpts of
/// response bodies.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid GitHub client configuration: {reason}")]
    Config { reason: String },
    #[error("cannot load the system's trusted root certificates for HTTPS: {source}")]
    RootCertificates {
        #[source]
        source: std::io::Error,
    },
    #[error("invalid repository name {repo:?}: expected owner/name")]
    InvalidRepo { repo: String },
    #[error("repo or branch not found on GitHub: {what}")]
    NotFound { what: String },
    #[error("{method} {path}: no response within {after:?}")]
    Timeout { method: http::Method, path: String, after: Duration },
    #[error("{method} {path}: {source}")]
    Transport {
        method: http::Method,
        path: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {path}: error reading the response body: {source}")]
    Body {
        method: http::Method,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{method} {path}: rate limited by GitHub{}", wait_note(*.wait))]
    RateLimited { method: http::Method, path: String, wait: Option<Duration> },
    #[error("{method} {path}: GitHub answered {status}: {body}")]
    Status { method: http::Method, path: String, status: http::StatusCode, body: String },
    #[error("{method} {path}: unexpected response body: {source}")]
    Decode {
        method: http::Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn wait_note(wait: Option<Duration>) -> String {
    match wait {
        Some(wait) => format!(" (would need to wait {}s, over the configured cap)", wait.as_secs()),
        None => String::new(),
    }
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
