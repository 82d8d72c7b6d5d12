//! The one error type of runboat-core.
//!
//! Every variant names the input that was wrong. Secret setting values never
//! appear in any message: only their key does.

/// Everything that can go wrong in runboat-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A repository is not a plausible `owner/name`.
    #[error("invalid repository {repo:?}: {reason}")]
    InvalidRepo {
        /// The rejected input.
        repo: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A target branch is not a plausible git branch name.
    #[error("invalid target branch {branch:?}: {reason}")]
    InvalidBranch {
        /// The rejected input.
        branch: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A pull request number is not a positive integer.
    #[error("invalid pull request number {value:?}: expected a positive integer")]
    InvalidPr {
        /// The rejected input.
        value: String,
    },

    /// A commit sha is not 40 hexadecimal characters.
    #[error("invalid git commit {sha:?}: expected 40 hexadecimal characters")]
    InvalidCommit {
        /// The rejected input.
        sha: String,
    },

    /// An init-status string is none of `todo`, `started`, `succeeded`, `failed`.
    #[error("unknown init status {value:?}")]
    UnknownInitStatus {
        /// The rejected input.
        value: String,
    },

    /// A build status string is not one of the seven statuses.
    #[error("unknown build status {value:?}")]
    UnknownBuildStatus {
        /// The rejected input.
        value: String,
    },

    /// A runboat annotation is missing on a Deployment.
    #[error("missing annotation {key}")]
    MissingAnnotation {
        /// The annotation key.
        key: &'static str,
    },

    /// The `runboat/build` label is missing on a Deployment.
    #[error("missing label {key}")]
    MissingLabel {
        /// The label key.
        key: &'static str,
    },

    /// A Deployment has no creation timestamp.
    #[error("missing creation timestamp")]
    MissingCreationTimestamp,

    /// A timestamp annotation does not parse.
    #[error("invalid timestamp {value:?} in annotation {key}")]
    InvalidTimestamp {
        /// The annotation key.
        key: &'static str,
        /// The rejected value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: jiff::Error,
    },

    /// A Deployment could not be read as a runboat build.
    #[error("deployment {deployment} is not a valid runboat build")]
    InvalidDeployment {
        /// The Deployment name.
        deployment: String,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },

    /// A setting has a bad value. `key` is the TOML path (`repos[2].branch`)
    /// or the environment variable (`RUNBOAT_MAX_STARTED`).
    #[error("{key}: {message}")]
    Setting {
        /// Where the bad value came from.
        key: String,
        /// What is wrong with it (never contains a secret value).
        message: String,
    },

    /// A repo or branch pattern of a setting is not a valid regular expression.
    #[error("{key}: invalid regex")]
    SettingRegex {
        /// Where the pattern came from (`repos[2].branch`).
        key: String,
        /// The regex compiler's complaint.
        #[source]
        source: Box<regex::Error>,
    },

    /// The settings file is not valid TOML.
    #[error("settings file: invalid TOML at line {line}, column {column}: {message}")]
    SettingsToml {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's message.
        message: String,
    },
}

/// Result with runboat-core's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes, each once, joined by `": "` (what anyhow's
/// `{:#}` prints): for logs, where `Display` alone would drop the causes.
///
/// ```
/// use runboat_core::error::chain;
/// let e = std::io::Error::other("disk full");
/// assert_eq!(chain(&e).to_string(), "disk full");
/// ```
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterError, ErrorDetail};
    use crate::controller::CommandError;

    #[test]
    fn a_chain_shows_each_cause_once() {
        let io = std::io::Error::other("connection reset by peer");
        let cluster = ClusterError::Transient(ErrorDetail::caused_by("apply of b1-odoo", io));
        let command = CommandError::Cluster(cluster);
        let text = chain(&command).to_string();
        assert_eq!(text, "transient: apply of b1-odoo: connection reset by peer");

        let bad = Error::InvalidDeployment {
            deployment: "d".into(),
            source: Box::new(Error::MissingCreationTimestamp),
        };
        let text = chain(&bad).to_string();
        assert_eq!(text, "deployment d is not a valid runboat build: missing creation timestamp");
        assert_eq!(text.matches("missing creation timestamp").count(), 1);
    }
}
