//! Errors of this crate: one enum per concern, so that callers can map each
//! to the right answer (a bad signature is a 401, a malformed payload a 400,
//! a GitHub failure is logged), and [`Error`] gathering them.
//!
//! Each `Display` says only what went wrong at its own level; the cause is
//! the `source()`, so [`error_chain`] (or anyhow's `{:#}`) prints every
//! cause exactly once.

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
    #[error("{event} webhook body is truncated JSON")]
    Truncated {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{event} webhook body is not valid JSON")]
    Syntax {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON, but a field is missing or has the wrong type.
    #[error("{event} webhook body does not have the expected fields")]
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
    #[error("cannot load the system's trusted root certificates for HTTPS")]
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
    #[error("{method} {path}: request failed")]
    Transport {
        method: http::Method,
        path: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {path}: error reading the response body")]
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
    #[error("{method} {path}: unexpected response body")]
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

/// `error: cause: cause of the cause…`, each level once: what logs and
/// HTTP details show.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_appears_once_in_the_chain() {
        let source = serde_json::from_str::<serde_json::Value>("{\"a\": ").expect_err("truncated");
        let cause = source.to_string();
        let e = Error::from(PayloadError::Truncated { event: "push".into(), source });
        let text = error_chain(&e);
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        assert!(text.starts_with("push webhook body is truncated JSON: "), "{text}");
        let io = std::io::Error::other("no certificates here");
        let text = error_chain(&ClientError::RootCertificates { source: io });
        assert_eq!(text.matches("no certificates here").count(), 1, "{text}");
    }
}
