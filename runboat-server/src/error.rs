//! Errors: [`ApiError`], what an HTTP handler answers, and [`Error`], what
//! starting the server can fail with.
//!
//! Each `Display` says only what went wrong at its own level; the cause is
//! the `source()`, so [`chain`] prints every cause exactly once.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runboat_core::{CommandError, CommandOutcome, CommandResult, CommitInfo, IgnoredReason};

/// A cause kept for the log (never shown to the client).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP error answer: a status and a JSON body `{"detail": "..."}` (the
/// shape FastAPI gives the original's errors).
///
/// 4xx details say precisely what was wrong with the request; 5xx details
/// are generic, the cause is logged.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or the request is invalid: 400.
    #[error("{0}")]
    BadRequest(String),
    /// No settings rule supports the repo/branch of a deploy: 400 (the
    /// webhook answers 200 "ignored" instead: GitHub sends every push).
    #[error("repo {repo} branch {branch} is not supported by the settings")]
    Unsupported { repo: String, branch: String },
    /// Missing or wrong admin credentials: 401 with `WWW-Authenticate`.
    #[error("admin credentials required")]
    Unauthorized,
    /// A webhook signature did not verify: 401 (without a Basic challenge).
    #[error("{0}")]
    BadSignature(String),
    /// No such build (or no such log): 404.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a pin beyond `max_pinned`):
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// The request body is over the limit: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// GitHub answered an error, or could not be reached: 502.
    #[error("GitHub lookup failed: {0}")]
    BadGateway(String),
    /// The server has no GitHub client (no usable `github_token`
    /// configuration; the startup log says why), so it cannot look up
    /// heads: 503.
    #[error(
        "GitHub lookups are not available: this server has no GitHub client \
         (check its github_token setting and startup log)"
    )]
    NoGitHubClient,
    /// A client is over a rate limit or a per-client cap: 429 with
    /// `Retry-After` (seconds).
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    /// The server is at a global cap, or cannot accept the request now
    /// (not ready, the controller is busy or the cluster unreachable): 503
    /// with `Retry-After` (seconds).
    #[error("{detail}")]
    Busy { detail: String, retry_after: u64 },
    /// The controller is not available (shutting down): 503.
    #[error("service unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else: 500, detail logged.
    #[error("internal server error")]
    Internal(#[source] Cause),
}

/// `WWW-Authenticate` challenge of the admin endpoints.
pub const BASIC_CHALLENGE: &str = r#"Basic realm="runboat""#;

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::NoGitHubClient | ApiError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 503 of a read before the first full cluster listing.
    pub fn not_ready() -> Self {
        ApiError::Busy {
            detail: "not ready: waiting for the first cluster listing".to_owned(),
            retry_after: 1,
        }
    }

    /// The 404 of an unknown build.
    pub fn unknown_build(name: &str) -> Self {
        ApiError::NotFound(format!("build {name:?} not found"))
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Stopped => ApiError::Unavailable(Box::new(e)),
            CommandError::Busy => ApiError::Busy {
                detail: "the controller is busy: too many requests waiting; retry later".to_owned(),
                retry_after: 5,
            },
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// What a command was about, to word its errors.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A command on the build of this name.
    Build(&'a str),
    /// A deploy of this commit.
    Commit(&'a CommitInfo),
}

/// A command the controller took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// It acts on it.
    Done,
    /// Nothing to do, and why (each endpoint words it: 200 with
    /// `ignored: true` for an action, 200 for a deploy of a commit already
    /// deployed).
    Ignored(IgnoredReason),
}

/// The one mapping of a controller command's result to the API's answers:
/// no such build is 404, an unsupported repo/branch 400, a stopped
/// controller 503, a cluster failure 500 (logged, never shown).
pub fn command(result: CommandResult, subject: Subject<'_>) -> Result<Accepted, ApiError> {
    match result? {
        CommandOutcome::Done => Ok(Accepted::Done),
        CommandOutcome::Ignored(reason) => Ok(Accepted::Ignored(reason)),
        CommandOutcome::NotFound => Err(match subject {
            Subject::Build(name) => ApiError::unknown_build(name),
            Subject::Commit(commit) => ApiError::unknown_build(&commit.build_name()),
        }),
        CommandOutcome::Unsupported => Err(match subject {
            Subject::Commit(commit) => ApiError::Unsupported {
                repo: commit.repo().to_owned(),
                branch: commit.target_branch().to_owned(),
            },
            // Only deploys are checked against the settings.
            Subject::Build(name) => ApiError::BadRequest(format!(
                "build {name:?}: repo/branch is not supported by the settings"
            )),
        }),
        CommandOutcome::PinLimit { max_pinned } => Err(ApiError::Conflict(match subject {
            Subject::Build(name) => format!(
                "build {name:?} cannot be pinned: {max_pinned} builds are pinned already \
                 (max_pinned = {max_pinned}); unpin one first"
            ),
            Subject::Commit(_) => format!("max_pinned = {max_pinned} builds are pinned already"),
        })),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match &self {
            ApiError::Internal(source) | ApiError::Unavailable(source) => {
                let error = chain(source.as_ref());
                tracing::error!(status = status.as_u16(), %error, "request failed");
            }
            ApiError::BadGateway(detail) => {
                tracing::warn!(error = %detail, "GitHub lookup failed");
            }
            _ => {}
        }
        let body = runboat_api::Detail { detail: self.to_string() };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
        }
        if let ApiError::TooManyRequests { retry_after, .. } | ApiError::Busy { retry_after, .. } =
            self
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings could not be loaded.
    #[error("invalid settings")]
    Settings(#[source] runboat_core::Error),
    /// The settings file could not be read.
    #[error("cannot read the settings file {path}")]
    SettingsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound, or serving failed.
    #[error("cannot serve on {addr}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// No webhook secret, and unsigned webhooks were not explicitly allowed.
    #[error(
        "no webhook secret: set github_webhook_secret (RUNBOAT_GITHUB_WEBHOOK_SECRET), or \
         --allow-unsigned-webhooks (RUNBOAT_SERVER_ALLOW_UNSIGNED_WEBHOOKS) to accept unsigned \
         deliveries (insecure)"
    )]
    NoWebhookSecret,
    /// The GitHub client could not be built.
    #[error("cannot set up the GitHub client")]
    GitHub(#[source] runboat_github::ClientError),
    /// The controller loop ended by itself (the log says why).
    #[error("the controller loop ended")]
    ControllerStopped,
    /// The leader election settings are invalid (the detail names them).
    #[error("invalid leader election settings: {0}")]
    LeaderElection(String),
    /// The leader election loop ended by itself.
    #[error("the leader election ended")]
    ElectionStopped,
    /// The HTTP server task ended abnormally (it panicked or was cancelled).
    #[error("{0}")]
    ServerTask(String),
}

/// Result of this crate's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error: cause: cause of the cause…`, each level once: what logs and the
/// binary's last words show.
pub fn chain(error: &dyn std::error::Error) -> String {
    runboat_github::error_chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_appears_once_in_the_chain() {
        let io = std::io::Error::other("address already in use");
        let e = Error::Serve { addr: "127.0.0.1:8000".into(), source: io };
        assert_eq!(chain(&e), "cannot serve on 127.0.0.1:8000: address already in use");
        let settings = runboat_core::Settings::from_toml_str("max_started = -1").expect_err("bad");
        let cause = settings.to_string();
        let text = chain(&Error::Settings(settings));
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        assert!(text.starts_with("invalid settings: "), "{text}");
    }
}
