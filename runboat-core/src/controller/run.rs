//! The loop itself (see the [controller docs](super)): inputs in, the pure
//! step ([`policy::decide`]) in the middle, effects out. Every decision is
//! made by the step; this file only feeds it and carries it out.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::build::Build;
use crate::cluster::{ClusterEvent, ClusterResult, JobFacts};
use crate::contract::LABEL_BUILD;
use crate::forge::Forge;
use crate::policy::{self, InFlight, JobTable, Request, Task, Verdict, World};
use crate::status::DeploymentFacts;

use super::effects::{Ctx, Jitter};
use super::{
    Command, CommandError, CommandOutcome, CommandResult, ControllerConfig, Reply, Shared,
};

type TaskOutput = (String, ClusterResult<()>);

/// One input of the loop.
enum Input {
    Command(Option<Command>),
    Deployments(Option<ClusterEvent<DeploymentFacts>>),
    Jobs(Option<ClusterEvent<JobFacts>>),
    TaskDone(Result<(tokio::task::Id, TaskOutput), tokio::task::JoinError>),
    /// The leadership signal changed (`None`: its sender went away).
    Leadership(Option<bool>),
    Timer,
}

/// One spawned action: whom it is for, how to abort it, and whether it
/// serves a request (those survive a loss of leadership).
struct Spawned {
    build: String,
    abort: AbortHandle,
    request: bool,
}

/// One watch stream and whether its first listing is in.
struct Watch<T> {
    events: BoxStream<'static, ClusterEvent<T>>,
    listed: bool,
    /// When to subscribe again after the stream ended.
    resubscribe_at: Option<Instant>,
}

impl<T: Send + 'static> Watch<T> {
    fn new(events: BoxStream<'static, ClusterEvent<T>>) -> Watch<T> {
        Watch { events, listed: false, resubscribe_at: None }
    }

    fn ended(&mut self, what: &str, delay: Duration) {
        tracing::warn!("{what} event stream ended; subscribing again");
        self.events = futures::stream::pending().boxed();
        self.listed = false;
        self.resubscribe_at = Some(Instant::now() + delay);
    }
}

pub(super) struct Loop {
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    config: ControllerConfig,
    commands: mpsc::Receiver<Command>,
    deployments: Watch<DeploymentFacts>,
    jobs: Watch<JobFacts>,
    /// The data the step reads besides the index.
    job_table: JobTable,
    in_flight: InFlight,
    queue: VecDeque<(Request, Reply)>,
    /// Entries of `queue` that came from outside (not expansions), counted
    /// again after each step: the bound of `max_queued_requests`.
    queued_requests: usize,
    /// Builds to look at in the next step. (Ordered, so that a simulation
    /// replays identically for a seed.)
    touched: BTreeSet<String>,
    cleanup_failures: BTreeSet<String>,
    /// I/O bookkeeping: the spawned actions and whom to answer.
    tasks: JoinSet<TaskOutput>,
    task_ids: HashMap<tokio::task::Id, Spawned>,
    /// The leadership signal to follow (`None`: none, either without leader
    /// election, always the leader, or because its sender went away, never
    /// the leader again).
    leadership: Option<watch::Receiver<bool>>,
    leader: bool,
    replies: HashMap<String, Reply>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    jitter: Jitter,
    stop: bool,
    /// The pending wake-up of idle stop, if any.
    idle_timer: Option<Instant>,
    /// The wall clock at `started` (see `ControllerConfig::wall_clock_start`).
    wall_start: jiff::Timestamp,
    started: Instant,
}

fn reply(reply: Reply, result: CommandResult) {
    // The caller may have gone away; nothing to do then. (A count is only
    // asked by `UndeployMatching`, whose verdict answers it directly, or
    // refused with an error.)
    match reply {
        Reply::Outcome(tx) => {
            let _ = tx.send(result);
        }
        Reply::Count(tx) => {
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        }
        Reply::None => {}
    }
}

/// True for an entry the loop queued itself: one of the undeploys an
/// undeploy-matching request expanded into.
fn is_expansion((request, reply): &(Request, Reply)) -> bool {
    matches!(request, Request::Undeploy(_)) && reply.is_none()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn build_label(facts: &DeploymentFacts) -> Option<&str> {
    facts.labels.get(LABEL_BUILD).map(String::as_str)
}

fn parse_build(facts: &DeploymentFacts) -> Option<Build> {
    match Build::from_deployment_facts(facts) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(deployment = facts.name, error = %crate::error::chain(&e), "ignoring deployment");
            None
        }
    }
}

impl Loop {
    pub(super) fn new(
        shared: Arc<Shared>,
        forge: Arc<dyn Forge>,
        config: ControllerConfig,
        commands: mpsc::Receiver<Command>,
        mut leadership: Option<watch::Receiver<bool>>,
    ) -> Loop {
        // Leadership held from the start needs no change to be seen.
        let leader = leadership.as_mut().is_none_or(|rx| *rx.borrow_and_update());
        let ctx = Arc::new(Ctx {
            cluster: shared.cluster.clone(),
            forge,
            settings: shared.settings.clone(),
            retry: config.retry,
            progress: shared.progress.clone(),
        });
        let deployments = Watch::new(shared.cluster.deployment_events());
        let jobs = Watch::new(shared.cluster.job_events());
        let jitter = Jitter::new(config.seed);
        Loop {
            shared,
            ctx,
            commands,
            deployments,
            jobs,
            job_table: JobTable::new(),
            in_flight: InFlight::new(),
            queue: VecDeque::new(),
            queued_requests: 0,
            touched: BTreeSet::new(),
            cleanup_failures: BTreeSet::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            leadership,
            leader,
            replies: HashMap::new(),
            timers: BinaryHeap::new(),
            jitter,
            stop: false,
            idle_timer: None,
            wall_start: config.wall_clock_start.unwrap_or_else(jiff::Timestamp::now),
            started: Instant::now(),
            config,
        }
    }

    /// The wall clock, counted on tokio's clock from the start.
    fn wall_now(&self, now: Instant) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(now.saturating_duration_since(self.started))
            .unwrap_or(jiff::SignedDuration::MAX);
        self.wall_start.checked_add(elapsed).unwrap_or(jiff::Timestamp::MAX)
    }

    pub(super) async fn run(mut self) {
        tracing::info!("controller started");
        while !self.stop {
            let input = self.next_input().await;
            self.handle(input);
            // Coalesce: take everything already there before deciding.
            let mut taken = 1;
            while taken < self.config.max_batch && !self.stop {
                let Some(input) = self.ready_input() else { break };
                self.handle(input);
                taken += 1;
            }
            if self.stop {
                break;
            }
            self.reconcile();
        }
        // Dropping the JoinSet aborts the running actions.
        self.tasks.abort_all();
        tracing::info!("controller stopped");
    }

    fn next_wake(&self) -> Option<Instant> {
        [
            self.timers.peek().map(|Reverse((at, _))| *at),
            self.deployments.resubscribe_at,
            self.jobs.resubscribe_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn next_input(&mut self) -> Input {
        let wake = self.next_wake();
        let has_tasks = !self.tasks.is_empty();
        let leadership = async {
            match self.leadership.as_mut() {
                Some(rx) => match rx.changed().await {
                    Ok(()) => Some(*rx.borrow_and_update()),
                    Err(_) => None,
                },
                None => std::future::pending().await,
            }
        };
        // Biased (no random branch order): everything ready is drained
        // before deciding anyway, and a fixed order keeps simulations
        // reproducible.
        tokio::select! {
            biased;
            leader = leadership => Input::Leadership(leader),
            Some(r) = self.tasks.join_next_with_id(), if has_tasks => Input::TaskDone(r),
            e = self.deployments.events.next() => Input::Deployments(e),
            e = self.jobs.events.next() => Input::Jobs(e),
            c = self.commands.recv() => Input::Command(c),
            () = sleep_until_opt(wake) => Input::Timer,
        }
    }

    /// An input that is available right now, if any.
    fn ready_input(&mut self) -> Option<Input> {
        if let Some(change) = self.leadership_change() {
            return Some(Input::Leadership(change));
        }
        if let Some(e) = self.deployments.events.next().now_or_never() {
            return Some(Input::Deployments(e));
        }
        if let Some(e) = self.jobs.events.next().now_or_never() {
            return Some(Input::Jobs(e));
        }
        if let Some(r) = self.tasks.try_join_next_with_id() {
            return Some(Input::TaskDone(r));
        }
        match self.commands.try_recv() {
            Ok(c) => Some(Input::Command(Some(c))),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Input::Command(None)),
            Err(mpsc::error::TryRecvError::Empty) => None,
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(None | Some(Command::Shutdown)) => self.stop = true,
            Input::Command(Some(Command::Request(request, answer))) => {
                if self.queued_requests >= self.config.max_queued_requests {
                    tracing::warn!(
                        queued = self.queued_requests,
                        "request queue full: refusing a request"
                    );
                    reply(answer, Err(CommandError::Busy));
                } else {
                    self.queued_requests += 1;
                    self.queue.push_back((request, answer));
                }
            }
            Input::Deployments(Some(e)) => self.on_deployment_event(e),
            Input::Deployments(None) => {
                self.deployments.ended("deployment", self.config.resubscribe_delay);
                self.update_ready();
            }
            Input::Jobs(Some(e)) => self.on_job_event(e),
            Input::Jobs(None) => {
                self.jobs.ended("job", self.config.resubscribe_delay);
                self.update_ready();
            }
            Input::TaskDone(r) => self.on_task_done(r),
            Input::Leadership(Some(leader)) => self.on_leadership(leader),
            Input::Leadership(None) => {
                // Stop following a closed channel (it would be ready
                // forever) and never lead again: nothing says we do.
                tracing::warn!("leadership signal gone: not leading");
                self.leadership = None;
                self.on_leadership(false);
            }
            Input::Timer => self.on_timer(),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, name))) = self.timers.pop() {
                // The idle timer has no build: it only makes a step.
                if name.is_empty() {
                    self.idle_timer = None;
                } else {
                    self.touched.insert(name);
                }
            }
        }
        if self.deployments.resubscribe_at.is_some_and(|at| at <= now) {
            self.deployments.resubscribe_at = None;
            self.deployments.events = self.shared.cluster.deployment_events();
        }
        if self.jobs.resubscribe_at.is_some_and(|at| at <= now) {
            self.jobs.resubscribe_at = None;
            self.jobs.events = self.shared.cluster.job_events();
        }
    }

    /// A change of the leadership signal not handled yet, if any (`Some(None)`:
    /// its sender went away).
    fn leadership_change(&mut self) -> Option<Option<bool>> {
        let rx = self.leadership.as_mut()?;
        match rx.has_changed() {
            Ok(true) => Some(Some(*rx.borrow_and_update())),
            Ok(false) => None,
            Err(_) => Some(None),
        }
    }

    /// Follows the leadership signal. Losing it aborts every running
    /// action that serves no request at once (so no scheduling write
    /// follows the step-down) and forgets it; gaining it touches every
    /// build, so the decisions are rebuilt from the index and the job table
    /// alone (the watches kept them current meanwhile).
    fn on_leadership(&mut self, leader: bool) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        if leader {
            tracing::info!("leadership gained: deciding for every build");
            let idx = self.shared.read_index();
            self.touched.extend(idx.iter().map(|b| b.name.clone()));
            drop(idx);
            self.touched.extend(self.job_table.builds().map(str::to_owned));
            return;
        }
        let aborted: Vec<tokio::task::Id> =
            self.task_ids.iter().filter(|(_, s)| !s.request).map(|(id, _)| *id).collect();
        tracing::warn!(aborted = aborted.len(), "leadership lost: scheduling stops");
        for id in aborted {
            if let Some(spawned) = self.task_ids.remove(&id) {
                spawned.abort.abort();
                self.in_flight.forget(&spawned.build);
                self.replies.remove(&spawned.build);
            }
        }
    }

    fn on_deployment_event(&mut self, event: ClusterEvent<DeploymentFacts>) {
        self.shared.counters.events.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let mut idx = shared.write_index();
        match event {
            ClusterEvent::Relisted(list) => {
                if self.deployments.listed {
                    self.shared.counters.watch_restarts.fetch_add(1, Ordering::Relaxed);
                }
                let parsed: Vec<(Build, Option<jiff::Timestamp>)> = list
                    .iter()
                    .filter_map(|f| Some((parse_build(f)?, f.available_since)))
                    .collect();
                let mut progress = self.shared.progress();
                for (b, available_since) in &parsed {
                    progress.deployment(b, *available_since);
                }
                drop(progress);
                let builds: Vec<Build> = parsed.into_iter().map(|(b, _)| b).collect();
                self.touched.extend(idx.iter().map(|b| b.name.clone()));
                self.touched.extend(builds.iter().map(|b| b.name.clone()));
                idx.replace_all(builds);
                if !self.deployments.listed {
                    tracing::debug!(builds = idx.len(), "deployments listed");
                }
                self.deployments.listed = true;
            }
            ClusterEvent::Applied(facts) => match Build::from_deployment_facts(&facts) {
                Ok(build) => {
                    self.touched.insert(build.name.clone());
                    self.shared.progress().deployment(&build, facts.available_since);
                    idx.upsert(build);
                }
                Err(e) => {
                    tracing::warn!(deployment = facts.name, error = %crate::error::chain(&e), "ignoring deployment");
                    if let Some(name) = build_label(&facts)
                        && idx.remove(name).is_some()
                    {
                        self.touched.insert(name.to_owned());
                    }
                }
            },
            ClusterEvent::Deleted(facts) => {
                if let Some(name) = build_label(&facts) {
                    idx.remove(name);
                    self.touched.insert(name.to_owned());
                }
            }
        }
        drop(idx);
        self.update_ready();
    }

    fn on_job_event(&mut self, event: ClusterEvent<JobFacts>) {
        self.shared.counters.events.fetch_add(1, Ordering::Relaxed);
        match event {
            ClusterEvent::Relisted(list) => {
                if self.jobs.listed {
                    self.shared.counters.watch_restarts.fetch_add(1, Ordering::Relaxed);
                }
                let mut progress = self.shared.progress();
                list.iter().for_each(|job| progress.job(job));
                drop(progress);
                self.touched.extend(self.job_table.replace_all(list));
                self.jobs.listed = true;
            }
            ClusterEvent::Applied(job) => {
                self.shared.progress().job(&job);
                self.touched.extend(self.job_table.insert(job));
            }
            ClusterEvent::Deleted(job) => self.touched.extend(self.job_table.remove(&job.name)),
        }
        self.update_ready();
    }

    fn update_ready(&mut self) {
        let watching = self.deployments.listed && self.jobs.listed;
        self.shared.watching.store(watching, Ordering::Release);
        if self.deployments.listed && self.jobs.listed && !*self.shared.ready.borrow() {
            tracing::info!("controller ready: deployments and jobs listed");
            self.shared.ready.send_replace(true);
        }
    }

    fn on_task_done(
        &mut self,
        result: Result<(tokio::task::Id, TaskOutput), tokio::task::JoinError>,
    ) {
        let (build, outcome) = match result {
            Ok((id, (build, r))) => {
                if self.task_ids.remove(&id).is_none() {
                    // Finished before the abort of a step-down reached it:
                    // its build was forgotten already.
                    return;
                }
                (build, r.map_err(CommandError::Cluster))
            }
            Err(e) => {
                let Some(Spawned { build, .. }) = self.task_ids.remove(&e.id()) else {
                    if !e.is_cancelled() {
                        tracing::error!(error = %e, "unknown action ended abnormally");
                    }
                    return;
                };
                if e.is_panic() {
                    self.shared.counters.actions_panicked.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(build, "action panicked (contained)");
                }
                (build, Err(CommandError::Panicked))
            }
        };
        let now = Instant::now();
        let backoff_max = self.config.failure_backoff_max;
        let jitter = &mut self.jitter;
        let Some(ended) = self.in_flight.end(
            &build,
            outcome.is_ok(),
            now,
            self.config.reflect_timeout,
            |failures| {
                // 1 s doubling per failure in a row, capped, with jitter.
                let ceiling = Duration::from_secs(1)
                    .saturating_mul(1u32.checked_shl(failures - 1).unwrap_or(u32::MAX))
                    .min(backoff_max);
                jitter.half_to_full(ceiling)
            },
        ) else {
            tracing::error!(build, "finished action was not recorded as running");
            return;
        };
        for at in ended.wake_at {
            self.timers.push(Reverse((at, build.clone())));
        }
        let kind = ended.kind.as_str();
        self.shared
            .counters
            .count_outcome(kind, outcome.as_ref().map_or_else(super::error_label, |()| "ok"));
        let answer = self.replies.remove(&build).unwrap_or(Reply::None);
        match outcome {
            Ok(()) => {
                tracing::debug!(build, action = kind, "action done");
                reply(answer, Ok(CommandOutcome::Done));
            }
            Err(e) => {
                self.shared.counters.actions_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    build,
                    action = kind,
                    error = %crate::error::chain(&e),
                    failures = ended.failures,
                    "action failed"
                );
                reply(answer, Err(e));
            }
        }
        self.touched.insert(build);
    }

    /// Decides (the pure step) and carries the decisions out.
    fn reconcile(&mut self) {
        self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        // The leadership is read right before deciding, so no step decides
        // on a leadership already lost.
        if let Some(change) = self.leadership_change() {
            self.handle(Input::Leadership(change));
        }
        let now = Instant::now();
        let touched = std::mem::take(&mut self.touched);
        let shared = self.shared.clone();
        let idx = shared.read_index();
        self.in_flight.settle(
            &idx,
            &self.job_table,
            &touched,
            now,
            self.shared.settings.no_cleanup_job,
        );
        if !(self.deployments.listed && self.jobs.listed) {
            // Nothing is decided on a partial view: keep everything for
            // when the listings are in.
            drop(idx);
            self.touched = touched;
            self.set_idle(now);
            return;
        }
        // A start, stop, reset or undeploy of one build whose caller went
        // away (the HTTP client hung up while the build was busy) is
        // dropped: nobody can make the queue hold what nobody waits for. A
        // deploy or an undeploy of matching builds is kept: a webhook that
        // stopped waiting (it answered "queued") still asked for it.
        self.queue.retain(|(request, r)| {
            matches!(request, Request::Deploy(_) | Request::UndeployMatching(_)) || !r.is_closed()
        });
        let world = World {
            index: &idx,
            jobs: &self.job_table,
            in_flight: &self.in_flight,
            settings: &self.shared.settings,
            max_concurrent_actions: self.config.max_concurrent_actions,
            cleanup_failures: &self.cleanup_failures,
            now,
            wall_now: self.wall_now(now),
            leader: self.leader,
        };
        let step = policy::decide(&world, &touched, self.queue.iter().map(|(r, _)| r));
        self.shared
            .progress()
            .absorb(&idx, &touched, |name| self.job_table.all(name).next().is_some());
        drop(idx);

        // Requests: the step looked at the front of the queue, in order.
        let mut kept = Vec::new();
        let mut undeploys = Vec::new();
        for verdict in step.verdicts {
            let Some((request, answer)) = self.queue.pop_front() else { break };
            match verdict {
                Verdict::Run(task) => self.spawn(task, answer, true, now),
                Verdict::Answer(outcome) => reply(answer, Ok(outcome)),
                Verdict::Wait => kept.push((request, answer)),
                Verdict::AcceptAndWait => {
                    reply(answer, Ok(CommandOutcome::Done));
                    // One deferred deploy per commit is enough: repeated
                    // webhooks must not grow the queue.
                    let known = |q: &(Request, Reply)| q.0 == request && q.1.is_none();
                    if !kept.iter().any(known) && !self.queue.iter().any(known) {
                        kept.push((request, Reply::None));
                    }
                }
                Verdict::Expand { count, run, later } => {
                    if let Reply::Count(tx) = answer {
                        let _ = tx.send(Ok(count));
                    }
                    undeploys.extend(run);
                    self.queue
                        .extend(later.into_iter().map(|n| (Request::Undeploy(n), Reply::None)));
                }
            }
        }
        for entry in kept.into_iter().rev() {
            self.queue.push_front(entry);
        }
        self.queued_requests = self.queue.iter().filter(|e| !is_expansion(e)).count();
        for task in undeploys {
            self.spawn(task, Reply::None, true, now);
        }
        for task in step.tasks {
            self.spawn(task, Reply::None, false, now);
        }
        self.touched.extend(step.revisit);
        if step.idle_stops > 0 {
            self.shared.counters.idle_stops.fetch_add(step.idle_stops as u64, Ordering::Relaxed);
        }
        if let Some(left) = step.next_idle_stop {
            // `last-scaled` has whole seconds: wake a second late rather
            // than early. One pending idle timer is enough.
            let at = now + left + Duration::from_secs(1);
            if self.idle_timer.is_none_or(|t| t > at || t <= now) {
                self.idle_timer = Some(at);
                self.timers.push(Reverse((at, String::new())));
            }
        }
        let failures_changed = !(step.cleanup_failed.is_empty() && step.cleanup_cleared.is_empty());
        for target in step.cleanup_failed {
            tracing::error!(
                build = target.name,
                commit = %target.commit,
                "CLEANUP JOB FAILED: the build stays undeploying until someone looks"
            );
            self.cleanup_failures.insert(target.name);
        }
        for name in step.cleanup_cleared {
            self.cleanup_failures.remove(&name);
        }
        if failures_changed {
            *self
                .shared
                .cleanup_failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = self.cleanup_failures.clone();
        }
        self.set_idle(now);
    }

    /// Spawns `task`; `request` says whether it serves a request (it then
    /// survives a loss of leadership).
    fn spawn(&mut self, task: Task, answer: Reply, request: bool, now: Instant) {
        let build = task.build_name().to_owned();
        tracing::debug!(build, action = task.kind().as_str(), "action");
        self.shared.counters.actions_started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.begin(&task, now, self.config.reflect_timeout);
        if !matches!(answer, Reply::None) {
            self.replies.insert(build.clone(), answer);
        }
        let ctx = self.ctx.clone();
        let mut jitter = Jitter::new(self.jitter.next_u64());
        let abort = self.tasks.spawn(async move {
            let r = ctx.run(&task, &mut jitter).await;
            (task.build_name().to_owned(), r)
        });
        self.task_ids.insert(abort.id(), Spawned { build, abort, request });
    }

    fn set_idle(&self, now: Instant) {
        let idle = self.in_flight.is_quiet(now) && self.queue.is_empty() && self.touched.is_empty();
        self.shared.idle.store(idle, Ordering::Release);
    }
}
