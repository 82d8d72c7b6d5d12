//! How far builds are, and how long their steps take: the init Jobs' start
//! and end times (the timeline), and an estimator per (repo, target branch)
//! of the initialization and start durations (the ETA).
//!
//! Everything here is learned from the cluster and kept in memory: the init
//! durations from the init Jobs' `startTime` and `completionTime` (so a
//! restart rebuilds them from the Jobs the cluster still holds), the start
//! durations from the Deployments (from the last scale to 1 to the
//! `Available` condition turning true; a restart relearns those of the
//! builds still started). Memory is bounded: [`MAX_KEYS`] (repo, target
//! branch) pairs of [`SAMPLES`] samples each, and the times of the builds
//! and jobs the cluster holds.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use crate::build::Build;
use crate::cluster::{JobFacts, JobKind, JobPhase};
use crate::index::BuildIndex;
use crate::status::{BuildStatus, InitStatus};

/// Samples kept per (repo, target branch) and kind of step.
pub const SAMPLES: usize = 20;
/// (repo, target branch) pairs with an estimate, at most; samples of others
/// are dropped.
pub const MAX_KEYS: usize = 4096;

/// The last [`SAMPLES`] durations of one step, in seconds.
#[derive(Debug, Clone, Default)]
struct Samples(VecDeque<u64>);

impl Samples {
    fn push(&mut self, secs: u64) {
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(secs);
    }

    /// The median (the upper one of an even count): robust to the odd
    /// very slow or very fast run.
    fn median(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.0.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }
}

/// Durations learned per (repo, target branch).
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    init: HashMap<(String, String), Samples>,
    start: HashMap<(String, String), Samples>,
}

/// Which step a duration is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The init Job's run (start to completion).
    Initialize,
    /// From the scale to 1 to the Deployment available.
    Start,
}

impl Estimator {
    fn map(&mut self, step: Step) -> &mut HashMap<(String, String), Samples> {
        match step {
            Step::Initialize => &mut self.init,
            Step::Start => &mut self.start,
        }
    }

    /// Learns one duration of `step` for (repo, target branch).
    pub fn record(&mut self, step: Step, repo: &str, target_branch: &str, took: Duration) {
        let map = self.map(step);
        let key = (repo.to_owned(), target_branch.to_owned());
        if !map.contains_key(&key) && map.len() >= MAX_KEYS {
            return;
        }
        map.entry(key).or_default().push(took.as_secs());
    }

    /// The expected duration of `step` for (repo, target branch): the median
    /// of the last samples; `None` without any.
    pub fn estimate(&self, step: Step, repo: &str, target_branch: &str) -> Option<Duration> {
        let map = match step {
            Step::Initialize => &self.init,
            Step::Start => &self.start,
        };
        map.get(&(repo.to_owned(), target_branch.to_owned()))
            .and_then(Samples::median)
            .map(Duration::from_secs)
    }
}

/// When a build's last init Job started and ended, as the cluster showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitTimes {
    /// The init Job's `startTime`.
    pub started: Option<Timestamp>,
    /// Its end (success or failure).
    pub finished: Option<Timestamp>,
    /// Whether its duration was learned already (each run counts once).
    learned: bool,
    /// Whether it succeeded (only successful runs are learned).
    succeeded: bool,
}

/// The init times of the builds and the estimator.
#[derive(Debug, Default)]
pub struct Progress {
    init: HashMap<String, InitTimes>,
    /// The scale to 1 whose start was learned, per build (each counts once).
    started: HashMap<String, Timestamp>,
    estimator: Estimator,
}

impl Progress {
    /// Takes in an init Job's facts (other jobs are ignored); a newer run
    /// (another start time) replaces the times of the previous one.
    pub fn job(&mut self, job: &JobFacts) {
        if job.kind != JobKind::Initialize || job.deleting || job.started.is_none() {
            return;
        }
        let t = self.init.entry(job.build_name.clone()).or_default();
        if t.started != job.started {
            *t = InitTimes { started: job.started, ..InitTimes::default() };
        }
        if job.finished.is_some() {
            t.finished = job.finished;
            t.succeeded = job.phase == JobPhase::Succeeded;
        }
    }

    /// Learns the runs of the builds `touched` that ended and are in
    /// `index` (the build says which repo and branch a run is of; at
    /// startup the Jobs may be listed before the Deployments), and forgets
    /// the builds no longer in `index` and without a job in `live_jobs`.
    pub fn absorb(
        &mut self,
        index: &BuildIndex,
        touched: &BTreeSet<String>,
        has_job: impl Fn(&str) -> bool,
    ) {
        for name in touched {
            let Some(build) = index.get(name) else {
                if !has_job(name) {
                    self.init.remove(name);
                }
                self.started.remove(name);
                continue;
            };
            let Some(t) = self.init.get_mut(name) else { continue };
            if let (false, true, Some(s), Some(f)) = (t.learned, t.succeeded, t.started, t.finished)
            {
                t.learned = true;
                let took =
                    Duration::from_secs(u64::try_from(f.as_second() - s.as_second()).unwrap_or(0));
                let c = &build.commit_info;
                self.estimator.record(Step::Initialize, c.repo(), c.target_branch(), took);
            }
        }
    }

    /// Learns a start from a started build's Deployment: from its last
    /// scale to 1 to its `Available` condition turning true after it
    /// (`available_since`, [`DeploymentFacts`](crate::DeploymentFacts)),
    /// once per scale. Listings after a restart so relearn the starts of the
    /// builds still started.
    pub fn deployment(&mut self, build: &Build, available_since: Option<Timestamp>) {
        let (BuildStatus::Started, Some(scaled), Some(ready)) =
            (build.status, build.last_scaled, available_since)
        else {
            return;
        };
        if ready < scaled || self.started.get(&build.name) == Some(&scaled) {
            return;
        }
        if self.started.len() >= MAX_KEYS * SAMPLES {
            self.started.clear();
        }
        self.started.insert(build.name.clone(), scaled);
        let secs = u64::try_from(ready.as_second() - scaled.as_second()).unwrap_or(0);
        let c = &build.commit_info;
        self.estimator.record(Step::Start, c.repo(), c.target_branch(), Duration::from_secs(secs));
    }

    /// The init times of `build_name`, if an init Job of it was seen.
    pub fn init_times(&self, build_name: &str) -> Option<InitTimes> {
        self.init.get(build_name).copied()
    }

    /// The estimator.
    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    /// The estimator, to teach it (tests and tools).
    pub fn estimator_mut(&mut self) -> &mut Estimator {
        &mut self.estimator
    }

    /// Seconds until `build` is ready at `now`, for a queued or
    /// initializing build (until initialized) and a starting one (until
    /// started); `None` for the others or without history. A queued build
    /// waits `rounds` initializations before its own (see [`queue_rounds`]);
    /// a running step's estimate is what is left of it, 0 when overdue.
    /// `rounds` is only called for a queued build with an estimate (it
    /// walks the queue); `None` from it (too far back, or paused) is no
    /// estimate.
    pub fn eta(
        &self,
        build: &Build,
        now: Timestamp,
        rounds: impl FnOnce() -> Option<u64>,
    ) -> Option<u64> {
        let c = &build.commit_info;
        let queued =
            (build.status, build.init_status) == (BuildStatus::Initializing, InitStatus::Todo);
        let (step, since) = match (build.status, build.init_status) {
            (BuildStatus::Initializing, InitStatus::Todo) => (Step::Initialize, None),
            (BuildStatus::Initializing, InitStatus::Started) => {
                (Step::Initialize, self.init_times(&build.name).and_then(|t| t.started))
            }
            (BuildStatus::Starting, _) => (Step::Start, build.last_scaled),
            _ => return None,
        };
        let total = self.estimator.estimate(step, c.repo(), c.target_branch())?.as_secs();
        let rounds_before = if queued { rounds()? } else { 0 };
        let elapsed =
            since.map_or(0, |s| u64::try_from(now.as_second() - s.as_second()).unwrap_or(0));
        Some(total.saturating_mul(rounds_before.saturating_add(1)).saturating_sub(elapsed))
    }
}

/// The stages `build` reached, as the cluster shows them: the Deployment's
/// creation, the init Job's start and end (`init`), and the last scale (a
/// start when the build is scaled up, a stop when scaled down).
pub fn timeline(build: &Build, init: Option<InitTimes>) -> runboat_api::Timeline {
    let at = |t: Option<Timestamp>| t.map(|t| t.to_string());
    let scaled = build.last_scaled;
    let up = build.desired_replicas > 0;
    runboat_api::Timeline {
        created: Some(build.created.to_string()),
        init_started: at(init.and_then(|t| t.started)),
        init_finished: at(init.and_then(|t| t.finished)),
        started: at(scaled.filter(|_| up)),
        stopped: at(scaled.filter(|_| !up)),
    }
}

/// Builds ahead in the initialization queue that are counted (the count
/// walks the queue).
pub const QUEUE_LOOKAHEAD: usize = 500;

/// How many initializations a queued `build` waits for before its own: the
/// builds queued before it and those initializing now, `max_initializing`
/// at a time. `None` when initialization is paused (`max_initializing` 0)
/// or when [`QUEUE_LOOKAHEAD`] builds or more are queued before it (too far
/// back to tell).
pub fn queue_rounds(index: &BuildIndex, build: &Build, max_initializing: usize) -> Option<u64> {
    if max_initializing == 0 {
        return None;
    }
    if build.init_status != InitStatus::Todo {
        return Some(0);
    }
    let queued = index.todo_ahead(build, QUEUE_LOOKAHEAD);
    if queued >= QUEUE_LOOKAHEAD {
        return None;
    }
    let ahead = queued + index.count_by_init_status(InitStatus::Started);
    u64::try_from(ahead / max_initializing).ok()
}

/// "ready in ~N min" for an ETA in seconds (at least 1 min).
pub fn ready_in(eta_seconds: u64) -> String {
    format!("ready in ~{} min", eta_seconds.div_ceil(60).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Spec;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("valid")
    }

    fn init_job(build: &str, phase: JobPhase, started: i64, finished: Option<i64>) -> JobFacts {
        JobFacts {
            name: format!("{build}-init"),
            build_name: build.into(),
            kind: JobKind::Initialize,
            phase,
            deleting: false,
            started: Some(ts(started)),
            finished: finished.map(ts),
        }
    }

    #[test]
    fn the_estimate_is_the_median_of_the_last_samples_per_repo_and_branch() {
        let mut e = Estimator::default();
        assert_eq!(e.estimate(Step::Initialize, "oca/x", "16.0"), None);
        for s in [100, 300, 200] {
            e.record(Step::Initialize, "oca/x", "16.0", Duration::from_secs(s));
        }
        assert_eq!(e.estimate(Step::Initialize, "oca/x", "16.0"), Some(Duration::from_secs(200)));
        assert_eq!(e.estimate(Step::Initialize, "oca/x", "17.0"), None);
        assert_eq!(e.estimate(Step::Start, "oca/x", "16.0"), None);
        // Only the last SAMPLES count: old slow runs are forgotten.
        for _ in 0..SAMPLES {
            e.record(Step::Initialize, "oca/x", "16.0", Duration::from_secs(60));
        }
        assert_eq!(e.estimate(Step::Initialize, "oca/x", "16.0"), Some(Duration::from_secs(60)));
    }

    #[test]
    fn keys_are_bounded() {
        let mut e = Estimator::default();
        for i in 0..MAX_KEYS + 10 {
            e.record(Step::Start, &format!("oca/r{i}"), "16.0", Duration::from_secs(5));
        }
        assert_eq!(e.start.len(), MAX_KEYS);
        assert_eq!(e.estimate(Step::Start, &format!("oca/r{}", MAX_KEYS + 1), "16.0"), None);
        // A known key still learns.
        e.record(Step::Start, "oca/r0", "16.0", Duration::from_secs(7));
        e.record(Step::Start, "oca/r0", "16.0", Duration::from_secs(7));
        assert_eq!(e.estimate(Step::Start, "oca/r0", "16.0"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn successful_runs_are_learned_once_and_give_the_eta() {
        let mut idx = BuildIndex::new();
        let mut running = Spec::new("b", BuildStatus::Initializing);
        running.init = InitStatus::Started;
        idx.upsert(Spec::new("a", BuildStatus::Stopped).build());
        idx.upsert(running.build());
        idx.upsert(Spec::new("q", BuildStatus::Initializing).build());
        let mut p = Progress::default();
        let touched: BTreeSet<String> = ["a", "b"].iter().map(|s| (*s).to_owned()).collect();
        // A failed run teaches nothing.
        p.job(&init_job("a", JobPhase::Failed, 0, Some(30)));
        p.absorb(&idx, &touched, |_| true);
        assert_eq!(p.eta(idx.get("q").expect("q"), ts(0), || Some(0)), None);
        // A new run replaces it; it succeeds after 240 s; seen twice (a
        // relisting), it counts once.
        p.job(&init_job("a", JobPhase::Running, 100, None));
        assert_eq!(p.init_times("a").map(|t| (t.started, t.finished)), Some((Some(ts(100)), None)));
        for _ in 0..2 {
            p.job(&init_job("a", JobPhase::Succeeded, 100, Some(340)));
            p.absorb(&idx, &touched, |_| true);
        }
        assert_eq!(p.estimator.init.values().map(|s| s.0.len()).sum::<usize>(), 1);
        // Queued with a slot free: the whole initialization; behind a
        // round of others: two.
        let q = idx.get("q").expect("q");
        assert_eq!(p.eta(q, ts(1000), || Some(0)), Some(240));
        assert_eq!(p.eta(q, ts(1000), || Some(1)), Some(480));
        assert_eq!(p.eta(q, ts(1000), || None), None, "too far back");
        // "b" initializes, one slot: "q" waits one round; two slots: none.
        assert_eq!(queue_rounds(&idx, q, 1), Some(1));
        assert_eq!(queue_rounds(&idx, q, 2), Some(0));
        assert_eq!(queue_rounds(&idx, q, 0), None);
        // Running since 1000: what is left, 0 once overdue.
        p.job(&init_job("b", JobPhase::Running, 1000, None));
        let b = idx.get("b").expect("b");
        assert_eq!(p.eta(b, ts(1060), || None), Some(180));
        assert_eq!(p.eta(b, ts(1300), || Some(5)), Some(0), "rounds count for queued builds only");
        // No ETA for a stopped build.
        assert_eq!(p.eta(idx.get("a").expect("a"), ts(1000), || Some(0)), None);
        // A build gone from the index and the jobs is forgotten.
        idx.remove("a");
        p.absorb(&idx, &touched, |n| n == "b");
        assert_eq!(p.init_times("a"), None);
        assert!(p.init_times("b").is_some());
        assert_eq!(ready_in(240), "ready in ~4 min");
        assert_eq!(ready_in(10), "ready in ~1 min");
    }

    #[test]
    fn the_timeline_says_what_the_cluster_shows() {
        let mut s = Spec::new("a", BuildStatus::Started);
        s.created = 0;
        s.last_scaled = Some(500);
        let init =
            InitTimes { started: Some(ts(10)), finished: Some(ts(250)), ..InitTimes::default() };
        let t = timeline(&s.build(), Some(init));
        assert_eq!(t.created.as_deref(), Some(s.build().created.to_string().as_str()));
        assert_eq!(t.init_started, Some(ts(10).to_string()));
        assert_eq!(t.init_finished, Some(ts(250)).map(|t| t.to_string()));
        assert_eq!(t.started, s.build().last_scaled.map(|t| t.to_string()));
        assert_eq!(t.stopped, None);
        s.status = BuildStatus::Stopped;
        let t = timeline(&s.build(), None);
        assert_eq!((t.started, t.init_started), (None, None));
        assert_eq!(t.stopped, s.build().last_scaled.map(|t| t.to_string()));
        // Never scaled: neither.
        s.last_scaled = None;
        let t = timeline(&s.build(), None);
        assert_eq!((t.started, t.stopped), (None, None));
    }

    #[test]
    fn a_start_is_learned_once_from_the_scale_to_availability() {
        let mut s = Spec::new("a", BuildStatus::Started);
        s.last_scaled = Some(50);
        let started = s.build();
        let mut p = Progress::default();
        let scaled = started.last_scaled.expect("scaled");
        let start = |secs| Some(scaled + jiff::SignedDuration::from_secs(secs));
        // Available before the last scale (a stale condition): nothing.
        p.deployment(&started, start(-5));
        p.deployment(&started, None);
        assert_eq!(p.estimator.estimate(Step::Start, "oca/x", "16.0"), None);
        p.deployment(&started, start(20));
        // The same start seen again (an update, a relisting): counted once.
        p.deployment(&started, start(20));
        assert_eq!(p.estimator.start.values().map(|s| s.0.len()).sum::<usize>(), 1);
        assert_eq!(
            p.estimator.estimate(Step::Start, "oca/x", "16.0"),
            Some(Duration::from_secs(20))
        );
        let mut starting = s.clone();
        starting.status = BuildStatus::Starting;
        let b = starting.build();
        let later = b.last_scaled.expect("scaled") + jiff::SignedDuration::from_secs(5);
        assert_eq!(p.eta(&b, later, || None), Some(15));
    }
}
