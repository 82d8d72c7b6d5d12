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

/// The state of a deployment status, as GitHub names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentState {
    /// Deployed, waiting for an initialization slot.
    Queued,
    /// Initializing.
    InProgress,
    /// Initialized: the build can be viewed.
    Success,
    /// The initialization failed.
    Failure,
    /// Something else went wrong.
    Error,
    /// Undeployed or superseded.
    Inactive,
}

impl DeploymentState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Queued => "queued",
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Error => "error",
            DeploymentState::Inactive => "inactive",
        }
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a build's GitHub deployment: the deployment (one per build,
/// on its commit, in its environment) is created with its first status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentUpdate {
    /// `owner/name`, lower case.
    pub repo: String,
    /// The full 40-hex commit sha (the deployment's `ref`).
    pub git_commit: String,
    /// The build (one deployment per build).
    pub build_name: String,
    /// `runboat/<target branch>-pr<N>` for a pull request's build,
    /// `runboat/<branch>` for a branch build.
    pub environment: String,
    /// A pull request's environment is transient (GitHub may drop it).
    pub transient: bool,
    pub state: DeploymentState,
    /// The running build's URL (on `success`), else empty.
    pub environment_url: String,
    /// The build page, or the init log of a failed build; may be empty.
    pub log_url: String,
    pub description: String,
}

/// Receives commit statuses and deployment updates. Implementations queue
/// and return at once.
pub trait Forge: Send + Sync {
    /// Queue `status` for delivery. Never blocks, never fails: delivery
    /// problems are the implementation's to log.
    fn post_status(&self, status: CommitStatus);

    /// Queue a deployment update, under the same rules. The default drops
    /// it (a forge without deployments).
    fn post_deployment(&self, update: DeploymentUpdate) {
        let _ = update;
    }
}

/// A forge that drops every status (for `disable_commit_statuses`, and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoForge;

impl Forge for NoForge {
    fn post_status(&self, _status: CommitStatus) {}
}
