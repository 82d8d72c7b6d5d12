//! The forge: where commit statuses go (GitHub for now).
//!
//! The controller reports a build's progress on its commit through [`Forge`].
//! Implementations must never make the caller wait: `post_status` only queues
//! the status, and delivery (with retries, coalescing and logging of failures)
//! happens in the background. A slow or failing forge must not delay any
//! cluster action.

use std::fmt;

/// The state of a commit status, as GitHub names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

impl CommitState {
    /// The wire name (`pending`, `success`, `failure`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
            CommitState::Error => "error",
        }
    }
}

impl fmt::Display for CommitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One commit status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// `owner/name`, lower case.
    pub repo: String,
    /// The full 40-hex commit sha.
    pub git_commit: String,
    pub state: CommitState,
    /// Link shown next to the status: the build's page.
    pub target_url: String,
    /// A short human description ("initializing", "build failed", …).
    pub description: String,
}

/// Receives commit statuses. Implementations queue and return at once.
pub trait Forge: Send + Sync {
    /// Queue `status` for delivery. Never blocks, never fails: delivery
    /// problems are the implementation's to log.
    fn post_status(&self, status: CommitStatus);
}

/// A forge that drops every status (for `disable_commit_statuses`, and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoForge;

impl Forge for NoForge {
    fn post_status(&self, _status: CommitStatus) {}
}
