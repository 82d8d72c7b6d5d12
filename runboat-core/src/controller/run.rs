//! The loop itself (see the [controller docs](super)).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::build::Build;
use crate::cluster::{ClusterEvent, ClusterResult, JobFacts, JobKind, JobPhase};
use crate::contract::LABEL_BUILD;
use crate::forge::Forge;
use crate::index::BuildIndex;
use crate::policy;
use crate::status::{BuildStatus, DeploymentFacts, InitStatus};

use super::task::{Ctx, Jitter, Task, TaskKind};
use super::{
    Command, CommandError, CommandOutcome, CommandResult, ControllerConfig, IgnoredReason, Reply,
    Shared,
};

type TaskOutput = (String, ClusterResult<()>);

/// One input of the loop.
enum Input {
    Command(Option<Command>),
    Deployments(Option<ClusterEvent<DeploymentFacts>>),
    Jobs(Option<ClusterEvent<JobFacts>>),
    TaskDone(Result<(tokio::task::Id, TaskOutput), tokio::task::JoinError>),
    Timer,
}

/// An action running for a build.
struct Running {
    kind: TaskKind,
    reply: Option<Reply>,
}

/// A finished action whose effect has not shown in the events yet.
struct Awaiting {
    kind: TaskKind,
    deadline: Instant,
}

/// A build in backoff after failed actions.
struct Backoff {
    until: Instant,
    failures: u32,
}

pub(super) struct Loop {
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    config: ControllerConfig,
    commands: mpsc::Receiver<Command>,
    deployments: BoxStream<'static, ClusterEvent<DeploymentFacts>>,
    jobs: BoxStream<'static, ClusterEvent<JobFacts>>,
    deployments_listed: bool,
    jobs_listed: bool,
    resubscribe_deployments_at: Option<Instant>,
    resubscribe_jobs_at: Option<Instant>,
    /// Every runboat Job by name.
    job_table: HashMap<String, JobFacts>,
    /// Job names per build.
    jobs_by_build: HashMap<String, BTreeSet<String>>,
    /// Builds with a pending or running (not deleting) init job.
    active_init: HashSet<String>,
    running: HashMap<String, Running>,
    awaiting: HashMap<String, Awaiting>,
    /// Builds with an initialize action running, or finished (even with
    /// an error: the Job may exist all the same) and its Job not seen yet,
    /// until the given deadline. They count against `max_initializing`.
    initializing_actions: HashMap<String, Instant>,
    backoff: HashMap<String, Backoff>,
    /// Commands not handled yet (not ready, build busy, or no capacity).
    queued: VecDeque<Command>,
    tasks: JoinSet<TaskOutput>,
    task_ids: HashMap<tokio::task::Id, String>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Builds to look at in the next reconcile.
    /// (Ordered, so that a simulation replays identically for a seed.)
    dirty: BTreeSet<String>,
    reported_cleanup_failures: HashSet<String>,
    jitter: Jitter,
    stop: bool,
}

/// Priority of job phases when a build has several jobs of a kind: a
/// definite outcome wins.
fn phase_rank(phase: JobPhase) -> u8 {
    match phase {
        JobPhase::Succeeded => 3,
        JobPhase::Failed => 2,
        JobPhase::Running => 1,
        JobPhase::Pending => 0,
    }
}

fn build_label(facts: &DeploymentFacts) -> Option<&str> {
    facts.labels.get(LABEL_BUILD).map(String::as_str)
}

fn reply(reply: Option<Reply>, result: CommandResult) {
    if let Some(tx) = reply {
        // The caller may have gone away; nothing to do then.
        let _ = tx.send(result);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Loop {
    pub(super) fn new(
        shared: Arc<Shared>,
        forge: Arc<dyn Forge>,
        config: ControllerConfig,
        commands: mpsc::Receiver<Command>,
    ) -> Loop {
        let ctx = Arc::new(Ctx {
            cluster: shared.cluster.clone(),
            forge,
            settings: shared.settings.clone(),
            retry: config.retry,
        });
        let deployments = shared.cluster.deployment_events();
        let jobs = shared.cluster.job_events();
        let jitter = Jitter::new(config.seed);
        Loop {
            shared,
            ctx,
            config,
            commands,
            deployments,
            jobs,
            deployments_listed: false,
            jobs_listed: false,
            resubscribe_deployments_at: None,
            resubscribe_jobs_at: None,
            job_table: HashMap::new(),
            jobs_by_build: HashMap::new(),
            active_init: HashSet::new(),
            running: HashMap::new(),
            awaiting: HashMap::new(),
            initializing_actions: HashMap::new(),
            backoff: HashMap::new(),
            queued: VecDeque::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: BTreeSet::new(),
            reported_cleanup_failures: HashSet::new(),
            jitter,
            stop: false,
        }
    }

    pub(super) async fn run(mut self) {
        tracing::info!("controller started");
        while !self.stop {
            let input = self.next_input().await;
            self.handle(input);
            // Coalesce: take everything already there before reconciling.
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
            self.resubscribe_deployments_at,
            self.resubscribe_jobs_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn next_input(&mut self) -> Input {
        let wake = self.next_wake();
        let has_tasks = !self.tasks.is_empty();
        // Biased (no random branch order): everything ready is drained
        // before reconciling anyway, and a fixed order keeps simulations
        // reproducible.
        tokio::select! {
            biased;
            Some(r) = self.tasks.join_next_with_id(), if has_tasks => Input::TaskDone(r),
            e = self.deployments.next() => Input::Deployments(e),
            e = self.jobs.next() => Input::Jobs(e),
            c = self.commands.recv() => Input::Command(c),
            () = sleep_until_opt(wake) => Input::Timer,
        }
    }

    /// An input that is available right now, if any.
    fn ready_input(&mut self) -> Option<Input> {
        if let Some(e) = self.deployments.next().now_or_never() {
            return Some(Input::Deployments(e));
        }
        if let Some(e) = self.jobs.next().now_or_never() {
            return Some(Input::Jobs(e));
        }
        if let Some(r) = self.tasks.try_join_next_with_id() {
            return Some(Input::TaskDone(r));
        }
        match self.commands.try_recv() {
            Ok(c) => return Some(Input::Command(Some(c))),
            Err(mpsc::error::TryRecvError::Disconnected) => return Some(Input::Command(None)),
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        None
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(None) | Input::Command(Some(Command::Shutdown)) => self.stop = true,
            Input::Command(Some(c)) => self.queued.push_back(c),
            Input::Deployments(Some(e)) => self.on_deployment_event(e),
            Input::Deployments(None) => {
                tracing::warn!("deployment event stream ended; subscribing again");
                self.deployments = futures::stream::pending().boxed();
                self.deployments_listed = false;
                self.resubscribe_deployments_at =
                    Some(Instant::now() + self.config.resubscribe_delay);
            }
            Input::Jobs(Some(e)) => self.on_job_event(e),
            Input::Jobs(None) => {
                tracing::warn!("job event stream ended; subscribing again");
                self.jobs = futures::stream::pending().boxed();
                self.jobs_listed = false;
                self.resubscribe_jobs_at = Some(Instant::now() + self.config.resubscribe_delay);
            }
            Input::TaskDone(r) => self.on_task_done(r),
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
                self.dirty.insert(name);
            }
        }
        if self.resubscribe_deployments_at.is_some_and(|at| at <= now) {
            self.resubscribe_deployments_at = None;
            self.deployments = self.shared.cluster.deployment_events();
        }
        if self.resubscribe_jobs_at.is_some_and(|at| at <= now) {
            self.resubscribe_jobs_at = None;
            self.jobs = self.shared.cluster.job_events();
        }
    }

    fn on_deployment_event(&mut self, event: ClusterEvent<DeploymentFacts>) {
        self.shared.counters.events.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let mut idx = shared.write_index();
        match event {
            ClusterEvent::Relisted(list) => {
                if self.deployments_listed {
                    self.shared.counters.watch_restarts.fetch_add(1, Ordering::Relaxed);
                }
                let builds: Vec<Build> = list.iter().filter_map(parse_build).collect();
                self.dirty.extend(idx.iter().map(|b| b.name.clone()));
                self.dirty.extend(builds.iter().map(|b| b.name.clone()));
                idx.replace_all(builds);
                if !self.deployments_listed {
                    tracing::debug!(builds = idx.len(), "deployments listed");
                }
                self.deployments_listed = true;
            }
            ClusterEvent::Applied(facts) => match Build::from_deployment_facts(&facts) {
                Ok(build) => {
                    self.dirty.insert(build.name.clone());
                    idx.upsert(build);
                }
                Err(e) => {
                    tracing::warn!(deployment = facts.name, error = %e, "ignoring deployment");
                    if let Some(name) = build_label(&facts)
                        && idx.remove(name).is_some()
                    {
                        self.dirty.insert(name.to_owned());
                    }
                }
            },
            ClusterEvent::Deleted(facts) => {
                if let Some(name) = build_label(&facts) {
                    idx.remove(name);
                    self.dirty.insert(name.to_owned());
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
                if self.jobs_listed {
                    self.shared.counters.watch_restarts.fetch_add(1, Ordering::Relaxed);
                }
                self.dirty.extend(self.jobs_by_build.keys().cloned());
                self.job_table.clear();
                self.jobs_by_build.clear();
                self.active_init.clear();
                for job in list {
                    self.insert_job(job);
                }
                self.jobs_listed = true;
            }
            ClusterEvent::Applied(job) => self.insert_job(job),
            ClusterEvent::Deleted(job) => self.remove_job(&job.name),
        }
        self.update_ready();
    }

    fn insert_job(&mut self, job: JobFacts) {
        let name = job.name.clone();
        let build = job.build_name.clone();
        if let Some(old) = self.job_table.insert(name.clone(), job)
            && old.build_name != build
        {
            self.unlink_job(&old.build_name, &name);
        }
        self.jobs_by_build.entry(build.clone()).or_default().insert(name);
        self.refresh_active_init(&build);
        self.dirty.insert(build);
    }

    fn remove_job(&mut self, name: &str) {
        if let Some(old) = self.job_table.remove(name) {
            self.unlink_job(&old.build_name, name);
            self.refresh_active_init(&old.build_name);
            self.dirty.insert(old.build_name);
        }
    }

    fn unlink_job(&mut self, build: &str, name: &str) {
        if let Some(set) = self.jobs_by_build.get_mut(build) {
            set.remove(name);
            if set.is_empty() {
                self.jobs_by_build.remove(build);
            }
        }
    }

    /// The live (not deleting) jobs of `build`, of `kind` if given.
    fn live_jobs<'a>(
        &'a self,
        build: &str,
        kind: Option<JobKind>,
    ) -> impl Iterator<Item = &'a JobFacts> + 'a {
        self.jobs_by_build
            .get(build)
            .into_iter()
            .flatten()
            .filter_map(|n| self.job_table.get(n))
            .filter(move |j| !j.deleting && kind.is_none_or(|k| j.kind == k))
    }

    fn refresh_active_init(&mut self, build: &str) {
        let active = self.live_jobs(build, Some(JobKind::Initialize)).any(|j| j.phase.is_active());
        if active {
            self.active_init.insert(build.to_owned());
        } else {
            self.active_init.remove(build);
        }
    }

    fn update_ready(&mut self) {
        if self.deployments_listed && self.jobs_listed && !*self.shared.ready.borrow() {
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
                self.task_ids.remove(&id);
                (build, r.map_err(CommandError::Cluster))
            }
            Err(e) => {
                let Some(build) = self.task_ids.remove(&e.id()) else {
                    tracing::error!(error = %e, "unknown action ended abnormally");
                    return;
                };
                if e.is_panic() {
                    self.shared.counters.actions_panicked.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(build, "action panicked (contained)");
                }
                (build, Err(CommandError::Panicked))
            }
        };
        let Some(running) = self.running.remove(&build) else {
            tracing::error!(build, "finished action was not recorded as running");
            return;
        };
        let now = Instant::now();
        if running.kind == TaskKind::Initialize {
            let deadline = now + self.config.reflect_timeout;
            self.initializing_actions.insert(build.clone(), deadline);
            self.timers.push(Reverse((deadline, build.clone())));
        }
        let counters = &self.shared.counters;
        counters.count_outcome(
            running.kind.as_str(),
            outcome.as_ref().map_or_else(super::error_label, |()| "ok"),
        );
        match outcome {
            Ok(()) => {
                tracing::debug!(build, action = running.kind.as_str(), "action done");
                self.backoff.remove(&build);
                let deadline = now + self.config.reflect_timeout;
                self.awaiting.insert(build.clone(), Awaiting { kind: running.kind, deadline });
                self.timers.push(Reverse((deadline, build.clone())));
                reply(running.reply, Ok(CommandOutcome::Done));
            }
            Err(e) => {
                self.shared.counters.actions_failed.fetch_add(1, Ordering::Relaxed);
                let entry = self
                    .backoff
                    .entry(build.clone())
                    .or_insert(Backoff { until: now, failures: 0 });
                entry.failures = entry.failures.saturating_add(1);
                let ceiling = Duration::from_secs(1)
                    .saturating_mul(1u32.checked_shl(entry.failures - 1).unwrap_or(u32::MAX))
                    .min(self.config.failure_backoff_max);
                entry.until = now + self.jitter.half_to_full(ceiling);
                self.timers.push(Reverse((entry.until, build.clone())));
                tracing::warn!(
                    build,
                    action = running.kind.as_str(),
                    error = %e,
                    retry_in = ?entry.until.saturating_duration_since(now),
                    "action failed"
                );
                reply(running.reply, Err(e));
            }
        }
        self.dirty.insert(build);
    }

    fn busy(&self, build: &str, now: Instant) -> bool {
        self.running.contains_key(build)
            || self.awaiting.contains_key(build)
            || self.backoff.get(build).is_some_and(|b| b.until > now)
    }

    fn has_capacity(&self) -> bool {
        self.tasks.len() < self.config.max_concurrent_actions.max(1)
    }

    fn spawn(&mut self, task: Task, reply: Option<Reply>) {
        let build = task.build_name.clone();
        tracing::debug!(build, action = task.kind.as_str(), "action");
        self.shared.counters.actions_started.fetch_add(1, Ordering::Relaxed);
        if task.kind == TaskKind::Initialize {
            let deadline = Instant::now() + self.config.reflect_timeout;
            self.initializing_actions.insert(build.clone(), deadline);
        }
        self.running.insert(build.clone(), Running { kind: task.kind, reply });
        let ctx = self.ctx.clone();
        let mut jitter = Jitter::new(self.jitter.next_u64());
        let handle = self.tasks.spawn(async move {
            let r = ctx.run(&task, &mut jitter).await;
            (task.build_name, r)
        });
        self.task_ids.insert(handle.id(), build);
    }

    /// Whether the effect of a finished `kind` action on `name` shows in
    /// what the events told us.
    fn reflected(&self, idx: &BuildIndex, kind: TaskKind, name: &str) -> bool {
        let build = idx.get(name);
        let undeploying = build.is_some_and(|b| b.status == BuildStatus::Undeploying);
        let init = build.map(|b| b.init_status);
        match kind {
            TaskKind::Deploy => build.is_some(),
            // Only the Job itself: a stale Deployment event may show a
            // non-todo init status while the new Job is not counted yet.
            TaskKind::Initialize => {
                build.is_none()
                    || undeploying
                    || self.live_jobs(name, Some(JobKind::Initialize)).next().is_some()
            }
            TaskKind::Start => build.is_none_or(|b| undeploying || b.desired_replicas > 0),
            TaskKind::Stop => build.is_none_or(|b| b.desired_replicas == 0),
            TaskKind::Reset => {
                build.is_none()
                    || undeploying
                    || (init == Some(InitStatus::Todo)
                        && self.live_jobs(name, Some(JobKind::Initialize)).next().is_none())
            }
            TaskKind::Undeploy => build.is_none() || undeploying,
            TaskKind::Cleanup => {
                build.is_none()
                    || (!self.shared.settings.no_cleanup_job
                        && self.live_jobs(name, Some(JobKind::Cleanup)).next().is_some())
            }
            TaskKind::InitStarted => init != Some(InitStatus::Todo) || undeploying,
            TaskKind::Requeue => init != Some(InitStatus::Started) || undeploying,
            TaskKind::InitSucceeded | TaskKind::InitFailed => {
                !matches!(init, Some(InitStatus::Todo | InitStatus::Started)) || undeploying
            }
            TaskKind::CleanupSucceeded => build.is_none(),
            TaskKind::DeleteOrphan => {
                build.is_some() || self.live_jobs(name, None).next().is_none()
            }
        }
    }

    fn reconcile(&mut self) {
        self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let idx = shared.read_index();
        let now = Instant::now();

        // Builds whose awaited effect showed (or timed out).
        let dirty = std::mem::take(&mut self.dirty);
        for name in &dirty {
            if let Some(a) = self.awaiting.get(name)
                && (a.deadline <= now || self.reflected(&idx, a.kind, name))
            {
                if a.deadline <= now {
                    tracing::debug!(
                        build = name,
                        action = a.kind.as_str(),
                        "effect not seen in time"
                    );
                }
                self.awaiting.remove(name);
            }
            if let Some(deadline) = self.initializing_actions.get(name)
                && ((*deadline <= now && !self.running.contains_key(name))
                    || idx.get(name).is_none_or(|b| b.status == BuildStatus::Undeploying)
                    || self.live_jobs(name, Some(JobKind::Initialize)).next().is_some())
            {
                self.initializing_actions.remove(name);
            }
        }

        if !(self.deployments_listed && self.jobs_listed) {
            // Keep everything for when the listings are in.
            self.dirty.extend(dirty);
            self.set_idle(now);
            return;
        }

        // 1. User commands, in arrival order, while there are free slots.
        // Commands whose build is busy go back to the front, in order; the
        // rest of the queue is not touched (a burst of thousands of
        // commands costs nothing per batch beyond what is spawned).
        let mut waiting = Vec::new();
        while self.has_capacity() {
            let Some(command) = self.queued.pop_front() else { break };
            if let Some(command) = self.command(&idx, command, now) {
                waiting.push(command);
            }
        }
        for command in waiting.into_iter().rev() {
            self.queued.push_front(command);
        }

        // 2. Job handling for the builds touched.
        for name in dirty {
            if self.busy(&name, now) {
                continue;
            }
            if !self.has_capacity() {
                self.dirty.insert(name);
                continue;
            }
            if let Some(task) = self.job_task(&idx, &name) {
                self.spawn(task, None);
            }
        }

        // 3. Policies.
        let limits = self.shared.settings.limits();
        let mut policy_tasks: Vec<Task> = Vec::new();
        for action in policy::to_stop(&idx, &limits) {
            if let Some(b) = idx.get(action.build_name())
                && !self.busy(&b.name, now)
            {
                policy_tasks.push(Task::for_build(TaskKind::Stop, b));
            }
        }
        for action in policy::to_undeploy(&idx, &limits) {
            if let Some(b) = idx.get(action.build_name())
                && !self.busy(&b.name, now)
            {
                policy_tasks.push(Task::for_build(TaskKind::Undeploy, b));
            }
        }
        for b in idx.to_cleanup() {
            if !self.busy(&b.name, now)
                && !self.reported_cleanup_failures.contains(&b.name)
                && (self.shared.settings.no_cleanup_job
                    || self.live_jobs(&b.name, Some(JobKind::Cleanup)).next().is_none())
            {
                policy_tasks.push(Task::for_build(TaskKind::Cleanup, b));
            }
        }
        for task in policy_tasks {
            if !self.has_capacity() {
                break;
            }
            self.spawn(task, None);
        }
        self.initialize(&idx, limits.max_initializing, now);
        drop(idx);
        self.set_idle(now);
    }

    /// Starts init jobs within `max_initializing`.
    fn initialize(&mut self, idx: &BuildIndex, max: usize, now: Instant) {
        let started = idx.count_by_init_status(InitStatus::Started);
        let is_started =
            |name: &str| idx.get(name).is_some_and(|b| b.init_status == InitStatus::Started);
        let extra_jobs = self.active_init.iter().filter(|n| !is_started(n)).count();
        let extra_actions = self
            .initializing_actions
            .keys()
            .filter(|n| !is_started(n) && !self.active_init.contains(*n))
            .count();
        // No more than can be spawned now: the rest waits for the next
        // batch (this also bounds the candidates walked below).
        let capacity = self.config.max_concurrent_actions.max(1).saturating_sub(self.tasks.len());
        let mut room = max.saturating_sub(started + extra_jobs + extra_actions).min(capacity);
        if room == 0 {
            return;
        }
        let mut limit = room * 2 + 8;
        let mut chosen: Vec<Task> = Vec::new();
        loop {
            let candidates = idx.to_initialize(limit);
            chosen.clear();
            for b in &candidates {
                if chosen.len() == room {
                    break;
                }
                if !self.busy(&b.name, now)
                    && self.live_jobs(&b.name, Some(JobKind::Initialize)).next().is_none()
                {
                    chosen.push(Task::for_build(TaskKind::Initialize, b));
                }
            }
            if chosen.len() == room || candidates.len() < limit {
                break;
            }
            limit = limit.saturating_mul(2);
        }
        for task in chosen {
            if !self.has_capacity() || room == 0 {
                break;
            }
            room -= 1;
            self.spawn(task, None);
        }
    }

    /// What SPEC's job handling wants for `name`, if anything.
    fn job_task(&mut self, idx: &BuildIndex, name: &str) -> Option<Task> {
        let Some(build) = idx.get(name) else {
            if self.live_jobs(name, None).next().is_some() {
                return Some(Task {
                    kind: TaskKind::DeleteOrphan,
                    build_name: name.to_owned(),
                    commit: None,
                });
            }
            self.forget_cleanup_failure(name);
            return None;
        };
        if build.status == BuildStatus::Undeploying {
            let phase = self
                .live_jobs(name, Some(JobKind::Cleanup))
                .map(|j| j.phase)
                .max_by_key(|p| phase_rank(*p));
            match phase {
                Some(JobPhase::Succeeded) => {
                    return Some(Task::for_build(TaskKind::CleanupSucceeded, build));
                }
                Some(JobPhase::Failed)
                    if self.reported_cleanup_failures.insert(name.to_owned()) =>
                {
                    tracing::error!(
                        build = name,
                        commit = %build.commit_info,
                        "CLEANUP JOB FAILED: the build stays undeploying until someone looks"
                    );
                    self.shared
                        .cleanup_failures
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(name.to_owned());
                }
                // Someone deleted the failed cleanup job: cleanup runs
                // again (the policy picks the build up).
                None => self.forget_cleanup_failure(name),
                _ => {}
            }
            return None;
        }
        self.forget_cleanup_failure(name);
        let phase = self
            .live_jobs(name, Some(JobKind::Initialize))
            .map(|j| j.phase)
            .max_by_key(|p| phase_rank(*p));
        let Some(phase) = phase else {
            // Init status `started` but no init job at all (deleted by
            // hand, or by a TTL while the controller was down): without
            // this the build would hold an initialization slot forever.
            let no_job = !self
                .jobs_by_build
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|n| self.job_table.get(n))
                .any(|j| j.kind == JobKind::Initialize);
            return (build.init_status == InitStatus::Started && no_job)
                .then(|| Task::for_build(TaskKind::Requeue, build));
        };
        let kind = match (phase, build.init_status) {
            (JobPhase::Running, InitStatus::Todo) => TaskKind::InitStarted,
            (JobPhase::Succeeded, InitStatus::Todo | InitStatus::Started) => {
                TaskKind::InitSucceeded
            }
            (JobPhase::Failed, InitStatus::Todo | InitStatus::Started) => TaskKind::InitFailed,
            _ => return None,
        };
        Some(Task::for_build(kind, build))
    }

    fn forget_cleanup_failure(&mut self, name: &str) {
        if self.reported_cleanup_failures.remove(name) {
            self.shared
                .cleanup_failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(name);
        }
    }

    /// Handles one command; returns it when it must wait (its build busy).
    fn command(&mut self, idx: &BuildIndex, command: Command, now: Instant) -> Option<Command> {
        match command {
            Command::Deploy(commit, r) => {
                if !self.shared.settings.is_supported(commit.repo(), commit.target_branch()) {
                    reply(r, Ok(CommandOutcome::Unsupported));
                    return None;
                }
                let name = commit.build_name();
                if let Some(existing) = idx.get_by_commit(&commit).or_else(|| idx.get(&name)) {
                    if existing.status == BuildStatus::Undeploying {
                        // The commit's previous build is going (a PR closed
                        // and reopened during its cleanup): accept now, and
                        // deploy once the old build is gone.
                        reply(r, Ok(CommandOutcome::Done));
                        return Some(Command::Deploy(commit, None));
                    }
                    let build_name = existing.name.clone();
                    reply(
                        r,
                        Ok(CommandOutcome::Ignored(IgnoredReason::AlreadyDeployed { build_name })),
                    );
                    return None;
                }
                if self.busy(&name, now) {
                    return Some(Command::Deploy(commit, r));
                }
                self.spawn(
                    Task { kind: TaskKind::Deploy, build_name: name, commit: Some(commit) },
                    r,
                );
                None
            }
            Command::Start(name, r) => self.build_command(idx, name, r, now, TaskKind::Start),
            Command::Stop(name, r) => self.build_command(idx, name, r, now, TaskKind::Stop),
            Command::Reset(name, r) => self.build_command(idx, name, r, now, TaskKind::Reset),
            Command::Undeploy(name, r) => self.build_command(idx, name, r, now, TaskKind::Undeploy),
            Command::UndeployMatching(filters, tx) => {
                let names: Vec<String> = idx
                    .search(&filters, crate::index::SortOrder::Asc)
                    .into_iter()
                    .filter(|b| b.status != BuildStatus::Undeploying)
                    .map(|b| b.name.clone())
                    .collect();
                let _ = tx.send(names.len());
                self.queued.extend(names.into_iter().map(|n| Command::Undeploy(n, None)));
                None
            }
            Command::Shutdown => {
                self.stop = true;
                None
            }
        }
    }

    fn build_command(
        &mut self,
        idx: &BuildIndex,
        name: String,
        r: Option<Reply>,
        now: Instant,
        kind: TaskKind,
    ) -> Option<Command> {
        let Some(build) = idx.get(&name) else {
            reply(r, Ok(CommandOutcome::NotFound));
            return None;
        };
        let allowed = match kind {
            TaskKind::Start => matches!(build.status, BuildStatus::Stopped | BuildStatus::Stopping),
            TaskKind::Stop => build.status == BuildStatus::Started,
            _ => build.status != BuildStatus::Undeploying,
        };
        if !allowed {
            reply(r, Ok(CommandOutcome::Ignored(IgnoredReason::Status(build.status))));
            return None;
        }
        if self.busy(&name, now) {
            return Some(match kind {
                TaskKind::Start => Command::Start(name, r),
                TaskKind::Stop => Command::Stop(name, r),
                TaskKind::Reset => Command::Reset(name, r),
                _ => Command::Undeploy(name, r),
            });
        }
        let task = Task::for_build(kind, build);
        self.spawn(task, r);
        None
    }

    fn set_idle(&self, now: Instant) {
        let idle = self.running.is_empty()
            && self.awaiting.is_empty()
            && self.queued.is_empty()
            && self.dirty.is_empty()
            && self.backoff.values().all(|b| b.until <= now);
        self.shared.idle.store(idle, Ordering::Release);
    }
}

fn parse_build(facts: &DeploymentFacts) -> Option<Build> {
    match Build::from_deployment_facts(facts) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(deployment = facts.name, error = %e, "ignoring deployment");
            None
        }
    }
}
