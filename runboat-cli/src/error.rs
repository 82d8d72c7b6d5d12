//! Errors, and the exit code each one maps to (documented in `runboat --help`).
//!
//! Each `Display` says only what went wrong at its own level; the cause is
//! the `source()`, and [`chain`] prints every level once.

use std::path::PathBuf;

/// Exit codes of `runboat`, one per way a command can end.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// Anything not covered below (a local I/O error).
    pub const OTHER: u8 = 1;
    /// Bad usage: invalid arguments, a bad config file, a parameter the
    /// server refused (HTTP 400), a confirmation that could not be asked.
    pub const USAGE: u8 = 2;
    /// No such build (HTTP 404).
    pub const NOT_FOUND: u8 = 3;
    /// Not allowed: missing or wrong admin credentials (401, 403), or the
    /// action does not apply to the build's current state (409).
    pub const NOT_ALLOWED: u8 = 4;
    /// The server could not be reached (connection refused, timeout, DNS).
    pub const UNREACHABLE: u8 = 5;
    /// The server failed (HTTP 5xx) or answered something unexpected.
    pub const SERVER_ERROR: u8 = 6;
    /// `--wait`: the build failed (initialization failed, or it stopped
    /// before it was ready).
    pub const BUILD_FAILED: u8 = 7;
    /// `--wait`: the build was undeployed while waiting.
    pub const BUILD_GONE: u8 = 8;
    /// `--wait --timeout`: the build did not get there in time.
    pub const TIMED_OUT: u8 = 9;
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// What a command can fail with. No variant ever holds the password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage found after argument parsing.
    #[error("{0}")]
    Usage(String),
    /// The config file could not be read.
    #[error("cannot read the config file {}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config file {}: {reason}", path.display())]
    ConfigInvalid { path: PathBuf, reason: String },
    /// The server could not be reached.
    #[error("cannot reach the runboat server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered an HTTP error; `detail` is its message.
    #[error("{detail} (HTTP {status})")]
    Http { status: u16, detail: String },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    InvalidAnswer(String),
    /// `--wait`: the build failed.
    #[error("{0}")]
    BuildFailed(String),
    /// `--wait`: the build was undeployed.
    #[error("{0}")]
    BuildGone(String),
    /// `--wait --timeout`: time is up.
    #[error("{0}")]
    TimedOut(String),
    /// A local I/O error.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Errors already printed (one per build of a multi-build command);
    /// holds the exit code of the first.
    #[error("failed (see above)")]
    Reported(u8),
    /// Interrupted by Ctrl-C while waiting.
    #[error("interrupted")]
    Interrupted,
    /// Standard output was closed (e.g. `runboat builds | head`): stop
    /// quietly.
    #[error("standard output closed")]
    BrokenPipe,
}

impl Error {
    /// The process exit code of this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::ConfigRead { .. } | Error::ConfigInvalid { .. } => exit::USAGE,
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::Http { status, .. } => match status {
                404 | 410 => exit::NOT_FOUND,
                401 | 403 | 409 => exit::NOT_ALLOWED,
                500..=599 => exit::SERVER_ERROR,
                400..=499 => exit::USAGE,
                _ => exit::SERVER_ERROR,
            },
            Error::InvalidAnswer(_) => exit::SERVER_ERROR,
            Error::BuildFailed(_) => exit::BUILD_FAILED,
            Error::BuildGone(_) => exit::BUILD_GONE,
            Error::TimedOut(_) => exit::TIMED_OUT,
            Error::Io { .. } => exit::OTHER,
            Error::BrokenPipe => exit::OK,
            Error::Reported(code) => *code,
            Error::Interrupted => exit::INTERRUPTED,
        }
    }

    /// True for failures that may go away by themselves (the server is
    /// restarting): event streams reconnect on these.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::InvalidAnswer(_) => true,
            Error::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Result of this crate's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error: cause: cause of the cause…`, each level once: what `runboat`
/// prints.
pub fn chain(error: &dyn std::error::Error) -> String {
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

    fn http(status: u16) -> u8 {
        Error::Http { status, detail: String::new() }.exit_code()
    }

    #[test]
    fn http_statuses_map_to_documented_codes() {
        assert_eq!(http(404), exit::NOT_FOUND);
        assert_eq!(http(401), exit::NOT_ALLOWED);
        assert_eq!(http(403), exit::NOT_ALLOWED);
        assert_eq!(http(409), exit::NOT_ALLOWED);
        assert_eq!(http(400), exit::USAGE);
        assert_eq!(http(413), exit::USAGE);
        assert_eq!(http(500), exit::SERVER_ERROR);
        assert_eq!(http(502), exit::SERVER_ERROR);
        assert_eq!(http(503), exit::SERVER_ERROR);
        let unreachable = Error::Unreachable { url: "u".into(), reason: "r".into() };
        assert_eq!(unreachable.exit_code(), exit::UNREACHABLE);
        assert!(unreachable.is_transient());
        assert!(!Error::Http { status: 404, detail: String::new() }.is_transient());
    }

    #[test]
    fn each_cause_appears_once_in_the_chain() {
        let e = Error::ConfigRead {
            path: PathBuf::from("/etc/runboat/cli.toml"),
            source: std::io::Error::other("permission denied here"),
        };
        let text = chain(&e);
        assert_eq!(
            text,
            "cannot read the config file /etc/runboat/cli.toml: permission denied here"
        );
        let e = Error::io("writing the output", std::io::Error::other("disk full"));
        assert_eq!(chain(&e).matches("disk full").count(), 1, "{}", chain(&e));
    }
}
