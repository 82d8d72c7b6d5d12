//! The [`Cluster`] trait: exactly what the controller needs from Kubernetes.
//!
//! runboat-core owns the trait; runboat-k8s implements it with kube-rs, and
//! [`crate::sim::SimCluster`] (feature `testing`) implements it in memory.
//! Everything is addressed by **build name** (the `runboat/build` label),
//! never by a resource name: the implementation finds the build's resources
//! by label.
//!
//! # Events
//!
//! [`Cluster::deployment_events`] and [`Cluster::job_events`] each return an
//! endless stream for the build namespace. The first item is always
//! [`ClusterEvent::Relisted`] with the complete current state; then come
//! [`ClusterEvent::Applied`] / [`ClusterEvent::Deleted`] changes; whenever the
//! implementation had to restart its watch it sends a fresh
//! [`ClusterEvent::Relisted`] (again the complete state: the consumer replaces
//! what it knew, so anything deleted while disconnected disappears). Events of
//! one object arrive in order; events of different objects may interleave
//! arbitrarily and may be duplicated. A stream should never end; if it does,
//! the controller asks for a new one.
//!
//! `crate::sim::check_cluster_contract` (feature `testing`) checks an
//! implementation against this contract.
//!
//! # Errors
//!
//! [`ClusterError`] separates what the controller handles differently:
//! `NotFound` (often fine: deleting what is gone), `Conflict` and `Transient`
//! (retried with backoff), `Invalid` (the cluster rejected what we sent:
//! retrying the same thing will not help).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::commit::CommitInfo;
use crate::contract::{JOB_KIND_CLEANUP, JOB_KIND_INITIALIZE};
use crate::status::{DeploymentFacts, InitStatus};

/// The `mode` variable the kubefiles are rendered with (SPEC "Kubefiles"):
/// each mode selects a subset of the objects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KubefilesMode {
    /// Create (or reset) the build: Deployment with 0 replicas and init
    /// status `todo`, Service, Ingresses, PVC, ConfigMaps, Secret.
    Deployment,
    /// The initialization Job.
    Initialize,
    /// Before scaling up.
    Start,
    /// After scaling down, or after initialization.
    Stop,
    /// The cleanup Job of an undeploying build.
    Cleanup,
}

impl KubefilesMode {
    /// Every mode.
    pub const ALL: [KubefilesMode; 5] = [
        KubefilesMode::Deployment,
        KubefilesMode::Initialize,
        KubefilesMode::Start,
        KubefilesMode::Stop,
        KubefilesMode::Cleanup,
    ];

    /// The template variable value: `deployment`, `initialize`, `start`,
    /// `stop`, `cleanup`.
    pub fn as_str(self) -> &'static str {
        match self {
            KubefilesMode::Deployment => "deployment",
            KubefilesMode::Initialize => "initialize",
            KubefilesMode::Start => "start",
            KubefilesMode::Stop => "stop",
            KubefilesMode::Cleanup => "cleanup",
        }
    }

    /// Parses a mode name as written in kubefiles (`runboat/modes`).
    pub fn from_name(name: &str) -> Option<KubefilesMode> {
        KubefilesMode::ALL.into_iter().find(|mode| mode.as_str() == name)
    }
}

impl fmt::Display for KubefilesMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `runboat/job-kind` of a Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    /// Initialization job (kubefiles mode `initialize`).
    Initialize,
    /// Cleanup job (kubefiles mode `cleanup`).
    Cleanup,
}

impl JobKind {
    /// The label value: `initialize` or `cleanup`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Initialize => JOB_KIND_INITIALIZE,
            JobKind::Cleanup => JOB_KIND_CLEANUP,
        }
    }

    /// Parses a label value.
    pub fn from_label(value: &str) -> Option<JobKind> {
        match value {
            JOB_KIND_INITIALIZE => Some(JobKind::Initialize),
            JOB_KIND_CLEANUP => Some(JobKind::Cleanup),
            _ => None,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a Job is, from its status: `active > 0` → `Running`,
/// `succeeded > 0` → `Succeeded`, `failed > 0` → `Failed` (checked in that
/// order, as the original does), otherwise `Pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobPhase {
    /// Created, no pod running yet.
    Pending,
    /// A pod is running.
    Running,
    /// Completed successfully.
    Succeeded,
    /// Failed (backoff limit or deadline reached).
    Failed,
}

impl JobPhase {
    /// True while the job may still run (pending or running).
    pub fn is_active(self) -> bool {
        matches!(self, JobPhase::Pending | JobPhase::Running)
    }
}

/// What was observed of one runboat Job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobFacts {
    /// `metadata.name` (unique in the namespace).
    pub name: String,
    /// The `runboat/build` label.
    pub build_name: String,
    /// The `runboat/job-kind` label.
    pub kind: JobKind,
    /// Derived from the Job status.
    pub phase: JobPhase,
    /// `metadata.deletionTimestamp` is set: the job is being killed and is
    /// ignored by the controller.
    pub deleting: bool,
    /// `status.startTime`: when the Job started.
    pub started: Option<jiff::Timestamp>,
    /// When it ended: `status.completionTime` of a succeeded Job, the
    /// terminal condition's `lastTransitionTime` of a failed one.
    pub finished: Option<jiff::Timestamp>,
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent<T> {
    /// The complete current state (the initial listing, or a fresh listing
    /// after the watch restarted): replaces everything known before.
    Relisted(Vec<T>),
    /// An object was created or changed (its new state).
    Applied(T),
    /// An object is gone (its last known state).
    Deleted(T),
}

/// What a [`ClusterError`] says: which call failed and why, in our words,
/// and the error it came from (kube's, the renderer's), kept as its
/// [`source`](std::error::Error::source) so that a chain shows each cause
/// once. Compared by message only. Dereferences to the message.
#[derive(Debug, Clone)]
pub struct ErrorDetail {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ErrorDetail {
    /// A detail with no underlying error.
    pub fn new(message: impl Into<String>) -> ErrorDetail {
        ErrorDetail { message: message.into(), source: None }
    }

    /// A detail caused by `source`; `message` should not repeat its text.
    pub fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ErrorDetail {
        ErrorDetail { message: message.into(), source: Some(Arc::new(source)) }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::ops::Deref for ErrorDetail {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl PartialEq for ErrorDetail {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for ErrorDetail {}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ErrorDetail {
    fn from(message: String) -> Self {
        ErrorDetail::new(message)
    }
}

impl From<&str> for ErrorDetail {
    fn from(message: &str) -> Self {
        ErrorDetail::new(message)
    }
}

/// Why a cluster call failed. `Display` says this level only; the error it
/// came from is its `source()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The object does not exist (HTTP 404).
    NotFound(ErrorDetail),
    /// A concurrent change won (HTTP 409); retrying on fresh state helps.
    Conflict(ErrorDetail),
    /// The cluster rejected what we sent (HTTP 400/422, rendering error,
    /// unsupported repo): retrying the same call will not help.
    Invalid(ErrorDetail),
    /// A network error, timeout, 5xx or throttling: retry later.
    Transient(ErrorDetail),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, detail) = match self {
            ClusterError::NotFound(d) => ("not found", d),
            ClusterError::Conflict(d) => ("conflict", d),
            ClusterError::Invalid(d) => ("invalid", d),
            ClusterError::Transient(d) => ("transient", d),
        };
        write!(f, "{kind}: {detail}")
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let detail = match self {
            ClusterError::NotFound(d)
            | ClusterError::Conflict(d)
            | ClusterError::Invalid(d)
            | ClusterError::Transient(d) => d,
        };
        detail.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ClusterError {
    /// True for errors worth retrying with backoff: `Transient` and
    /// `Conflict`.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClusterError::Transient(_) | ClusterError::Conflict(_))
    }

    /// True for `NotFound`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::NotFound(_))
    }
}

/// Result of a cluster call.
pub type ClusterResult<T> = std::result::Result<T, ClusterError>;

/// Everything the controller asks of the cluster. Object safe: use it as
/// `Arc<dyn Cluster>`. All mutating calls must be idempotent (applying the
/// same thing twice is harmless); see the [module docs](self) for the
/// event-stream contract.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Deployment events of the build namespace (runboat Deployments only,
    /// i.e. labelled `runboat/build`). Starts with [`ClusterEvent::Relisted`].
    fn deployment_events(&self) -> BoxStream<'static, ClusterEvent<DeploymentFacts>>;

    /// Job events of the build namespace (Jobs labelled `runboat/build` and
    /// `runboat/job-kind`). Starts with [`ClusterEvent::Relisted`].
    fn job_events(&self) -> BoxStream<'static, ClusterEvent<JobFacts>>;

    /// Renders the kubefiles of the settings rule matching `commit` in
    /// `mode` for the build named `build_name` and applies them (after a
    /// server-side dry run). The name is passed, not derived from the
    /// commit, because builds created by the original controller are named
    /// `b<uuid>` and must keep their name. An unsupported repo/branch is
    /// `Invalid`.
    async fn apply_kubefiles(
        &self,
        build_name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()>;

    /// Sets the Deployment's replicas and writes `runboat/last-scaled`
    /// (now, see [`crate::contract::format_last_scaled`]). `NotFound` when
    /// the build has no Deployment.
    async fn scale(&self, build_name: &str, replicas: i32) -> ClusterResult<()>;

    /// Writes the `runboat/init-status` annotation. `NotFound` when the
    /// build has no Deployment.
    async fn set_init_status(&self, build_name: &str, status: InitStatus) -> ClusterResult<()>;

    /// Deletes the build's Deployment (its finalizer then keeps it,
    /// undeploying, until [`Cluster::remove_finalizer`]). Already gone is Ok.
    async fn delete_deployment(&self, build_name: &str) -> ClusterResult<()>;

    /// Removes the `runboat/cleanup` finalizer from the Deployment. Already
    /// gone is Ok.
    async fn remove_finalizer(&self, build_name: &str) -> ClusterResult<()>;

    /// Deletes the build's Jobs of `kind` and their pods, grace period 0.
    /// None there is Ok.
    async fn kill_jobs(&self, build_name: &str, kind: JobKind) -> ClusterResult<()>;

    /// Deletes every resource labelled `runboat/build=<build_name>` of the
    /// configured resource types. None there is Ok.
    async fn delete_build_resources(&self, build_name: &str) -> ClusterResult<()>;

    /// The log of the build's initialization pod, if there is one.
    async fn init_log(&self, build_name: &str) -> ClusterResult<Option<String>>;

    /// The log of the build's Deployment pod (default container), if any.
    async fn log(&self, build_name: &str) -> ClusterResult<Option<String>>;

    /// Reads the build's Deployment now (not from the watch cache).
    async fn get_deployment(&self, build_name: &str) -> ClusterResult<Option<DeploymentFacts>>;

    /// The end of one of the build's logs: about the last `limit_bytes`
    /// bytes, from a line start, and whether earlier lines were left out.
    /// The default reads the whole log and cuts it; an implementation on a
    /// real API server asks it for no more than that.
    async fn log_tail(
        &self,
        build_name: &str,
        source: LogSource,
        limit_bytes: usize,
    ) -> ClusterResult<Option<LogTail>> {
        let log = match source {
            LogSource::Init => self.init_log(build_name).await?,
            LogSource::Run => self.log(build_name).await?,
        };
        Ok(log.map(|text| LogTail::cut(text, limit_bytes)))
    }

    /// Follows one of the build's logs: what it holds now, then what it
    /// gains, until its pod ends or the connection does (the caller opens
    /// it again, skipping what it saw of the same pod). `None`: no pod
    /// with a log yet. The default reads the log once (so a caller that
    /// opens it again polls); an implementation on a real API server uses
    /// its `follow=true`.
    async fn follow_log(
        &self,
        build_name: &str,
        source: LogSource,
    ) -> ClusterResult<Option<LogFollow>> {
        let log = match source {
            LogSource::Init => self.init_log(build_name).await?,
            LogSource::Run => self.log(build_name).await?,
        };
        Ok(log.map(|text| LogFollow {
            pod: String::new(),
            chunks: futures::stream::once(async move { Ok(text.into_bytes()) }).boxed(),
        }))
    }

    /// Points the build's Ingress backends at `route` (the build's own
    /// Services, or `wake_service`), then writes `runboat/route` on its
    /// Deployment. `NotFound` when the build has no Deployment. The default
    /// refuses (`Invalid`).
    async fn set_route(&self, build_name: &str, route: crate::build::Route) -> ClusterResult<()> {
        Err(ClusterError::Invalid(
            format!("routing {build_name} to {}: not supported here", route.as_str()).into(),
        ))
    }

    /// Writes `runboat/pinned: "true"` on the build's Deployment, or
    /// removes it. `NotFound` when the build has no Deployment. The default
    /// refuses: an implementation without pins answers `Invalid`.
    async fn set_pinned(&self, build_name: &str, pinned: bool) -> ClusterResult<()> {
        let _ = pinned;
        Err(ClusterError::Invalid(format!("pinning {build_name}: not supported here").into()))
    }
}

/// Which of a build's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogSource {
    /// The initialization job's pod.
    Init,
    /// The Deployment's pod (its default container).
    Run,
}

/// The end of a log ([`Cluster::log_tail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    /// The text kept.
    pub text: String,
    /// Whether earlier lines were left out.
    pub truncated: bool,
}

impl LogTail {
    /// The last `limit` bytes of `text`, from a line start when a whole
    /// line fits in them.
    pub fn cut(text: String, limit: usize) -> LogTail {
        if text.len() <= limit {
            return LogTail { text, truncated: false };
        }
        let mut start = text.len() - limit;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        // From a line start, unless no whole line fits.
        if let Some(nl) = text[start..].find('\n')
            && start + nl + 1 < text.len()
        {
            start += nl + 1;
        }
        LogTail { text: text[start..].to_owned(), truncated: true }
    }
}

/// A followed log ([`Cluster::follow_log`]).
pub struct LogFollow {
    /// The pod it comes from (empty when the implementation cannot say).
    pub pod: String,
    /// Its bytes as they come; ends with the pod or the connection.
    pub chunks: BoxStream<'static, ClusterResult<Vec<u8>>>,
}

impl fmt::Debug for LogFollow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogFollow").field("pod", &self.pod).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_kind_strings_are_the_contract() {
        let modes: Vec<&str> = KubefilesMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(modes, ["deployment", "initialize", "start", "stop", "cleanup"]);
        for kind in [JobKind::Initialize, JobKind::Cleanup] {
            assert_eq!(JobKind::from_label(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::from_label("build"), None);
    }

    #[test]
    fn only_transient_and_conflict_are_retried() {
        assert!(ClusterError::Transient("timeout".into()).is_transient());
        assert!(ClusterError::Conflict("rv".into()).is_transient());
        assert!(!ClusterError::Invalid("bad".into()).is_transient());
        assert!(!ClusterError::NotFound("b1".into()).is_transient());
        assert!(ClusterError::NotFound("b1".into()).is_not_found());
    }

    #[test]
    fn the_trait_is_object_safe() {
        fn takes(_: Option<std::sync::Arc<dyn Cluster>>) {}
        takes(None);
    }
}

#[cfg(test)]
mod log_tail_tests {
    use super::LogTail;

    #[test]
    fn a_tail_starts_at_a_line_unless_no_whole_line_fits() {
        let text = "one\ntwo\nthree\n".to_owned();
        assert_eq!(
            LogTail::cut(text.clone(), 100),
            LogTail { text: text.clone(), truncated: false }
        );
        assert_eq!(
            LogTail::cut(text.clone(), 9),
            LogTail { text: "three\n".into(), truncated: true }
        );
        assert_eq!(LogTail::cut(text, 4), LogTail { text: "ree\n".into(), truncated: true });
        // Never inside a character.
        assert_eq!(LogTail::cut("ééé".into(), 3).text, "é");
    }
}
