//! What the server needs from the controller, as a small object-safe trait.
//!
//! The HTTP layer only reads the build index (under the controller's lock),
//! sends commands and reads logs. Keeping that behind [`Backend`] lets the
//! router be tested without a cluster and keeps the server independent of
//! how the controller is wired (task, channels, locks).

use async_trait::async_trait;
use runboat_core::{Build, BuildIndex, CommitInfo, SearchFilters};

/// The result of a command, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command was accepted (the cluster will reflect it shortly).
    Done,
    /// Nothing to do, with the reason (e.g. "cannot start a build that is
    /// initializing"). The API answers 409 Conflict.
    Ignored { reason: String },
    /// No build of that name. The API answers 404.
    NotFound,
    /// The repo/branch is not supported by the settings. The API answers 400.
    Unsupported { reason: String },
}

/// A failure of the controller or the cluster while running a command. The
/// message is logged, never shown to the client (answer 500/503).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What went wrong, for the log.
    pub message: String,
    /// True when the controller is gone (shutting down): answer 503.
    pub unavailable: bool,
}

impl BackendError {
    /// A failure to log.
    pub fn new(message: impl Into<String>) -> Self {
        BackendError { message: message.into(), unavailable: false }
    }

    /// The controller is not running (any more).
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError { message: message.into(), unavailable: true }
    }
}

/// The controller as the server uses it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Calls `f` once with the index, under the lock that guards it:
    /// subscribing to its events and taking a snapshot in the same call gives
    /// "every build, then live changes" without a gap. `f` must be short.
    fn with_index(&self, f: &mut dyn FnMut(&BuildIndex));

    /// True once the first full listing of the cluster is in the index.
    fn is_ready(&self) -> bool;

    /// Deploy a commit (no-op when it already has a build).
    async fn deploy_commit(&self, commit: CommitInfo) -> Result<Outcome, BackendError>;
    /// Start a build (only from stopped/stopping).
    async fn start(&self, name: &str) -> Result<Outcome, BackendError>;
    /// Stop a build (only from started).
    async fn stop(&self, name: &str) -> Result<Outcome, BackendError>;
    /// Reinitialize a build.
    async fn reset(&self, name: &str) -> Result<Outcome, BackendError>;
    /// Undeploy a build.
    async fn undeploy(&self, name: &str) -> Result<Outcome, BackendError>;
    /// Undeploy every build passing `filters`; returns how many were asked
    /// to undeploy.
    async fn undeploy_matching(&self, filters: SearchFilters) -> Result<usize, BackendError>;
    /// The build's initialization log, `None` when there is none (no job
    /// pod, or the build does not exist).
    async fn init_log(&self, name: &str) -> Result<Option<String>, BackendError>;
    /// The build's running log, `None` when there is none.
    async fn log(&self, name: &str) -> Result<Option<String>, BackendError>;

    /// Appends controller metrics (Prometheus text exposition, with their
    /// `# HELP`/`# TYPE` lines) to `out`. Default: none.
    fn write_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// Runs `f` on the backend's index; `None` only if the backend broke its
/// contract and never called back (then the caller answers 500).
pub fn read_index<R>(backend: &dyn Backend, f: impl FnOnce(&BuildIndex) -> R) -> Option<R> {
    let mut f = Some(f);
    let mut result = None;
    backend.with_index(&mut |index| {
        if let Some(f) = f.take() {
            result = Some(f(index));
        }
    });
    result
}

/// A copy of the build `name`, if the index has it.
pub fn read_build(backend: &dyn Backend, name: &str) -> Option<Build> {
    read_index(backend, |index| index.get(name).cloned()).flatten()
}
