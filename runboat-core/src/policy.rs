//! The scheduling policies: pure functions from the index and the limits to
//! the actions the controller should take (SPEC "Initialize" and "Limits").
//!
//! They never do anything themselves and are cheap (they only walk the front
//! of the index's ordered sets), so the controller can call [`decide`] after
//! every change. The controller is responsible for not re-issuing an action
//! that is still in flight.

use std::fmt;

use crate::build::Build;
use crate::index::BuildIndex;
use crate::status::{BuildStatus, InitStatus};

/// The three capacity limits of SPEC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// At most this many initialization jobs at once.
    pub max_initializing: usize,
    /// Above this many started builds, stop the oldest-scaled ones.
    pub max_started: usize,
    /// Above this many deployed (not undeploying) builds, undeploy the
    /// oldest-scaled stopped/stopping/failed ones.
    pub max_deployed: usize,
}

impl Default for Limits {
    /// The original's defaults: 2 / 6 / 10.
    fn default() -> Self {
        Limits { max_initializing: 2, max_started: 6, max_deployed: 10 }
    }
}

/// Something the controller should do to one build.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Start the initialization job.
    Initialize(String),
    /// Scale to 0 and apply mode `stop`.
    Stop(String),
    /// Delete the Deployment (the finalizer then makes it `undeploying`).
    Undeploy(String),
    /// Run the cleanup of an undeploying build (cleanup job, or direct
    /// deletion with `no_cleanup_job`).
    Cleanup(String),
}

impl Action {
    /// The build the action is about.
    pub fn build_name(&self) -> &str {
        match self {
            Action::Initialize(n) | Action::Stop(n) | Action::Undeploy(n) | Action::Cleanup(n) => n,
        }
    }

    /// A short verb for logs: `initialize`, `stop`, `undeploy`, `cleanup`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Initialize(_) => "initialize",
            Action::Stop(_) => "stop",
            Action::Undeploy(_) => "undeploy",
            Action::Cleanup(_) => "cleanup",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.build_name())
    }
}

fn actions(builds: Vec<&Build>, action: fn(String) -> Action) -> Vec<Action> {
    builds.into_iter().map(|b| action(b.name.clone())).collect()
}

/// Builds to initialize: those with init status `todo` (not undeploying),
/// oldest created first, as many as `max_initializing` minus the builds
/// whose initialization job runs (init status `started`).
pub fn to_initialize(index: &BuildIndex, limits: &Limits) -> Vec<Action> {
    let running = index.count_by_init_status(InitStatus::Started);
    let room = limits.max_initializing.saturating_sub(running);
    actions(index.to_initialize(room), Action::Initialize)
}

/// Builds to stop: when more than `max_started` builds are started, the
/// excess, oldest last-scaled first. Only `started` builds are ever chosen.
pub fn to_stop(index: &BuildIndex, limits: &Limits) -> Vec<Action> {
    let excess = index.count_by_status(BuildStatus::Started).saturating_sub(limits.max_started);
    actions(index.oldest_started(excess), Action::Stop)
}

/// Builds to undeploy: when more than `max_deployed` builds are deployed
/// (undeploying ones not counted), the excess among stopped, stopping and
/// failed builds, oldest last-scaled first, never the newest build of a
/// branch. Started, starting, initializing and undeploying builds are never
/// chosen, so the count may stay above the limit when too few are eligible.
pub fn to_undeploy(index: &BuildIndex, limits: &Limits) -> Vec<Action> {
    let excess = index.count_deployed().saturating_sub(limits.max_deployed);
    actions(index.oldest_stopped(excess), Action::Undeploy)
}

/// Builds to clean up: every undeploying build, oldest created first.
pub fn to_cleanup(index: &BuildIndex) -> Vec<Action> {
    actions(index.to_cleanup(), Action::Cleanup)
}

/// Everything to do now: [`to_initialize`], [`to_stop`], [`to_undeploy`]
/// then [`to_cleanup`]. No build appears in two actions (the four sets of
/// candidates are disjoint by status).
pub fn decide(index: &BuildIndex, limits: &Limits) -> Vec<Action> {
    let mut out = to_initialize(index, limits);
    out.extend(to_stop(index, limits));
    out.extend(to_undeploy(index, limits));
    out.extend(to_cleanup(index));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::testutil::{Model, Spec, arb_build};

    fn limits(i: usize, s: usize, d: usize) -> Limits {
        Limits { max_initializing: i, max_started: s, max_deployed: d }
    }

    fn index_of(specs: &[Spec]) -> BuildIndex {
        let mut idx = BuildIndex::new();
        for s in specs {
            idx.upsert(s.build());
        }
        idx
    }

    fn spec(name: &str, status: BuildStatus, created: i64, sha: u8) -> Spec {
        let mut s = Spec::new(name, status);
        s.created = created;
        s.sha = sha;
        s
    }

    #[test]
    fn initializes_oldest_todo_within_the_room_left() {
        let mut running = spec("running", BuildStatus::Initializing, 0, 0);
        running.init = InitStatus::Started;
        let idx = index_of(&[
            running,
            spec("t3", BuildStatus::Initializing, 3, 3),
            spec("t1", BuildStatus::Initializing, 1, 1),
            spec("t2", BuildStatus::Initializing, 2, 2),
        ]);
        assert_eq!(
            to_initialize(&idx, &limits(3, 9, 99)),
            vec![Action::Initialize("t1".into()), Action::Initialize("t2".into())]
        );
        assert!(to_initialize(&idx, &limits(1, 9, 99)).is_empty());
        assert!(to_initialize(&idx, &limits(0, 9, 99)).is_empty());
    }

    #[test]
    fn stops_the_oldest_scaled_started_builds_above_the_limit() {
        let mut specs = Vec::new();
        for (i, scaled) in [5, 1, 3].into_iter().enumerate() {
            let mut s = spec(
                &format!("s{scaled}"),
                BuildStatus::Started,
                0,
                u8::try_from(i).expect("small"),
            );
            s.last_scaled = Some(scaled);
            specs.push(s);
        }
        specs.push(spec("starting", BuildStatus::Starting, 0, 9));
        let idx = index_of(&specs);
        assert_eq!(
            to_stop(&idx, &limits(1, 1, 99)),
            vec![Action::Stop("s1".into()), Action::Stop("s3".into())]
        );
        assert!(to_stop(&idx, &limits(1, 3, 99)).is_empty());
    }

    #[test]
    fn undeploys_oldest_stopped_but_never_the_newest_of_a_branch() {
        let mut pr = spec("pr", BuildStatus::Stopped, 9, 3);
        pr.pr = Some(4);
        let idx = index_of(&[
            spec("old", BuildStatus::Failed, 1, 1),
            spec("newest", BuildStatus::Stopped, 5, 2),
            pr,
            spec("started", BuildStatus::Started, 0, 4),
            spec("gone", BuildStatus::Undeploying, 0, 5),
        ]);
        // 4 deployed (the undeploying one does not count), limit 1: 3 too
        // many, but only "old" and "pr" are eligible.
        assert_eq!(
            to_undeploy(&idx, &limits(1, 9, 1)),
            vec![Action::Undeploy("old".into()), Action::Undeploy("pr".into())]
        );
        assert_eq!(to_undeploy(&idx, &limits(1, 9, 3)), vec![Action::Undeploy("old".into())]);
        assert!(to_undeploy(&idx, &limits(1, 9, 4)).is_empty());
        assert_eq!(to_cleanup(&idx), vec![Action::Cleanup("gone".into())]);
        let all = decide(&idx, &limits(1, 0, 3));
        assert_eq!(
            all,
            vec![
                Action::Stop("started".into()),
                Action::Undeploy("old".into()),
                Action::Cleanup("gone".into())
            ]
        );
        assert_eq!(all[0].to_string(), "stop started");
    }

    fn arb_world() -> impl Strategy<Value = (Vec<Build>, Limits)> {
        (
            prop::collection::vec(arb_build(40), 0..60),
            (0..5usize, 0..8usize, 0..30usize).prop_map(|(i, s, d)| limits(i, s, d)),
        )
    }

    fn named<'a>(model: &'a Model, actions: &[Action]) -> Vec<&'a Build> {
        actions
            .iter()
            .map(|a| model.builds.iter().find(|b| b.name == a.build_name()).expect("known build"))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn policies_respect_limits_and_pick_the_oldest_eligible((builds, lim) in arb_world()) {
            let mut idx = BuildIndex::new();
            let mut model = Model::default();
            for b in builds {
                model.upsert(b.clone());
                idx.upsert(b);
            }

            // Initialize: never more than the room left, oldest todo first.
            let init = to_initialize(&idx, &lim);
            let running = model.count_init(InitStatus::Started);
            prop_assert!(running + init.len() <= lim.max_initializing.max(running));
            let eligible = model.to_initialize();
            let expected: Vec<&Build> =
                eligible.iter().copied().take(lim.max_initializing.saturating_sub(running)).collect();
            prop_assert_eq!(named(&model, &init), expected);
            for b in named(&model, &init) {
                prop_assert_eq!(b.init_status, InitStatus::Todo);
                prop_assert_ne!(b.status, BuildStatus::Undeploying);
            }

            // Stop: only started builds, only the excess, oldest scaled first.
            let stop = to_stop(&idx, &lim);
            let started = model.count(BuildStatus::Started);
            let excess = started.saturating_sub(lim.max_started);
            prop_assert_eq!(stop.len(), excess, "all started builds are eligible");
            prop_assert!(started - stop.len() <= lim.max_started);
            let stopped = named(&model, &stop);
            for b in &stopped {
                prop_assert_eq!(b.status, BuildStatus::Started);
            }
            prop_assert_eq!(stopped, model.oldest_started().into_iter().take(excess).collect::<Vec<_>>());

            // Undeploy: never more than the excess, never a protected build,
            // the oldest eligible ones, down to the limit when enough exist.
            let undeploy = to_undeploy(&idx, &lim);
            let deployed = model.deployed();
            let excess = deployed.saturating_sub(lim.max_deployed);
            prop_assert!(undeploy.len() <= excess);
            let chosen = named(&model, &undeploy);
            for b in &chosen {
                prop_assert!(!matches!(
                    b.status,
                    BuildStatus::Started | BuildStatus::Starting | BuildStatus::Initializing | BuildStatus::Undeploying
                ), "undeploying a {} build", b.status);
                prop_assert!(!model.is_newest(b), "undeploying the newest build of a branch");
            }
            let eligible = model.oldest_stopped();
            prop_assert_eq!(&chosen, &eligible.iter().copied().take(excess).collect::<Vec<_>>());
            if eligible.len() >= excess {
                prop_assert!(deployed - undeploy.len() <= lim.max_deployed);
            }

            // Cleanup: exactly the undeploying builds.
            let cleanup = to_cleanup(&idx);
            prop_assert_eq!(named(&model, &cleanup), model.to_cleanup());

            // decide: the union, no build twice.
            let all = decide(&idx, &lim);
            prop_assert_eq!(all.len(), init.len() + stop.len() + undeploy.len() + cleanup.len());
            let distinct: HashSet<&str> = all.iter().map(Action::build_name).collect();
            prop_assert_eq!(distinct.len(), all.len());
        }
    }
}
