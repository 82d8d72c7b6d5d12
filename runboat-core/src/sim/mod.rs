//! [`SimCluster`]: an in-memory [`Cluster`] for tests and benchmarks
//! (feature `testing`; never in production builds).
//!
//! It models what the controller relies on: Deployments whose available
//! replicas follow the spec after [`SimConfig::scale_delay`], the
//! `runboat/cleanup` finalizer and deletion timestamps, init and cleanup
//! Jobs that stay pending, then run for a scripted time and succeed or fail
//! as scripted per build ([`SimCluster::script_init`]), the build's other
//! resources (Service, Ingress, PVC… as one flag), and logs. Timers use
//! tokio's clock, so under `#[tokio::test(start_paused = true)]` a
//! simulation of hours runs in milliseconds and is deterministic for a seed.
//!
//! # Faults ([`Faults`], switchable at any time with [`SimCluster::set_faults`])
//!
//! - failing calls: by probability (seeded), half of them after the effect
//!   took place (like a timeout on the way back), and scripted ones with
//!   [`SimCluster::fail_next`] (by method and count, any [`ClusterError`]);
//! - delayed calls (uniform random delay up to a maximum);
//! - delayed, hence reordered, events: events of different objects
//!   interleave arbitrarily, events of one object keep their order (the
//!   Kubernetes watch guarantee);
//! - duplicated events;
//! - stale Deployment events: an older version delivered after a newer
//!   one, the current one following a little later;
//! - forced watch restarts ([`SimCluster::restart_watches`]: every stream
//!   gets a fresh [`ClusterEvent::Relisted`]) and ended streams
//!   ([`SimCluster::end_watches`]);
//! - a controller restart needs nothing here: shut the controller down and
//!   spawn a new one on the same `SimCluster` (it is `Clone`; clones share
//!   the cluster).
//!
//! # Checks
//!
//! The sim watches what the controller does to it and records, at every
//! step, in [`SimReport`]: the peak number of pending/running init jobs, a
//! second init job for the same `todo` of a build, the deletion of the newest
//! build of a branch (the policies never do it; an explicit undeploy of a
//! branch build does, so tests doing that expect this entry), deleting the resources of a build whose Deployment is
//! live, init jobs for undeploying builds.
//!
//! # Contract check
//!
//! [`check_cluster_contract`] runs one build's lifecycle through any
//! [`Cluster`] and checks what the controller relies on; it is here so that
//! runboat-k8s can run it against kubesim.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use runboat_core::sim::{SimCluster, SimConfig};
//! use runboat_core::{Cluster, Controller, ControllerConfig, Settings, forge::NoForge};
//!
//! async fn demo(settings: Arc<Settings>) {
//! let sim = SimCluster::new(SimConfig::default());
//! let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
//! let handle = Controller::spawn(cluster, Arc::new(NoForge), settings, ControllerConfig::default());
//! handle.ready().await;
//! // … deploy commits through `handle`, then inspect `sim.deployments()`,
//! // `sim.jobs()` and `sim.report()`.
//! }
//! ```

mod contract;

pub use contract::check_cluster_contract;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, JobFacts, JobKind, JobPhase, KubefilesMode,
};
use crate::commit::CommitInfo;
use crate::contract::{
    ANNOTATION_DEFAULT_CONTAINER, ANNOTATION_GIT_COMMIT, ANNOTATION_INIT_STATUS,
    ANNOTATION_LAST_SCALED, ANNOTATION_PINNED, ANNOTATION_PR, ANNOTATION_REPO, ANNOTATION_ROUTE,
    ANNOTATION_TARGET_BRANCH, LABEL_BUILD, format_last_scaled,
};
use crate::rng::SeededRng;
use crate::status::{DeploymentFacts, InitStatus};

/// How a simulated Job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// `succeeded`.
    Succeed,
    /// `failed`.
    Fail,
}

/// The life of a simulated Job: `pending` for a while, `running` for a
/// while, then the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobScript {
    /// Time before the pod runs.
    pub pending: Duration,
    /// Running time.
    pub run: Duration,
    /// How it ends.
    pub outcome: JobOutcome,
}

impl JobScript {
    /// A job that succeeds after `run` (pending 1 s).
    pub fn succeed_after(run: Duration) -> JobScript {
        JobScript { pending: Duration::from_secs(1), run, outcome: JobOutcome::Succeed }
    }

    /// A job that fails after `run` (pending 1 s).
    pub fn fail_after(run: Duration) -> JobScript {
        JobScript { pending: Duration::from_secs(1), run, outcome: JobOutcome::Fail }
    }
}

/// Fault injection; [`Faults::default`] injects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Probability that a call fails with a transient error (half of them
    /// after the call took effect).
    pub call_failure_rate: f64,
    /// Each call waits a uniform random time up to this first.
    pub max_call_delay: Duration,
    /// Each event is delivered after a uniform random delay up to this
    /// (events of one object keep their order).
    pub max_event_delay: Duration,
    /// Probability that an event is delivered twice.
    pub duplicate_rate: f64,
    /// Probability that a Deployment change is followed by its previous
    /// version (stale), the current one following later.
    pub stale_rate: f64,
}

impl Faults {
    /// Every fault at once, at rates that keep a simulation progressing.
    pub fn chaos() -> Faults {
        Faults {
            call_failure_rate: 0.1,
            max_call_delay: Duration::from_millis(200),
            max_event_delay: Duration::from_millis(300),
            duplicate_rate: 0.1,
            stale_rate: 0.05,
        }
    }
}

/// The simulated cluster's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Time for status/available replicas to follow a new spec.
    pub scale_delay: Duration,
    /// Init jobs of builds without a script of their own.
    pub init_job: JobScript,
    /// Probability that an unscripted init job fails instead.
    pub init_failure_rate: f64,
    /// Cleanup jobs of builds without a script of their own.
    pub cleanup_job: JobScript,
    /// Faults to inject from the start.
    pub faults: Faults,
    /// When set, creating an init job while this many are pending or
    /// running is recorded as a violation (naming them).
    pub max_initializing: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            scale_delay: Duration::from_secs(2),
            init_job: JobScript::succeed_after(Duration::from_secs(30)),
            init_failure_rate: 0.0,
            cleanup_job: JobScript::succeed_after(Duration::from_secs(5)),
            faults: Faults::default(),
            max_initializing: None,
        }
    }
}

/// The [`Cluster`] methods, to script failures and read the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimMethod {
    ApplyKubefiles,
    Scale,
    SetInitStatus,
    DeleteDeployment,
    RemoveFinalizer,
    KillJobs,
    DeleteBuildResources,
    InitLog,
    Log,
    GetDeployment,
    SetPinned,
    SetRoute,
}

/// One call received (recorded before faults apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCall {
    pub method: SimMethod,
    pub build_name: String,
    /// The mode of `apply_kubefiles`.
    pub mode: Option<KubefilesMode>,
    /// The replicas of `scale`.
    pub replicas: Option<i32>,
    /// The status of `set_init_status`.
    pub init_status: Option<InitStatus>,
}

/// What the sim observed (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Most init jobs pending or running at the same time.
    pub peak_active_init_jobs: usize,
    /// Init jobs created.
    pub init_jobs_created: u64,
    /// Cleanup jobs created.
    pub cleanup_jobs_created: u64,
    /// Calls received.
    pub calls: u64,
    /// Calls that returned an injected error.
    pub injected_failures: u64,
    /// Events sent (duplicates and stale ones included).
    pub events_sent: u64,
    /// Builds that got a deletion timestamp or were deleted.
    pub undeployed: BTreeSet<String>,
    /// Broken invariants, in the order seen.
    pub violations: Vec<String>,
}

#[derive(Debug, Clone)]
struct Dep {
    commit: CommitInfo,
    init_status: InitStatus,
    spec: i32,
    status_replicas: i32,
    available: i32,
    last_scaled: Option<Timestamp>,
    created: Timestamp,
    deleting: Option<Timestamp>,
    finalizer: bool,
    /// Incremented by each apply of mode `deployment` (a new `todo`).
    todo_generation: u64,
    /// Incremented by each scale, so late replica updates are dropped.
    scale_generation: u64,
    /// `runboat/pinned`.
    pinned: bool,
    /// `runboat/route` (the sim has no Ingress: the annotation is the route).
    route: Option<crate::build::Route>,
}

#[derive(Debug, Clone)]
struct Job {
    facts: JobFacts,
    uid: u64,
}

struct Sub<T> {
    tx: mpsc::UnboundedSender<ClusterEvent<T>>,
    id: u64,
    epoch: u64,
    /// Delivery time of the last event per object (keeps per-object order).
    last_at: HashMap<String, Instant>,
}

struct State {
    config: SimConfig,
    faults: Faults,
    rng: SeededRng,
    start: Instant,
    base: Timestamp,
    deps: BTreeMap<String, Dep>,
    jobs: BTreeMap<String, Job>,
    resources: BTreeSet<String>,
    init_scripts: HashMap<String, JobScript>,
    cleanup_scripts: HashMap<String, JobScript>,
    fail_next: Vec<(SimMethod, u32, ClusterError)>,
    /// Init job generation per build (the `todo_generation` it ran for).
    init_generation: HashMap<String, u64>,
    dep_subs: Vec<Sub<DeploymentFacts>>,
    job_subs: Vec<Sub<JobFacts>>,
    last_dep_facts: HashMap<String, DeploymentFacts>,
    next_id: u64,
    /// Init jobs pending or running (kept in step by `set_job`).
    active_init: usize,
    report: SimReport,
    calls: Vec<SimCall>,
}

/// The simulated cluster (see the [module docs](self)). Clones share it.
#[derive(Clone)]
pub struct SimCluster {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SimCluster")
            .field("deployments", &s.deps.len())
            .field("jobs", &s.jobs.len())
            .finish_non_exhaustive()
    }
}

fn dep_name(build: &str) -> String {
    format!("{build}-odoo")
}

fn job_name(build: &str, kind: JobKind) -> String {
    format!("{build}-{}", kind.as_str())
}

impl State {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.chance(p)
    }

    fn up_to(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 { Duration::ZERO } else { Duration::from_millis(self.next_u64() % (ms + 1)) }
    }

    fn now(&self) -> Timestamp {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let secs = i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX / 2);
        // Whole seconds, as Kubernetes stores timestamps.
        Timestamp::from_second(self.base.as_second().saturating_add(secs)).unwrap_or(self.base)
    }

    fn dep_facts(&self, build: &str) -> Option<DeploymentFacts> {
        let d = self.deps.get(build)?;
        let c = &d.commit;
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_REPO.to_owned(), c.repo().to_owned());
        annotations.insert(ANNOTATION_TARGET_BRANCH.to_owned(), c.target_branch().to_owned());
        annotations.insert(ANNOTATION_PR.to_owned(), c.pr_annotation());
        annotations.insert(ANNOTATION_GIT_COMMIT.to_owned(), c.git_commit().to_owned());
        annotations.insert(ANNOTATION_INIT_STATUS.to_owned(), d.init_status.as_str().to_owned());
        annotations.insert(ANNOTATION_DEFAULT_CONTAINER.to_owned(), "odoo".to_owned());
        if let Some(at) = d.last_scaled {
            annotations.insert(ANNOTATION_LAST_SCALED.to_owned(), format_last_scaled(at));
        }
        if d.pinned {
            annotations.insert(ANNOTATION_PINNED.to_owned(), "true".to_owned());
        }
        if let Some(route) = d.route {
            annotations.insert(ANNOTATION_ROUTE.to_owned(), route.as_str().to_owned());
        }
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_BUILD.to_owned(), build.to_owned());
        Some(DeploymentFacts {
            name: dep_name(build),
            annotations,
            labels,
            spec_replicas: Some(d.spec),
            status_replicas: Some(d.status_replicas),
            available_replicas: (d.available > 0).then_some(d.available),
            deletion_timestamp: d.deleting,
            creation_timestamp: Some(d.created),
            available_since: None,
        })
    }

    fn all_dep_facts(&self) -> Vec<DeploymentFacts> {
        self.deps.keys().filter_map(|b| self.dep_facts(b)).collect()
    }

    fn all_job_facts(&self) -> Vec<JobFacts> {
        self.jobs.values().map(|j| j.facts.clone()).collect()
    }

    fn counts_as_active_init(job: &JobFacts) -> bool {
        job.kind == JobKind::Initialize && !job.deleting && job.phase.is_active()
    }

    /// Inserts, replaces (`Some`) or removes (`None`) a job, keeping the
    /// active init job count in step.
    fn set_job(&mut self, name: &str, job: Option<Job>) -> Option<Job> {
        if job.as_ref().is_some_and(|j| State::counts_as_active_init(&j.facts)) {
            self.active_init += 1;
        }
        let old = match job {
            Some(job) => self.jobs.insert(name.to_owned(), job),
            None => self.jobs.remove(name),
        };
        if old.as_ref().is_some_and(|j| State::counts_as_active_init(&j.facts)) {
            self.active_init -= 1;
        }
        old
    }

    fn violation(&mut self, what: String) {
        tracing::error!(violation = what, "sim invariant broken");
        self.report.violations.push(what);
    }
}

/// Sends `event` about `object` to every live subscriber of `subs`, with
/// the configured delays and duplicates.
fn deliver<T: Clone + Send + 'static>(
    state: &Arc<Mutex<State>>,
    s: &mut State,
    which: fn(&mut State) -> &mut Vec<Sub<T>>,
    object: &str,
    event: ClusterEvent<T>,
) {
    let faults = s.faults;
    let now = Instant::now();
    let count = which(s).len();
    for i in 0..count {
        let copies = if s.chance(faults.duplicate_rate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = s.up_to(faults.max_event_delay);
            s.report.events_sent += 1;
            let sub = &mut which(s)[i];
            if delay.is_zero() && sub.last_at.get(object).is_none_or(|at| *at <= now) {
                sub.last_at.insert(object.to_owned(), now);
                // A closed receiver is removed below.
                let _ = sub.tx.send(event.clone());
                continue;
            }
            let at = match sub.last_at.get(object) {
                Some(last) => (now + delay).max(*last + Duration::from_millis(1)),
                None => now + delay,
            };
            sub.last_at.insert(object.to_owned(), at);
            let (id, epoch) = (sub.id, sub.epoch);
            let state = state.clone();
            let event = event.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(sub) = which(&mut s).iter().find(|x| x.id == id && x.epoch == epoch) {
                    let _ = sub.tx.send(event);
                }
            });
        }
    }
    which(s).retain(|sub| !sub.tx.is_closed());
}

fn dep_subs(s: &mut State) -> &mut Vec<Sub<DeploymentFacts>> {
    &mut s.dep_subs
}

fn job_subs(s: &mut State) -> &mut Vec<Sub<JobFacts>> {
    &mut s.job_subs
}

impl SimCluster {
    /// An empty cluster.
    pub fn new(config: SimConfig) -> SimCluster {
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap_or(Timestamp::UNIX_EPOCH);
        let state = State {
            faults: config.faults,
            rng: SeededRng::new(config.seed ^ 0xa076_1d64_78bd_642f),
            config,
            start: Instant::now(),
            base,
            deps: BTreeMap::new(),
            jobs: BTreeMap::new(),
            resources: BTreeSet::new(),
            init_scripts: HashMap::new(),
            cleanup_scripts: HashMap::new(),
            fail_next: Vec::new(),
            init_generation: HashMap::new(),
            dep_subs: Vec::new(),
            job_subs: Vec::new(),
            last_dep_facts: HashMap::new(),
            next_id: 0,
            active_init: 0,
            report: SimReport::default(),
            calls: Vec::new(),
        };
        SimCluster { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the faults injected from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// The init job of `build_name` will follow `script`.
    pub fn script_init(&self, build_name: &str, script: JobScript) {
        self.lock().init_scripts.insert(build_name.to_owned(), script);
    }

    /// The cleanup job of `build_name` will follow `script`.
    pub fn script_cleanup(&self, build_name: &str, script: JobScript) {
        self.lock().cleanup_scripts.insert(build_name.to_owned(), script);
    }

    /// The next `count` calls of `method` fail with `error` (before any
    /// effect).
    pub fn fail_next(&self, method: SimMethod, count: u32, error: ClusterError) {
        self.lock().fail_next.push((method, count, error));
    }

    /// Forces every watch to restart: pending delayed events are dropped and
    /// every stream receives a fresh [`ClusterEvent::Relisted`].
    pub fn restart_watches(&self) {
        let mut s = self.lock();
        let deps = s.all_dep_facts();
        let jobs = s.all_job_facts();
        for sub in &mut s.dep_subs {
            sub.epoch += 1;
            sub.last_at.clear();
            let _ = sub.tx.send(ClusterEvent::Relisted(deps.clone()));
        }
        for sub in &mut s.job_subs {
            sub.epoch += 1;
            sub.last_at.clear();
            let _ = sub.tx.send(ClusterEvent::Relisted(jobs.clone()));
        }
        s.report.events_sent += 2;
    }

    /// Ends every stream (the consumer has to subscribe again).
    pub fn end_watches(&self) {
        let mut s = self.lock();
        s.dep_subs.clear();
        s.job_subs.clear();
    }

    /// Adds a Deployment as if it already existed, named as runboat names
    /// it, with its resources, and announces it.
    pub fn insert_deployment(
        &self,
        commit: &CommitInfo,
        init_status: InitStatus,
        replicas: i32,
        created: Timestamp,
    ) -> String {
        self.insert_deployment_named(&commit.build_name(), commit, init_status, replicas, created)
    }

    /// Adds a Deployment named `build_name` as if it already existed (e.g.
    /// created by the Python runboat, which names builds `b` + a UUID),
    /// with its resources, and announces it.
    pub fn insert_deployment_named(
        &self,
        build_name: &str,
        commit: &CommitInfo,
        init_status: InitStatus,
        replicas: i32,
        created: Timestamp,
    ) -> String {
        let build = build_name.to_owned();
        let mut s = self.lock();
        s.deps.insert(
            build.clone(),
            Dep {
                commit: commit.clone(),
                init_status,
                spec: replicas,
                status_replicas: replicas,
                available: replicas,
                last_scaled: None,
                created,
                deleting: None,
                finalizer: true,
                todo_generation: 1,
                scale_generation: 0,
                pinned: false,
                route: None,
            },
        );
        s.resources.insert(build.clone());
        self.emit_dep(&mut s, &build);
        build
    }

    /// Every Deployment now.
    pub fn deployments(&self) -> Vec<DeploymentFacts> {
        self.lock().all_dep_facts()
    }

    /// The Deployment of `build_name` now.
    pub fn deployment(&self, build_name: &str) -> Option<DeploymentFacts> {
        self.lock().dep_facts(build_name)
    }

    /// Every Job now.
    pub fn jobs(&self) -> Vec<JobFacts> {
        self.lock().all_job_facts()
    }

    /// True while the build's other resources (Service, Ingress, PVC…)
    /// exist.
    pub fn has_resources(&self, build_name: &str) -> bool {
        self.lock().resources.contains(build_name)
    }

    /// True while the build's Deployment carries the finalizer.
    pub fn has_finalizer(&self, build_name: &str) -> bool {
        self.lock().deps.get(build_name).is_some_and(|d| d.finalizer)
    }

    /// The simulated wall clock now (what `runboat/last-scaled` gets): pass
    /// it as `ControllerConfig::wall_clock_start` so idle stop runs on the
    /// same clock.
    pub fn wall_now(&self) -> Timestamp {
        self.lock().now()
    }

    /// What the sim observed so far.
    pub fn report(&self) -> SimReport {
        self.lock().report.clone()
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<SimCall> {
        self.lock().calls.clone()
    }

    /// Forgets the call log (long simulations).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    fn emit_dep(&self, s: &mut State, build: &str) {
        match s.dep_facts(build) {
            Some(facts) => {
                let prev = s.last_dep_facts.insert(build.to_owned(), facts.clone());
                deliver(&self.state, s, dep_subs, build, ClusterEvent::Applied(facts));
                let stale_rate = s.faults.stale_rate;
                if let Some(prev) = prev
                    && s.chance(stale_rate)
                {
                    deliver(&self.state, s, dep_subs, build, ClusterEvent::Applied(prev));
                    self.resend_current_later(s, build);
                }
            }
            None => {
                if let Some(last) = s.last_dep_facts.remove(build) {
                    deliver(&self.state, s, dep_subs, build, ClusterEvent::Deleted(last));
                }
            }
        }
    }

    /// After a stale event, the current state follows (as a real watch
    /// would eventually deliver it).
    fn resend_current_later(&self, s: &mut State, build: &str) {
        let delay = Duration::from_millis(5) + s.up_to(Duration::from_millis(50));
        let this = self.clone();
        let build = build.to_owned();
        // After everything already scheduled for this object (the stale
        // event included), and nothing of this object may overtake it.
        let latest = s.dep_subs.iter().filter_map(|sub| sub.last_at.get(&build)).max().copied();
        let mut after = Instant::now() + delay;
        if let Some(latest) = latest {
            after = after.max(latest + Duration::from_millis(1));
        }
        for sub in &mut s.dep_subs {
            sub.last_at.insert(build.clone(), after);
        }
        tokio::spawn(async move {
            tokio::time::sleep_until(after).await;
            let mut s = this.lock();
            let event = match s.dep_facts(&build) {
                Some(f) => ClusterEvent::Applied(f),
                None => match s.last_dep_facts.get(&build) {
                    Some(f) => ClusterEvent::Deleted(f.clone()),
                    None => return,
                },
            };
            for sub in &mut s.dep_subs {
                let _ = sub.tx.send(event.clone());
            }
        });
    }

    fn emit_job(&self, s: &mut State, name: &str, deleted: Option<JobFacts>) {
        let event = match (s.jobs.get(name), deleted) {
            (_, Some(gone)) => ClusterEvent::Deleted(gone),
            (Some(job), None) => ClusterEvent::Applied(job.facts.clone()),
            (None, None) => return,
        };
        deliver(&self.state, s, job_subs, name, event);
    }

    /// Records the call, then decides its injected delay and failure.
    async fn enter(&self, call: SimCall) -> ClusterResult<bool> {
        let (delay, fail, after) = {
            let mut s = self.lock();
            s.report.calls += 1;
            let method = call.method;
            s.calls.push(call);
            let delay = s.faults.max_call_delay;
            let delay = s.up_to(delay);
            let mut fail = None;
            if let Some(slot) = s.fail_next.iter_mut().find(|(m, n, _)| *m == method && *n > 0) {
                slot.1 -= 1;
                fail = Some(slot.2.clone());
            }
            s.fail_next.retain(|(_, n, _)| *n > 0);
            let mut after = false;
            let rate = s.faults.call_failure_rate;
            if fail.is_none() && s.chance(rate) {
                fail =
                    Some(ClusterError::Transient("injected: connection reset".to_owned().into()));
                after = s.chance(0.5);
            }
            if fail.is_some() {
                s.report.injected_failures += 1;
            }
            (delay, fail, after)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fail {
            Some(e) if !after => Err(e),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    fn call(method: SimMethod, build_name: &str) -> SimCall {
        SimCall {
            method,
            build_name: build_name.to_owned(),
            mode: None,
            replicas: None,
            init_status: None,
        }
    }

    fn fail_after(fail: bool) -> ClusterResult<()> {
        if fail {
            Err(ClusterError::Transient(
                "injected: timeout after the call took effect".to_owned().into(),
            ))
        } else {
            Ok(())
        }
    }

    fn subscribe<T: Clone + Send + 'static>(
        &self,
        which: fn(&mut State) -> &mut Vec<Sub<T>>,
        listing: fn(&State) -> Vec<T>,
    ) -> BoxStream<'static, ClusterEvent<T>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.lock();
        let _ = tx.send(ClusterEvent::Relisted(listing(&s)));
        s.report.events_sent += 1;
        s.next_id += 1;
        let id = s.next_id;
        which(&mut s).push(Sub { tx, id, epoch: 0, last_at: HashMap::new() });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed()
    }

    fn schedule_replicas(&self, build: &str, generation: u64, delay: Duration) {
        let this = self.clone();
        let build = build.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut s = this.lock();
            let Some(d) = s.deps.get_mut(&build) else { return };
            if d.scale_generation != generation {
                return;
            }
            d.status_replicas = d.spec;
            d.available = d.spec;
            this.emit_dep(&mut s, &build);
        });
    }

    fn create_job(&self, s: &mut State, build: &str, kind: JobKind) {
        let name = job_name(build, kind);
        if s.jobs.get(&name).is_some_and(|j| !j.facts.deleting) {
            // `kubectl apply` of an unchanged Job does nothing.
            return;
        }
        let script = match kind {
            JobKind::Initialize => {
                let generation = s.deps.get(build).map_or(0, |d| d.todo_generation);
                if s.deps.get(build).is_some_and(|d| d.deleting.is_some()) {
                    s.violation(format!("init job created for undeploying build {build}"));
                }
                if s.init_generation.insert(build.to_owned(), generation) == Some(generation) {
                    s.violation(format!("second init job for one todo of {build}"));
                }
                s.report.init_jobs_created += 1;
                match s.init_scripts.get(build) {
                    Some(script) => *script,
                    None => {
                        let mut script = s.config.init_job;
                        let rate = s.config.init_failure_rate;
                        if s.chance(rate) {
                            script.outcome = JobOutcome::Fail;
                        }
                        script
                    }
                }
            }
            JobKind::Cleanup => {
                s.report.cleanup_jobs_created += 1;
                s.cleanup_scripts.get(build).copied().unwrap_or(s.config.cleanup_job)
            }
        };
        s.next_id += 1;
        let uid = s.next_id;
        let facts = JobFacts {
            name: name.clone(),
            build_name: build.to_owned(),
            kind,
            phase: JobPhase::Pending,
            deleting: false,
            started: None,
            finished: None,
        };
        s.set_job(&name, Some(Job { facts, uid }));
        s.report.peak_active_init_jobs = s.report.peak_active_init_jobs.max(s.active_init);
        if s.config.max_initializing.is_some_and(|max| s.active_init > max) {
            let active: Vec<String> = s
                .jobs
                .values()
                .filter(|j| State::counts_as_active_init(&j.facts))
                .map(|j| format!("{}:{:?}", j.facts.build_name, j.facts.phase))
                .collect();
            s.violation(format!("more init jobs than max_initializing: {active:?}"));
        }
        self.emit_job(s, &name, None);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(script.pending).await;
            if !this.advance_job(&name, uid, JobPhase::Running) {
                return;
            }
            tokio::time::sleep(script.run).await;
            let end = match script.outcome {
                JobOutcome::Succeed => JobPhase::Succeeded,
                JobOutcome::Fail => JobPhase::Failed,
            };
            this.advance_job(&name, uid, end);
        });
    }

    fn advance_job(&self, name: &str, uid: u64, phase: JobPhase) -> bool {
        let mut s = self.lock();
        match s.jobs.get(name) {
            Some(job) if job.uid == uid && !job.facts.deleting => {
                let mut job = job.clone();
                let now = s.now();
                job.facts.phase = phase;
                match phase {
                    JobPhase::Running => job.facts.started = Some(now),
                    JobPhase::Succeeded | JobPhase::Failed => job.facts.finished = Some(now),
                    JobPhase::Pending => {}
                }
                s.set_job(name, Some(job));
                self.emit_job(&mut s, name, None);
                true
            }
            _ => false,
        }
    }

    fn delete_jobs(&self, s: &mut State, build: &str, kind: Option<JobKind>) {
        let names: Vec<String> = s
            .jobs
            .values()
            .filter(|j| j.facts.build_name == build && kind.is_none_or(|k| j.facts.kind == k))
            .map(|j| j.facts.name.clone())
            .collect();
        for name in names {
            if let Some(mut job) = s.jobs.get(&name).cloned() {
                job.facts.deleting = true;
                s.set_job(&name, Some(job));
            }
            self.emit_job(s, &name, None);
            if let Some(job) = s.set_job(&name, None) {
                self.emit_job(s, &name, Some(job.facts));
            }
        }
    }

    fn delete_dep(&self, s: &mut State, build: &str) {
        let Some(d) = s.deps.get(build) else { return };
        if d.deleting.is_none() && d.commit.is_branch() {
            let newest = s
                .deps
                .iter()
                .filter(|(_, o)| {
                    o.commit.is_branch()
                        && o.commit.repo() == d.commit.repo()
                        && o.commit.target_branch() == d.commit.target_branch()
                })
                .max_by(|a, b| (a.1.created, a.0).cmp(&(b.1.created, b.0)))
                .map(|(n, _)| n.clone());
            if newest.as_deref() == Some(build) {
                s.violation(format!("newest build of its branch undeployed: {build}"));
            }
        }
        s.report.undeployed.insert(build.to_owned());
        let now = s.now();
        let Some(d) = s.deps.get_mut(build) else { return };
        if d.finalizer {
            if d.deleting.is_none() {
                d.deleting = Some(now);
                self.emit_dep(s, build);
            }
        } else {
            s.deps.remove(build);
            self.emit_dep(s, build);
        }
    }
}

#[async_trait]
impl Cluster for SimCluster {
    fn deployment_events(&self) -> BoxStream<'static, ClusterEvent<DeploymentFacts>> {
        self.subscribe(dep_subs, State::all_dep_facts)
    }

    fn job_events(&self) -> BoxStream<'static, ClusterEvent<JobFacts>> {
        self.subscribe(job_subs, State::all_job_facts)
    }

    async fn apply_kubefiles(
        &self,
        build_name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()> {
        let build = build_name.to_owned();
        let mut call = SimCluster::call(SimMethod::ApplyKubefiles, &build);
        call.mode = Some(mode);
        let fail = self.enter(call).await?;
        let mut s = self.lock();
        match mode {
            KubefilesMode::Deployment => {
                let now = s.now();
                match s.deps.get_mut(&build) {
                    Some(d) if d.deleting.is_some() => {}
                    Some(d) => {
                        // Re-applying mode `deployment` (a reset) is a new
                        // `todo`, even when the build was still to do.
                        d.todo_generation += 1;
                        d.init_status = InitStatus::Todo;
                        d.spec = 0;
                        d.scale_generation += 1;
                        let generation = d.scale_generation;
                        s.resources.insert(build.clone());
                        self.emit_dep(&mut s, &build);
                        let delay = s.config.scale_delay;
                        self.schedule_replicas(&build, generation, delay);
                    }
                    None => {
                        // A build deployed again under a name seen before
                        // (its commit redeployed after an undeploy) starts a
                        // new `todo`, after those of its previous life.
                        let todo_generation =
                            s.init_generation.get(&build).map_or(1, |generation| generation + 1);
                        s.deps.insert(
                            build.clone(),
                            Dep {
                                commit: commit.clone(),
                                init_status: InitStatus::Todo,
                                spec: 0,
                                status_replicas: 0,
                                available: 0,
                                last_scaled: None,
                                created: now,
                                deleting: None,
                                finalizer: true,
                                todo_generation,
                                scale_generation: 0,
                                pinned: false,
                                route: None,
                            },
                        );
                        s.resources.insert(build.clone());
                        self.emit_dep(&mut s, &build);
                    }
                }
            }
            KubefilesMode::Initialize => self.create_job(&mut s, &build, JobKind::Initialize),
            KubefilesMode::Cleanup => self.create_job(&mut s, &build, JobKind::Cleanup),
            KubefilesMode::Start | KubefilesMode::Stop => {}
        }
        SimCluster::fail_after(fail)
    }

    async fn scale(&self, build_name: &str, replicas: i32) -> ClusterResult<()> {
        let mut call = SimCluster::call(SimMethod::Scale, build_name);
        call.replicas = Some(replicas);
        let fail = self.enter(call).await?;
        let mut s = self.lock();
        let now = s.now();
        let delay = s.config.scale_delay;
        let Some(d) = s.deps.get_mut(build_name) else {
            return Err(ClusterError::NotFound(format!("deployment of {build_name}").into()));
        };
        d.spec = replicas;
        d.last_scaled = Some(now);
        d.scale_generation += 1;
        let generation = d.scale_generation;
        self.emit_dep(&mut s, build_name);
        self.schedule_replicas(build_name, generation, delay);
        SimCluster::fail_after(fail)
    }

    async fn set_init_status(&self, build_name: &str, status: InitStatus) -> ClusterResult<()> {
        let mut call = SimCluster::call(SimMethod::SetInitStatus, build_name);
        call.init_status = Some(status);
        let fail = self.enter(call).await?;
        let mut s = self.lock();
        let Some(d) = s.deps.get_mut(build_name) else {
            return Err(ClusterError::NotFound(format!("deployment of {build_name}").into()));
        };
        if status == InitStatus::Todo && d.init_status != InitStatus::Todo {
            d.todo_generation += 1;
        }
        d.init_status = status;
        self.emit_dep(&mut s, build_name);
        SimCluster::fail_after(fail)
    }

    async fn delete_deployment(&self, build_name: &str) -> ClusterResult<()> {
        let fail = self.enter(SimCluster::call(SimMethod::DeleteDeployment, build_name)).await?;
        let mut s = self.lock();
        self.delete_dep(&mut s, build_name);
        SimCluster::fail_after(fail)
    }

    async fn remove_finalizer(&self, build_name: &str) -> ClusterResult<()> {
        let fail = self.enter(SimCluster::call(SimMethod::RemoveFinalizer, build_name)).await?;
        let mut s = self.lock();
        if let Some(d) = s.deps.get_mut(build_name)
            && d.finalizer
        {
            d.finalizer = false;
            if d.deleting.is_some() {
                s.deps.remove(build_name);
            }
            self.emit_dep(&mut s, build_name);
        }
        SimCluster::fail_after(fail)
    }

    async fn kill_jobs(&self, build_name: &str, kind: JobKind) -> ClusterResult<()> {
        let fail = self.enter(SimCluster::call(SimMethod::KillJobs, build_name)).await?;
        let mut s = self.lock();
        self.delete_jobs(&mut s, build_name, Some(kind));
        SimCluster::fail_after(fail)
    }

    async fn delete_build_resources(&self, build_name: &str) -> ClusterResult<()> {
        let fail =
            self.enter(SimCluster::call(SimMethod::DeleteBuildResources, build_name)).await?;
        let mut s = self.lock();
        if s.deps.get(build_name).is_some_and(|d| d.deleting.is_none()) {
            s.violation(format!("resources of live build {build_name} deleted"));
        }
        s.resources.remove(build_name);
        self.delete_jobs(&mut s, build_name, None);
        self.delete_dep(&mut s, build_name);
        SimCluster::fail_after(fail)
    }

    async fn init_log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        let fail = self.enter(SimCluster::call(SimMethod::InitLog, build_name)).await?;
        SimCluster::fail_after(fail)?;
        let s = self.lock();
        Ok(s.jobs
            .contains_key(&job_name(build_name, JobKind::Initialize))
            .then(|| format!("\u{1b}[32mINFO\u{1b}[0m initializing {build_name}\n")))
    }

    async fn log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        let fail = self.enter(SimCluster::call(SimMethod::Log, build_name)).await?;
        SimCluster::fail_after(fail)?;
        let s = self.lock();
        Ok(s.deps
            .get(build_name)
            .filter(|d| d.available > 0)
            .map(|_| format!("odoo serving {build_name}\n")))
    }

    async fn get_deployment(&self, build_name: &str) -> ClusterResult<Option<DeploymentFacts>> {
        let fail = self.enter(SimCluster::call(SimMethod::GetDeployment, build_name)).await?;
        SimCluster::fail_after(fail)?;
        Ok(self.lock().dep_facts(build_name))
    }

    async fn set_route(&self, build_name: &str, route: crate::build::Route) -> ClusterResult<()> {
        let fail = self.enter(SimCluster::call(SimMethod::SetRoute, build_name)).await?;
        let mut s = self.lock();
        let Some(d) = s.deps.get_mut(build_name) else {
            return Err(ClusterError::NotFound(format!("deployment of {build_name}").into()));
        };
        d.route = Some(route);
        self.emit_dep(&mut s, build_name);
        SimCluster::fail_after(fail)
    }

    async fn set_pinned(&self, build_name: &str, pinned: bool) -> ClusterResult<()> {
        let fail = self.enter(SimCluster::call(SimMethod::SetPinned, build_name)).await?;
        let mut s = self.lock();
        let Some(d) = s.deps.get_mut(build_name) else {
            return Err(ClusterError::NotFound(format!("deployment of {build_name}").into()));
        };
        d.pinned = pinned;
        self.emit_dep(&mut s, build_name);
        SimCluster::fail_after(fail)
    }
}
