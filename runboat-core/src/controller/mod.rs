//! The controller: one task that owns the [`BuildIndex`], turns cluster
//! events and user commands into cluster actions, and stays correct when the
//! cluster misbehaves.
//!
//! # Shape
//!
//! [`Controller::spawn`] starts the loop and returns a [`ControllerHandle`]
//! (cheap to clone) for commands and for reading the index. The loop:
//!
//! 1. waits for any input (a Deployment or Job event, a command, a finished
//!    action, a timer), then drains every input already available (up to
//!    [`ControllerConfig::max_batch`]) so that a burst is handled as one batch;
//! 2. applies the events: Deployment events update the index
//!    ([`ClusterEvent::Relisted`] replaces it atomically, so builds that
//!    vanished while disconnected go away), Job events update its job table;
//! 3. reconciles, level-triggered on the builds touched by the batch: user
//!    commands first, then SPEC's job handling, then the policies (stop,
//!    undeploy, cleanup, initialize), and spawns the resulting actions, at
//!    most [`ControllerConfig::max_concurrent_actions`] at once.
//!
//! Nothing happens before both streams delivered their first listing
//! ([`ControllerHandle::ready`]); commands sent earlier wait.
//!
//! # Never twice
//!
//! At most one action per build runs at a time. When it finishes, the build
//! stays *awaiting* until the events show its effect (e.g. an `initialize`
//! action until the init Job appears) or [`ControllerConfig::reflect_timeout`]
//! passes; meanwhile nothing else is issued for that build (commands for it
//! wait). So an action is never issued twice because events lag behind. The
//! `max_initializing` room counts builds whose init status is `started`,
//! builds with a pending or running init Job, and initialize actions not yet
//! reflected, so stale or lagging events cannot launch extra init jobs.
//!
//! # Failures
//!
//! Inside an action, transient and conflict errors are retried with capped
//! exponential backoff and full jitter ([`RetryPolicy`]). An action that still
//! fails (or panics: the panic is contained by the task and logged) puts its
//! build in backoff (doubling up to [`ControllerConfig::failure_backoff_max`])
//! before the policies may retry it. The loop itself never returns on an
//! error; if a stream ends it subscribes again after a short delay.
//!
//! # Job handling (SPEC, idempotent)
//!
//! - init job running, init status `todo` → set `started`, post `pending`;
//! - init job succeeded, init `todo`/`started` → apply mode `stop`, set
//!   `succeeded`, post `success`, then start the build if
//!   [`Settings::start_after_init`];
//! - init job failed, init `todo`/`started` → scale to 0, apply mode `stop`,
//!   set `failed`, post `failure`;
//! - cleanup job succeeded (build undeploying) → delete the build's
//!   resources, remove the finalizer;
//! - cleanup job failed → logged at error level once, reported by
//!   [`ControllerHandle::cleanup_failures`]; the build stays `undeploying`
//!   (deleting the failed Job makes the controller run the cleanup again);
//! - a job whose build has no Deployment → after checking with
//!   [`Cluster::get_deployment`], delete the build's resources;
//! - **do better:** init status `started` but no init Job at all (deleted
//!   by hand, or by a TTL while the controller was down) → back to `todo`
//!   (after re-reading the Deployment), instead of holding an
//!   initialization slot forever.
//!
//! The init-job handlers first re-read the Deployment with
//! [`Cluster::get_deployment`] and do nothing unless the init status still
//! is what the event implied, so a stale or replayed event cannot act twice
//! (e.g. post `success` twice, or start a build again).
//!
//! Undeploying builds (policy `cleanup`): kill the init job, scale to 0 and
//! apply mode `cleanup` (or, with `no_cleanup_job`, delete the resources and
//! remove the finalizer directly).
//!
//! Commit statuses go to the [`Forge`] with the build page as target URL;
//! `post_status` only queues, and an action posts its statuses after its
//! last cluster call, so the forge never delays a cluster action.

mod effects;
mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::build::Build;
use crate::cluster::{Cluster, ClusterError, ClusterResult};
use crate::commit::CommitInfo;
use crate::forge::Forge;
use crate::index::{BuildIndex, IndexEvent, SearchFilters, SortOrder, StatusCounts};
use crate::policy::Request;
use crate::progress::Progress;
use crate::settings::Settings;

pub use crate::policy::{CommandOutcome, IgnoredReason};

#[cfg(doc)]
use crate::cluster::ClusterEvent;

/// Retries of one cluster call inside an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Backoff ceiling cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 100 ms doubling up to 5 s (≈ 10 s at worst).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before retry number `retry` (0-based):
    /// `initial * 2^retry`, capped. The actual wait is uniform in
    /// `[ceiling/2, ceiling]` (jitter).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Tuning of the controller loop.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// Actions running at once, at most.
    pub max_concurrent_actions: usize,
    /// Inputs handled in one batch, at most.
    pub max_batch: usize,
    /// Retries of cluster calls inside an action.
    pub retry: RetryPolicy,
    /// How long a finished action may take to show in the events before the
    /// build is considered again.
    pub reflect_timeout: Duration,
    /// Cap of the per-build backoff after a failed action (starts at 1 s).
    pub failure_backoff_max: Duration,
    /// Delay before subscribing again to a stream that ended.
    pub resubscribe_delay: Duration,
    /// Seed of the backoff jitter (tests use a fixed one).
    pub seed: u64,
    /// Requests waiting in the loop's queue, at most: beyond, a request is
    /// answered [`CommandError::Busy`] at once. (The undeploys an
    /// undeploy-matching request expands into are not counted: the loop
    /// queued them itself.)
    pub max_queued_requests: usize,
    /// The wall time when the loop starts, from which it counts on tokio's
    /// clock (`None`: the system's time). Idle stop compares this clock
    /// with `runboat/last-scaled`; a simulated cluster on tokio's paused
    /// clock passes its own start time so both clocks agree.
    pub wall_clock_start: Option<jiff::Timestamp>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            max_concurrent_actions: 32,
            max_batch: 4096,
            retry: RetryPolicy::default(),
            reflect_timeout: Duration::from_secs(30),
            failure_backoff_max: Duration::from_secs(60),
            resubscribe_delay: Duration::from_secs(1),
            seed: 0x5eed_1234_abcd_0001,
            max_queued_requests: 4096,
            wall_clock_start: None,
        }
    }
}

/// Why a command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A cluster call failed (after retries for transient errors). Shows as
    /// the cluster error itself, so a chain names each cause once.
    #[error(transparent)]
    Cluster(ClusterError),
    /// The action panicked (a bug; logged).
    #[error("the action panicked")]
    Panicked,
    /// The controller is not running any more.
    #[error("the controller is stopped")]
    Stopped,
    /// The controller's request queue is full: retry later.
    #[error("the controller has too many requests waiting")]
    Busy,
}

/// Result of a command.
pub type CommandResult = std::result::Result<CommandOutcome, CommandError>;

/// Counters of what the controller did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ControllerStats {
    /// Batches reconciled.
    pub batches: u64,
    /// Deployment and Job events received.
    pub events: u64,
    /// Actions spawned.
    pub actions_started: u64,
    /// Actions that ended in an error.
    pub actions_failed: u64,
    /// Actions that panicked.
    pub actions_panicked: u64,
    /// Full relistings received after the first one of each stream: each
    /// is a watch that had to restart.
    pub watch_restarts: u64,
    /// Builds stopped because their idle session ran out.
    pub idle_stops: u64,
}

/// How many actions of one kind ended one way (see
/// [`ControllerHandle::action_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionCount {
    /// The action (`initialize`, `start`, `init-succeeded`, …).
    pub kind: &'static str,
    /// `ok`, or the error: `not_found`, `conflict`, `invalid`, `transient`,
    /// `panicked`, `stopped`.
    pub outcome: &'static str,
    /// How many times.
    pub count: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    actions_started: AtomicU64,
    actions_failed: AtomicU64,
    actions_panicked: AtomicU64,
    watch_restarts: AtomicU64,
    idle_stops: AtomicU64,
    /// Ended actions by (kind, outcome).
    by_kind: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Counters {
    fn count_outcome(&self, kind: &'static str, outcome: &'static str) {
        *self
            .by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((kind, outcome))
            .or_insert(0) += 1;
    }
}

/// The label of a command error in metrics.
fn error_label(e: &CommandError) -> &'static str {
    match e {
        CommandError::Cluster(ClusterError::NotFound(_)) => "not_found",
        CommandError::Cluster(ClusterError::Conflict(_)) => "conflict",
        CommandError::Cluster(ClusterError::Invalid(_)) => "invalid",
        CommandError::Cluster(ClusterError::Transient(_)) => "transient",
        CommandError::Panicked => "panicked",
        CommandError::Stopped => "stopped",
        CommandError::Busy => "busy",
    }
}

/// State shared by the loop and the handles.
struct Shared {
    index: RwLock<BuildIndex>,
    settings: Arc<Settings>,
    cluster: Arc<dyn Cluster>,
    ready: watch::Sender<bool>,
    /// Both watch streams are subscribed and listed (false while one is
    /// being resubscribed).
    watching: AtomicBool,
    idle: AtomicBool,
    cleanup_failures: Mutex<BTreeSet<String>>,
    counters: Counters,
    /// Init times and duration estimates (see [`crate::progress`]).
    progress: Arc<Mutex<Progress>>,
}

impl Shared {
    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, BuildIndex> {
        // A poisoned lock only means a reader panicked; the index itself is
        // only mutated by the loop, which does not panic while holding it.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, BuildIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the answer to a request goes.
enum Reply {
    /// Nobody waits (a request the loop queued itself).
    None,
    /// The outcome of a deploy/start/stop/reset/undeploy.
    Outcome(oneshot::Sender<CommandResult>),
    /// How many builds an undeploy-matching queued.
    Count(oneshot::Sender<std::result::Result<usize, CommandError>>),
}

impl Reply {
    fn is_none(&self) -> bool {
        matches!(self, Reply::None)
    }

    /// True when the caller stopped waiting for the answer.
    fn is_closed(&self) -> bool {
        match self {
            Reply::None => false,
            Reply::Outcome(tx) => tx.is_closed(),
            Reply::Count(tx) => tx.is_closed(),
        }
    }
}

/// A message for the loop.
enum Command {
    /// A request and where its answer goes.
    Request(Request, Reply),
    /// Stop the loop.
    Shutdown,
}

/// A command with a deadline that did not get its answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// The command queue stayed full until the deadline: not queued.
    NotQueued,
    /// Queued (the loop applies it later), not answered in time.
    Queued,
}

/// Entry point: see the [module docs](self).
#[derive(Debug)]
pub struct Controller;

impl Controller {
    /// Starts the controller loop on the current tokio runtime. The loop
    /// runs until [`ControllerHandle::shutdown`] or until every handle is
    /// dropped. It is always the leader: it makes every decision (see
    /// [`Controller::spawn_with_leadership`] for several replicas).
    pub fn spawn(
        cluster: Arc<dyn Cluster>,
        forge: Arc<dyn Forge>,
        settings: Arc<Settings>,
        config: ControllerConfig,
    ) -> ControllerHandle {
        Controller::start(cluster, forge, settings, config, None)
    }

    /// Starts the controller loop as one replica of several that follow a
    /// leader election: it makes scheduling decisions (job handling,
    /// limits, cleanup, initialization) only while `leader` holds `true`,
    /// and serves requests (deploy, start, stop, reset, undeploy) always.
    /// On losing the leadership it aborts its running scheduling actions at
    /// once; on gaining it, it decides again for every build from the index
    /// and the job table, which its watches keep current all along. A
    /// closed `leader` channel counts as `false`.
    pub fn spawn_with_leadership(
        cluster: Arc<dyn Cluster>,
        forge: Arc<dyn Forge>,
        settings: Arc<Settings>,
        config: ControllerConfig,
        leader: watch::Receiver<bool>,
    ) -> ControllerHandle {
        Controller::start(cluster, forge, settings, config, Some(leader))
    }

    fn start(
        cluster: Arc<dyn Cluster>,
        forge: Arc<dyn Forge>,
        settings: Arc<Settings>,
        config: ControllerConfig,
        leader: Option<watch::Receiver<bool>>,
    ) -> ControllerHandle {
        let (commands, command_rx) = mpsc::channel(1024);
        let (ready, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            index: RwLock::new(BuildIndex::new()),
            settings,
            cluster,
            ready,
            watching: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            cleanup_failures: Mutex::new(BTreeSet::new()),
            counters: Counters::default(),
            progress: Arc::default(),
        });
        let looper = run::Loop::new(shared.clone(), forge, config, command_rx, leader);
        let task = tokio::spawn(looper.run());
        ControllerHandle { shared, commands, task: Arc::new(Mutex::new(Some(task))) }
    }
}

/// Commands and read access to a running controller. Clone it freely.
#[derive(Clone)]
pub struct ControllerHandle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl fmt::Debug for ControllerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerHandle")
            .field("ready", &self.is_ready())
            .field("builds", &self.shared.read_index().len())
            .finish_non_exhaustive()
    }
}

impl ControllerHandle {
    async fn ask(&self, request: Request) -> CommandResult {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(request, Reply::Outcome(tx)))
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }

    /// Sends the command `make` builds, and waits for its answer until
    /// `deadline`: a webhook must be answered within GitHub's timeout
    /// whatever the loop and the cluster are doing.
    async fn ask_until<T>(
        &self,
        deadline: tokio::time::Instant,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> std::result::Result<std::result::Result<T, CommandError>, Late> {
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.commands.send(make(tx))).await {
            Err(_) => return Err(Late::NotQueued),
            Ok(Err(_)) => return Ok(Err(CommandError::Stopped)),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(Late::Queued),
            Ok(answer) => Ok(answer.map_err(|_| CommandError::Stopped)),
        }
    }

    /// [`ControllerHandle::deploy_commit`] answered by `deadline`, else
    /// whether the command is at least queued.
    pub async fn deploy_commit_until(
        &self,
        commit: CommitInfo,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<CommandResult, Late> {
        let answer = self
            .ask_until(deadline, |tx| Command::Request(Request::Deploy(commit), Reply::Outcome(tx)))
            .await?;
        Ok(answer.and_then(|result| result))
    }

    /// [`ControllerHandle::undeploy_matching`] answered by `deadline`, else
    /// whether the command is at least queued.
    pub async fn undeploy_matching_until(
        &self,
        filters: SearchFilters,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<std::result::Result<usize, CommandError>, Late> {
        let answer = self
            .ask_until(deadline, |tx| {
                Command::Request(Request::UndeployMatching(filters), Reply::Count(tx))
            })
            .await?;
        Ok(answer.and_then(|count| count))
    }

    /// Deploys `commit` (kubefiles mode `deployment`, then `pending` status):
    /// [`CommandOutcome::Unsupported`] when no rule supports its repo and
    /// branch, [`IgnoredReason::AlreadyDeployed`] when the commit already
    /// has a build, whatever its state.
    pub async fn deploy_commit(&self, commit: CommitInfo) -> CommandResult {
        self.ask(Request::Deploy(commit)).await
    }

    /// Starts a `stopped`/`stopping` build: mode `start`, then 1 replica.
    pub async fn start(&self, build_name: &str) -> CommandResult {
        self.ask(Request::Start(build_name.to_owned())).await
    }

    /// Stops a `started` build: 0 replicas, then mode `stop`.
    pub async fn stop(&self, build_name: &str) -> CommandResult {
        self.ask(Request::Stop(build_name.to_owned())).await
    }

    /// Resets a build (not undeploying): kills its jobs, re-applies mode
    /// `deployment` (init status back to `todo`), posts `pending`.
    pub async fn reset(&self, build_name: &str) -> CommandResult {
        self.ask(Request::Reset(build_name.to_owned())).await
    }

    /// Pins a build (not undeploying): the limits and idle stop never stop
    /// or undeploy it. [`CommandOutcome::PinLimit`] when `max_pinned`
    /// builds are pinned already; `Done` at once when it is pinned.
    pub async fn pin(&self, build_name: &str) -> CommandResult {
        self.ask(Request::Pin(build_name.to_owned())).await
    }

    /// Unpins a build (`Done` at once when it is not pinned).
    pub async fn unpin(&self, build_name: &str) -> CommandResult {
        self.ask(Request::Unpin(build_name.to_owned())).await
    }

    /// Undeploys a build (deletes its Deployment; cleanup follows).
    pub async fn undeploy(&self, build_name: &str) -> CommandResult {
        self.ask(Request::Undeploy(build_name.to_owned())).await
    }

    /// Undeploys every build matching `filters` that is not already
    /// undeploying (PR closed, branch deleted, admin `DELETE /builds`).
    /// Returns how many were queued; they proceed in the background.
    pub async fn undeploy_matching(
        &self,
        filters: SearchFilters,
    ) -> std::result::Result<usize, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(Request::UndeployMatching(filters), Reply::Count(tx)))
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }

    /// Runs `f` on the index under its read lock (keep `f` short: the loop
    /// waits for the lock to apply events).
    pub fn with_index<R>(&self, f: impl FnOnce(&BuildIndex) -> R) -> R {
        f(&self.shared.read_index())
    }

    /// Runs `f` on the init times and duration estimates (keep `f` short;
    /// it holds a lock the loop takes on every event).
    pub fn with_progress<R>(&self, f: impl FnOnce(&Progress) -> R) -> R {
        f(&self.shared.progress())
    }

    /// The build `name`, if known.
    pub fn get(&self, name: &str) -> Option<Build> {
        self.with_index(|idx| idx.get(name).cloned())
    }

    /// The builds matching `filters`, in `order`.
    pub fn search(&self, filters: &SearchFilters, order: SortOrder) -> Vec<Build> {
        self.with_index(|idx| idx.search(filters, order).into_iter().cloned().collect())
    }

    /// The repos having builds.
    pub fn repos(&self) -> Vec<String> {
        self.with_index(|idx| idx.repos().into_iter().map(str::to_owned).collect())
    }

    /// Index changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<IndexEvent> {
        self.with_index(BuildIndex::subscribe)
    }

    /// The builds matching `filters` now and the changes from then on, with
    /// no gap and no overlap (both taken under the same lock): what
    /// `GET /build-events` needs.
    pub fn snapshot_and_subscribe(
        &self,
        filters: &SearchFilters,
        order: SortOrder,
    ) -> (Vec<Build>, broadcast::Receiver<IndexEvent>) {
        self.with_index(|idx| {
            let rx = idx.subscribe();
            (idx.search(filters, order).into_iter().cloned().collect(), rx)
        })
    }

    /// The counts of `GET /status`.
    pub fn status_counts(&self) -> StatusCounts {
        self.with_index(|idx| idx.status_counts(&self.shared.settings.limits()))
    }

    /// True while the controller loop runs (false once it ended: shut
    /// down, or, against its design, panicked).
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// True while both watch streams are subscribed and listed (false
    /// before the first listing and while an ended stream is resubscribed).
    pub fn watches_current(&self) -> bool {
        self.shared.watching.load(Ordering::Acquire)
    }

    /// True once both streams delivered their first full listing.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits until [`ControllerHandle::is_ready`] (returns at once if the
    /// controller stopped).
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        // An error means the loop is gone: nothing to wait for.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// True when, after the last batch, no action ran, none awaited its
    /// effect and no command waited (tests use it to detect quiescence).
    pub fn is_idle(&self) -> bool {
        self.shared.idle.load(Ordering::Acquire)
    }

    /// Undeploying builds whose cleanup job failed (they stay undeploying
    /// until someone looks).
    pub fn cleanup_failures(&self) -> Vec<String> {
        self.shared
            .cleanup_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// What the controller did so far.
    pub fn stats(&self) -> ControllerStats {
        let c = &self.shared.counters;
        ControllerStats {
            batches: c.batches.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            actions_started: c.actions_started.load(Ordering::Relaxed),
            actions_failed: c.actions_failed.load(Ordering::Relaxed),
            actions_panicked: c.actions_panicked.load(Ordering::Relaxed),
            watch_restarts: c.watch_restarts.load(Ordering::Relaxed),
            idle_stops: c.idle_stops.load(Ordering::Relaxed),
        }
    }

    /// Ended actions by kind and outcome, sorted by kind then outcome.
    pub fn action_counts(&self) -> Vec<ActionCount> {
        self.shared
            .counters
            .by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&(kind, outcome), &count)| ActionCount { kind, outcome, count })
            .collect()
    }

    /// The settings the controller runs with.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.shared.settings
    }

    /// The build's init log (straight from the cluster).
    pub async fn init_log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        self.shared.cluster.init_log(build_name).await
    }

    /// The build's log (straight from the cluster).
    pub async fn log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        self.shared.cluster.log(build_name).await
    }

    /// The end of one of the build's logs (straight from the cluster; see
    /// [`Cluster::log_tail`]).
    pub async fn log_tail(
        &self,
        build_name: &str,
        source: crate::LogSource,
        limit_bytes: usize,
    ) -> ClusterResult<Option<crate::LogTail>> {
        self.shared.cluster.log_tail(build_name, source, limit_bytes).await
    }

    /// Follows one of the build's logs (straight from the cluster; see
    /// [`Cluster::follow_log`]).
    pub async fn follow_log(
        &self,
        build_name: &str,
        source: crate::LogSource,
    ) -> ClusterResult<Option<crate::LogFollow>> {
        self.shared.cluster.follow_log(build_name, source).await
    }

    /// Stops the loop at once, aborting running actions (like a crash: the
    /// cluster keeps whatever they did so far), and waits for it to end.
    pub async fn shutdown(&self) {
        // An error means the loop is already gone.
        let _ = self.commands.send(Command::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            // The loop never panics; a JoinError would mean it was aborted.
            let _ = task.await;
        }
    }
}
