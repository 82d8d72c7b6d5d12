//! Where every scheduling decision is made: [`decide`], one pure function
//! from what the controller knows (the build index, the job table, what is
//! in flight, the settings, the queued user requests, the clock) to what it
//! should do now ([`Step`]: answers to requests and [`Task`]s to run).
//!
//! It covers SPEC's lifecycle: deploy, start, stop, reset and undeploy
//! requests; the job handling (init job running, succeeded or failed,
//! cleanup succeeded or failed, orphaned jobs, init status `started` without
//! a job); the limits (initialize within `max_initializing`, stop above
//! `max_started`, undeploy above `max_deployed`); cleanup of undeploying
//! builds; and retries (a build in backoff is busy until its backoff ends).
//!
//! It does nothing itself and is cheap: it walks the builds touched since
//! the last step and the front of the index's ordered sets, never the whole
//! index. The controller loop (`controller::run`) only does I/O around it:
//! it feeds events into the index and the [`JobTable`], records spawned and
//! finished actions in [`InFlight`], calls [`decide`], and carries out the
//! step.

mod in_flight;
mod jobs;
pub mod supersede;
mod task;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::build::Build;
use crate::cluster::{JobKind, JobPhase};
use crate::commit::CommitInfo;
use crate::index::{BuildIndex, SearchFilters, SortOrder};
use crate::settings::Settings;
use crate::status::{BuildStatus, InitStatus};

pub use crate::settings::Limits;
pub use in_flight::{Ended, InFlight};
pub use jobs::JobTable;
pub use task::{Superseded, Target, Task, TaskKind};

/// A user request waiting in the controller's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Deploy a commit (no-op when it already has a build).
    Deploy(CommitInfo),
    /// Start a `stopped`/`stopping` build.
    Start(String),
    /// Stop a `started` build.
    Stop(String),
    /// Reset a build that is not undeploying.
    Reset(String),
    /// Undeploy a build that is not undeploying.
    Undeploy(String),
    /// Undeploy every matching build that is not undeploying.
    UndeployMatching(SearchFilters),
    /// Pin a build that is not undeploying (within `max_pinned`).
    Pin(String),
    /// Unpin a build.
    Unpin(String),
}

/// Why a request was accepted but did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredReason {
    /// `deploy_commit` of a commit that already has this build (whatever
    /// its state).
    AlreadyDeployed {
        /// The existing build.
        build_name: String,
    },
    /// The build's status does not allow the command (start from
    /// `stopped`/`stopping` only, stop from `started` only, no reset or
    /// undeploy of an `undeploying` build).
    Status(BuildStatus),
}

impl fmt::Display for IgnoredReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoredReason::AlreadyDeployed { build_name } => {
                write!(f, "commit already deployed as {build_name}")
            }
            IgnoredReason::Status(status) => write!(f, "build is {status}"),
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The cluster actions were applied (their effect shows in the index
    /// once the events arrive).
    Done,
    /// Nothing to do, and why.
    Ignored(IgnoredReason),
    /// No build of that name.
    NotFound,
    /// `deploy_commit` of a repo/branch no settings rule supports.
    Unsupported,
    /// A pin refused: `max_pinned` builds are pinned already.
    PinLimit {
        /// The limit.
        max_pinned: usize,
    },
}

/// What to do with one queued request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run this task; answer the request when it ends.
    Run(Task),
    /// Answer now; the request is done.
    Answer(CommandOutcome),
    /// Its build is busy: keep it, in order, for a later step.
    Wait,
    /// Answer `Done` now but keep the request (without its reply) for a
    /// later step: a deploy of a commit whose previous build is still
    /// undeploying (a PR closed and reopened during its cleanup).
    AcceptAndWait,
    /// An undeploy of every matching build: answer with `count`; the
    /// undeploys in `run` are tasks of this step (so no policy or
    /// initialization of this step takes those builds first); queue an
    /// [`Request::Undeploy`] at the back for each build of `later` (busy,
    /// or no capacity left).
    Expand {
        /// How many builds match.
        count: usize,
        /// Undeploys to run now.
        run: Vec<Task>,
        /// Builds to undeploy in a later step.
        later: Vec<String>,
    },
}

/// What the controller knows, as the step reads it.
#[derive(Debug, Clone, Copy)]
pub struct World<'a> {
    /// The builds.
    pub index: &'a BuildIndex,
    /// The runboat Jobs.
    pub jobs: &'a JobTable,
    /// The actions running or awaiting their effect.
    pub in_flight: &'a InFlight,
    /// Limits, `no_cleanup_job` and the supported repos/branches.
    pub settings: &'a Settings,
    /// Actions running at once, at most.
    pub max_concurrent_actions: usize,
    /// Undeploying builds whose cleanup job failed and was reported (the
    /// step does not run their cleanup again until the failed Job goes).
    pub cleanup_failures: &'a BTreeSet<String>,
    /// The clock.
    pub now: Instant,
    /// The wall clock, on the same time base as `runboat/last-scaled`
    /// (idle stop compares them).
    pub wall_now: Timestamp,
    /// Whether this replica holds the leadership (always true without
    /// leader election). Only the leader makes scheduling decisions (job
    /// handling, limits, cleanup, initialization); requests are served by
    /// any replica, since their writes are idempotent and deterministic.
    pub leader: bool,
}

/// What the step decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// One verdict for each of the first `verdicts.len()` queued requests,
    /// in order (the rest of the queue was not looked at: no capacity).
    pub verdicts: Vec<Verdict>,
    /// Tasks of the job handling and the policies, to run now.
    pub tasks: Vec<Task>,
    /// Builds to look at again in the next step (no capacity this time).
    pub revisit: Vec<String>,
    /// Undeploying builds whose cleanup Job failed, newly seen: report them
    /// loudly, once (with their commit).
    pub cleanup_failed: Vec<Target>,
    /// Builds no longer in a failed cleanup (the Job or the build went).
    pub cleanup_cleared: Vec<String>,
    /// How many of `tasks` are stops of idle builds (for the metrics).
    pub idle_stops: usize,
    /// With idle stop on: how long until the next started build's session
    /// ends (the loop wakes then to stop it), when one is running.
    pub next_idle_stop: Option<std::time::Duration>,
}

impl Step {
    /// Every task of the step, those of requests included.
    pub fn all_tasks(&self) -> impl Iterator<Item = &Task> {
        self.verdicts
            .iter()
            .flat_map(|v| match v {
                Verdict::Run(t) => std::slice::from_ref(t),
                Verdict::Expand { run, .. } => run.as_slice(),
                _ => &[],
            })
            .chain(&self.tasks)
    }
}

/// The step's own bookkeeping while deciding: builds given a task in this
/// step count as busy, and spawned tasks use up capacity.
struct Decider<'w, 'a> {
    world: &'w World<'a>,
    claimed: HashSet<String>,
    capacity: usize,
    cleanup_failures: HashSet<String>,
    /// Pins given a task in this step.
    pins: usize,
    step: Step,
}

impl Decider<'_, '_> {
    fn busy(&self, name: &str) -> bool {
        self.claimed.contains(name) || self.world.in_flight.busy(name, self.world.now)
    }

    fn has_capacity(&self) -> bool {
        self.capacity > 0
    }

    /// Takes a slot for `task`; the caller has checked capacity and busy.
    fn claim(&mut self, task: &Task) {
        self.capacity = self.capacity.saturating_sub(1);
        self.claimed.insert(task.build_name().to_owned());
    }

    fn run(&mut self, task: Task) {
        self.claim(&task);
        self.step.tasks.push(task);
    }

    fn request(&mut self, request: &Request) -> Verdict {
        let index = self.world.index;
        match request {
            Request::Deploy(commit) => {
                if !self.world.settings.is_supported(commit.repo(), commit.target_branch()) {
                    return Verdict::Answer(CommandOutcome::Unsupported);
                }
                let name = commit.build_name();
                if let Some(existing) = index.get_by_commit(commit).or_else(|| index.get(&name)) {
                    if existing.status == BuildStatus::Undeploying {
                        return Verdict::AcceptAndWait;
                    }
                    let build_name = existing.name.clone();
                    return Verdict::Answer(CommandOutcome::Ignored(
                        IgnoredReason::AlreadyDeployed { build_name },
                    ));
                }
                if self.busy(&name) {
                    return Verdict::Wait;
                }
                let task = Task::Deploy(Target { name, commit: commit.clone() });
                self.claim(&task);
                Verdict::Run(task)
            }
            Request::Start(name) => self.build_request(name, Task::Start, |s| {
                matches!(s, BuildStatus::Stopped | BuildStatus::Stopping)
            }),
            Request::Stop(name) => {
                self.build_request(name, Task::Stop, |s| s == BuildStatus::Started)
            }
            Request::Reset(name) => {
                self.build_request(name, Task::Reset, |s| s != BuildStatus::Undeploying)
            }
            Request::Undeploy(name) => self.build_request(
                name,
                |t: Target| Task::Undeploy(t.name),
                |s| s != BuildStatus::Undeploying,
            ),
            Request::Pin(name) => self.pin_request(name, true),
            Request::Unpin(name) => self.pin_request(name, false),
            Request::UndeployMatching(filters) => {
                let names: Vec<String> = index
                    .search(filters, SortOrder::Asc)
                    .into_iter()
                    .filter(|b| b.status != BuildStatus::Undeploying)
                    .map(|b| b.name.clone())
                    .collect();
                let count = names.len();
                let (mut run, mut later) = (Vec::new(), Vec::new());
                for name in names {
                    if self.has_capacity() && !self.busy(&name) {
                        let task = Task::Undeploy(name);
                        self.claim(&task);
                        run.push(task);
                    } else {
                        later.push(name);
                    }
                }
                Verdict::Expand { count, run, later }
            }
        }
    }

    fn build_request(
        &mut self,
        name: &str,
        task: impl FnOnce(Target) -> Task,
        allowed: impl FnOnce(BuildStatus) -> bool,
    ) -> Verdict {
        let Some(build) = self.world.index.get(name) else {
            return Verdict::Answer(CommandOutcome::NotFound);
        };
        if !allowed(build.status) {
            return Verdict::Answer(CommandOutcome::Ignored(IgnoredReason::Status(build.status)));
        }
        if self.busy(name) {
            return Verdict::Wait;
        }
        let task = task(Target::of(build));
        self.claim(&task);
        Verdict::Run(task)
    }

    /// A pin or unpin: idempotent (pinning a pinned build is done), and a
    /// pin is refused when `max_pinned` builds are pinned or being pinned.
    fn pin_request(&mut self, name: &str, pin: bool) -> Verdict {
        let index = self.world.index;
        let Some(build) = index.get(name) else {
            return Verdict::Answer(CommandOutcome::NotFound);
        };
        if pin && build.status == BuildStatus::Undeploying {
            return Verdict::Answer(CommandOutcome::Ignored(IgnoredReason::Status(build.status)));
        }
        if self.busy(name) {
            return Verdict::Wait;
        }
        if build.pinned == pin {
            return Verdict::Answer(CommandOutcome::Done);
        }
        let max_pinned = self.world.settings.max_pinned;
        let pinned =
            index.count_pinned() + self.world.in_flight.count_of(TaskKind::Pin) + self.pins;
        if pin && pinned >= max_pinned {
            return Verdict::Answer(CommandOutcome::PinLimit { max_pinned });
        }
        let task = if pin { Task::Pin(name.to_owned()) } else { Task::Unpin(name.to_owned()) };
        if pin {
            self.pins += 1;
        }
        self.claim(&task);
        Verdict::Run(task)
    }

    fn fail_cleanup(&mut self, build: &Build) {
        if self.cleanup_failures.insert(build.name.clone()) {
            self.step.cleanup_failed.push(Target::of(build));
        }
    }

    fn clear_cleanup_failure(&mut self, name: &str) {
        if self.cleanup_failures.remove(name) {
            self.step.cleanup_cleared.push(name.to_owned());
        }
    }

    /// SPEC's job handling for one build touched since the last step.
    fn job_task(&mut self, name: &str) -> Option<Task> {
        let jobs = self.world.jobs;
        let Some(build) = self.world.index.get(name) else {
            self.clear_cleanup_failure(name);
            return jobs.live(name, None).next().is_some().then(|| Task::DeleteOrphan(name.into()));
        };
        if build.status == BuildStatus::Undeploying {
            match jobs.phase(name, JobKind::Cleanup) {
                Some(JobPhase::Succeeded) => return Some(Task::CleanupSucceeded(name.to_owned())),
                Some(JobPhase::Failed) => self.fail_cleanup(build),
                // Someone deleted the failed cleanup job: cleanup runs again
                // (the cleanup policy picks the build up).
                None => self.clear_cleanup_failure(name),
                Some(JobPhase::Pending | JobPhase::Running) => {}
            }
            return None;
        }
        self.clear_cleanup_failure(name);
        let Some(phase) = jobs.phase(name, JobKind::Initialize) else {
            // Init status `started` but no init job at all (deleted by hand,
            // or by a TTL while the controller was down): without this the
            // build would hold an initialization slot forever.
            let no_job = !jobs.all(name).any(|j| j.kind == JobKind::Initialize);
            return (build.init_status == InitStatus::Started && no_job)
                .then(|| Task::Requeue(Target::of(build)));
        };
        let target = Target::of(build);
        match (phase, build.init_status) {
            (JobPhase::Running, InitStatus::Todo) => Some(Task::InitStarted(target)),
            (JobPhase::Succeeded, InitStatus::Todo | InitStatus::Started) => {
                Some(Task::InitSucceeded(target))
            }
            (JobPhase::Failed, InitStatus::Todo | InitStatus::Started) => {
                Some(Task::InitFailed(target))
            }
            _ => None,
        }
    }

    /// Supersede (see [`supersede`]) in the groups of the builds touched:
    /// a group's supersede decision only changes when one of its builds
    /// does. Returns how many builds it undeploys.
    fn supersede(&mut self, touched: &BTreeSet<String>) -> usize {
        let rule = supersede::Rule::of(self.world.settings);
        if rule.is_off() {
            return 0;
        }
        let index = self.world.index;
        let groups: BTreeSet<supersede::GroupKey> =
            touched.iter().filter_map(|n| index.get(n)).map(supersede::group_key).collect();
        let mut issued = 0;
        for (repo, target_branch, pr) in groups {
            let group = index.group(&repo, &target_branch, pr);
            for (old, by) in supersede::superseded(&group, rule) {
                // A busy build is touched again when its action ends or
                // its effect shows.
                if self.busy(&old.name) {
                    continue;
                }
                if !self.has_capacity() {
                    self.step.revisit.push(old.name.clone());
                    continue;
                }
                self.run(Task::Supersede(Superseded {
                    target: Target::of(old),
                    by: by.name.clone(),
                    init_status: old.init_status,
                }));
                issued += 1;
            }
        }
        issued
    }

    /// The limits and cleanup: stop the excess started builds, undeploy
    /// the excess deployed ones (less those superseded in this step),
    /// clean up the undeploying ones.
    fn policies(&mut self, superseded: usize) {
        let index = self.world.index;
        let limits = self.world.settings.limits();
        let no_cleanup_job = self.world.settings.no_cleanup_job;
        let stop_excess =
            index.count_by_status(BuildStatus::Started).saturating_sub(limits.max_started);
        let undeploy_excess =
            index.count_deployed().saturating_sub(limits.max_deployed).saturating_sub(superseded);
        // Idle stop: started builds (never pinned ones: the index keeps
        // them out of its started set) whose session since their last
        // start ran out, after the excess over `max_started`.
        let idle: Vec<&Build> = match self.world.settings.idle_stop_after {
            Some(session) => {
                let (expired, next) = idle_builds(index, session, self.world.wall_now);
                self.step.next_idle_stop = next;
                expired
            }
            None => Vec::new(),
        };
        let excess = index.oldest_started(stop_excess);
        let excess_names: HashSet<&str> = excess.iter().map(|b| b.name.as_str()).collect();
        let idle_only: Vec<&Build> =
            idle.into_iter().filter(|b| !excess_names.contains(b.name.as_str())).collect();
        let idle_names: HashSet<&str> = idle_only.iter().map(|b| b.name.as_str()).collect();
        let candidates: Vec<Task> = excess
            .into_iter()
            .chain(idle_only.iter().copied())
            .map(|b| Task::Stop(Target::of(b)))
            .chain(
                index
                    .oldest_stopped(undeploy_excess)
                    .into_iter()
                    .map(|b| Task::Undeploy(b.name.clone())),
            )
            .chain(
                index
                    .to_cleanup()
                    .into_iter()
                    .filter(|b| {
                        !self.cleanup_failures.contains(&b.name)
                            && (no_cleanup_job
                                || !self.world.jobs.has_live(&b.name, JobKind::Cleanup))
                    })
                    .map(|b| Task::Cleanup(Target::of(b))),
            )
            .filter(|t| !self.busy(t.build_name()))
            .collect();
        for task in candidates {
            if !self.has_capacity() {
                break;
            }
            if idle_names.contains(task.build_name()) {
                self.step.idle_stops += 1;
            }
            self.run(task);
        }
    }

    /// Init jobs for the oldest `todo` builds, within `max_initializing`.
    fn initialize(&mut self) {
        let index = self.world.index;
        let jobs = self.world.jobs;
        let max = self.world.settings.limits().max_initializing;
        // What already holds an initialization slot: builds whose init
        // status is `started`, builds with a pending or running init Job
        // (a lagging Deployment event may not show `started` yet), and
        // initialize actions whose Job has not shown yet.
        let started = index.count_by_init_status(InitStatus::Started);
        let is_started =
            |name: &str| index.get(name).is_some_and(|b| b.init_status == InitStatus::Started);
        let extra_jobs = jobs.active_init().filter(|n| !is_started(n)).count();
        let extra_actions = self
            .world
            .in_flight
            .initializing()
            .filter(|n| !is_started(n) && !jobs.is_initializing(n))
            .count();
        let mut room = max.saturating_sub(started + extra_jobs + extra_actions).min(self.capacity);
        if room == 0 {
            return;
        }
        // Candidates are walked in growing windows of the todo set, so a
        // front of busy builds cannot hide the ones behind it, and a large
        // queue costs only what is taken.
        let mut limit = room * 2 + 8;
        let mut chosen: Vec<Task> = Vec::new();
        loop {
            let candidates = index.to_initialize(limit);
            chosen.clear();
            for b in &candidates {
                if chosen.len() == room {
                    break;
                }
                if !self.busy(&b.name) && !jobs.has_live(&b.name, JobKind::Initialize) {
                    chosen.push(Task::Initialize(Target::of(b)));
                }
            }
            if chosen.len() == room || candidates.len() < limit {
                break;
            }
            limit = limit.saturating_mul(2);
        }
        for task in chosen {
            if room == 0 || !self.has_capacity() {
                break;
            }
            room -= 1;
            self.run(task);
        }
    }
}

/// The started builds whose idle session ran out at `now` (oldest first;
/// pinned builds are not in the index's started set), and how long until
/// the next one's does.
fn idle_builds(
    index: &BuildIndex,
    session: std::time::Duration,
    now: Timestamp,
) -> (Vec<&Build>, Option<std::time::Duration>) {
    let session = jiff::SignedDuration::try_from(session).unwrap_or(jiff::SignedDuration::MAX);
    let mut expired = Vec::new();
    let mut limit = 16;
    loop {
        let started = index.oldest_started(limit);
        expired.clear();
        for b in &started {
            let end = b.last_scaled_or_created().checked_add(session).unwrap_or(Timestamp::MAX);
            if end <= now {
                expired.push(*b);
            } else {
                let left = now.duration_until(end).unsigned_abs();
                return (expired, Some(left));
            }
        }
        if started.len() < limit {
            return (expired, None);
        }
        limit = limit.saturating_mul(2);
    }
}

/// The scheduling step: see the [module docs](self).
///
/// `touched` are the builds whose facts changed since the last step (their
/// Deployment or Jobs, or an action of theirs ended or timed out): only they
/// get SPEC's job handling. `requests` is the controller's queue, front
/// first; the step looks at requests while it has capacity, in order.
///
/// Guarantees (checked by the property tests in `policy::tests`): at most
/// one task per build, never one for a busy build, never more tasks than
/// the free capacity, never an init job beyond `max_initializing` or for an
/// undeploying build, never more stops or undeploys than the excess over
/// `max_started`/`max_deployed` (plus, for stops, the builds whose idle
/// session ran out), never the newest build of a branch undeployed by the
/// limit, never a pinned build stopped, undeployed or superseded but by a
/// request, never more than `max_pinned` pinned builds by its pins, never a
/// supersede of a build not superseded (so never of the newest successfully
/// initialized build of a pull request or branch), no task but those of
/// requests when not
/// [`World::leader`]; and once its tasks are recorded as in flight, a
/// second step over the same facts issues nothing new.
pub fn decide<'r>(
    world: &World<'_>,
    touched: &BTreeSet<String>,
    requests: impl IntoIterator<Item = &'r Request>,
) -> Step {
    let capacity =
        world.max_concurrent_actions.max(1).saturating_sub(world.in_flight.running_count());
    let mut d = Decider {
        world,
        claimed: HashSet::new(),
        capacity,
        cleanup_failures: world.cleanup_failures.iter().cloned().collect(),
        pins: 0,
        step: Step::default(),
    };

    // 1. User requests, in arrival order, while there is capacity.
    for request in requests {
        if !d.has_capacity() {
            break;
        }
        let verdict = d.request(request);
        d.step.verdicts.push(verdict);
    }

    // A follower serves requests only: every scheduling decision is the
    // leader's (a new leader touches every build, so nothing is lost).
    if !world.leader {
        return d.step;
    }

    // 2. Job handling for the builds touched.
    for name in touched {
        if d.busy(name) {
            continue;
        }
        if !d.has_capacity() {
            d.step.revisit.push(name.clone());
            continue;
        }
        if let Some(task) = d.job_task(name) {
            d.run(task);
        }
    }

    // 2b. Routing: with `wake_service`, a touched build whose Ingress does
    // not point where its status wants it; without, one still pointing at
    // the wake Service (the setting was removed) goes back to itself.
    let wake_on = world.settings.wake_service.is_some();
    {
        for name in touched {
            if d.busy(name) {
                continue;
            }
            let Some(build) = world.index.get(name) else { continue };
            if build.status == BuildStatus::Undeploying {
                continue;
            }
            let wanted = if wake_on {
                crate::build::Route::wanted(build.status)
            } else if build.route == Some(crate::build::Route::Wake) {
                crate::build::Route::Build
            } else {
                continue;
            };
            if build.route == Some(wanted) {
                continue;
            }
            if !d.has_capacity() {
                d.step.revisit.push(name.clone());
                continue;
            }
            d.run(Task::Route(name.clone(), wanted));
        }
    }

    // 3. Supersede, limits and cleanup, then 4. initialization.
    let superseded = d.supersede(touched);
    d.policies(superseded);
    d.initialize();
    d.step
}
