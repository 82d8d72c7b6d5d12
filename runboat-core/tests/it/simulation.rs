//! Seeded chaos simulations: hundreds of builds, a random workload of
//! webhooks and user commands, every fault of the simulated cluster on,
//! watch restarts and controller restarts; invariants checked at every step
//! and once everything settled.
//!
//! A few seeds run by default; `RUNBOAT_SLOW_TESTS=1` runs many more.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use runboat_core::forge::NoForge;
use runboat_core::sim::{Faults, JobScript, SimCluster, SimConfig};
use runboat_core::{
    Build, BuildStatus, CommandOutcome, CommitInfo, ControllerHandle, InitStatus, JobKind,
    JobPhase, SearchFilters, Settings,
};

use crate::common::{commit, settings, spawn};

/// The workload's random choices.
type Rng = runboat_core::rng::SeededRng;

struct World {
    sim: SimCluster,
    settings: Arc<Settings>,
    handle: ControllerHandle,
    seed: u64,
    restarts: u64,
    /// Commits whose deploy_commit returned Done.
    accepted: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// Builds whose cleanup job is scripted to fail.
    failing_cleanups: BTreeSet<String>,
    /// `supersede_keep` (0: off).
    keep: usize,
    /// `supersede_max_builds` (0: no cap).
    cap: usize,
    /// The groups (repo, target branch, pull request) that had a
    /// successfully initialized build at some step.
    had_good: BTreeSet<Group>,
}

type Group = (String, String, Option<u64>);

fn group_of(b: &Build) -> Group {
    let c = &b.commit_info;
    (c.repo().to_owned(), c.target_branch().to_owned(), c.pr())
}

fn is_good(b: &Build) -> bool {
    b.init_status == InitStatus::Succeeded && b.status != BuildStatus::Undeploying
}

/// With supersede on (and neither limits, closed pull requests nor resets
/// taking builds), a group that had a successfully initialized build keeps
/// one at every step: a failing or initializing new commit never takes the
/// last good one.
fn check_last_good(w: &mut World) {
    if w.keep == 0 {
        return;
    }
    let builds = sim_builds(&w.sim);
    let good: BTreeSet<Group> = builds.iter().filter(|b| is_good(b)).map(group_of).collect();
    for g in &w.had_good {
        assert!(good.contains(g), "seed {}: the last good build of {g:?} was undeployed", w.seed);
    }
    w.had_good.extend(good);
}

/// Once settled with supersede on: in each group, no build older than the
/// newest `keep` successfully initialized ones is left deployed.
fn check_superseded(w: &World) -> usize {
    let mut builds: Vec<Build> =
        sim_builds(&w.sim).into_iter().filter(|b| b.status != BuildStatus::Undeploying).collect();
    builds.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
    let mut good: BTreeMap<Group, usize> = BTreeMap::new();
    let mut live: BTreeMap<Group, usize> = BTreeMap::new();
    for b in &builds {
        let n = live.entry(group_of(b)).or_default();
        *n += 1;
        // The cap, plus the newest good build it never takes.
        assert!(
            w.cap == 0 || *n <= w.cap + 1,
            "seed {}: {} builds in {:?}",
            w.seed,
            n,
            group_of(b)
        );
        let n = good.entry(group_of(b)).or_default();
        assert!(
            *n < w.keep,
            "seed {}: {} ({}) is deployed behind {} good newer builds",
            w.seed,
            b.name,
            b.init_status,
            n
        );
        if is_good(b) {
            *n += 1;
        }
    }
    good.values().filter(|n| **n > 0).count()
}

fn sim_builds(sim: &SimCluster) -> Vec<Build> {
    sim.deployments()
        .iter()
        .map(|f| Build::from_deployment_facts(f).expect("sim deployments are valid builds"))
        .collect()
}

/// Invariants that must hold at every step.
fn check_step(w: &World, max_initializing: usize) {
    let report = w.sim.report();
    if let Some(v) = report.violations.first() {
        // The calls made for the builds the violation names, to debug it.
        for c in w.sim.calls().iter().filter(|c| v.contains(c.build_name.as_str())) {
            eprintln!("seed {}: call {c:?}", w.seed);
        }
    }
    assert!(
        report.violations.is_empty(),
        "seed {}: invariants broken: {:?}",
        w.seed,
        report.violations
    );
    assert!(
        report.peak_active_init_jobs <= max_initializing,
        "seed {}: {} init jobs at once, max {}",
        w.seed,
        report.peak_active_init_jobs,
        max_initializing
    );
}

/// True once nothing is pending any more.
fn settled(w: &World) -> bool {
    if !w.handle.is_idle() {
        return false;
    }
    let limits = w.settings.limits();
    let builds = sim_builds(&w.sim);
    let jobs = w.sim.jobs();
    if jobs.iter().any(|j| j.phase.is_active()) {
        return false;
    }
    if builds.iter().any(|b| {
        b.status != BuildStatus::Undeploying
            && matches!(b.init_status, InitStatus::Todo | InitStatus::Started)
    }) {
        return false;
    }
    if builds.iter().any(|b| matches!(b.status, BuildStatus::Starting | BuildStatus::Stopping)) {
        return false;
    }
    let started = builds.iter().filter(|b| b.status == BuildStatus::Started).count();
    if started > limits.max_started {
        return false;
    }
    // Every undeploying build is one whose cleanup failed.
    if builds
        .iter()
        .any(|b| b.status == BuildStatus::Undeploying && !w.failing_cleanups.contains(&b.name))
    {
        return false;
    }
    // The index agrees with the cluster.
    let index: BTreeMap<String, BuildStatus> =
        w.handle.with_index(|idx| idx.iter().map(|b| (b.name.clone(), b.status)).collect());
    let cluster: BTreeMap<String, BuildStatus> =
        builds.iter().map(|b| (b.name.clone(), b.status)).collect();
    index == cluster
}

fn check_settled(w: &World) {
    let limits = w.settings.limits();
    let builds = sim_builds(&w.sim);
    let seed = w.seed;
    // Deployed within max_deployed, unless only protected or busy builds
    // are left to undeploy.
    let deployed: Vec<&Build> =
        builds.iter().filter(|b| b.status != BuildStatus::Undeploying).collect();
    if deployed.len() > limits.max_deployed {
        let evictable = w.handle.with_index(|idx| idx.oldest_stopped(1).len());
        assert_eq!(evictable, 0, "seed {seed}: above max_deployed with evictable builds left");
    }
    // Cleanup failures are reported and stay undeploying with their
    // finalizer; every other undeployed build is entirely gone.
    let mut failures = w.handle.cleanup_failures();
    failures.sort();
    let undeploying: Vec<String> = builds
        .iter()
        .filter(|b| b.status == BuildStatus::Undeploying)
        .map(|b| b.name.clone())
        .collect();
    assert_eq!(failures, undeploying, "seed {seed}: failed cleanups are reported");
    for name in &undeploying {
        assert!(w.sim.has_finalizer(name), "seed {seed}: {name} keeps its finalizer");
        assert!(
            w.sim.jobs().iter().any(|j| &j.build_name == name
                && j.kind == JobKind::Cleanup
                && j.phase == JobPhase::Failed),
            "seed {seed}: {name} is undeploying because its cleanup failed"
        );
    }
    let present: BTreeSet<String> = builds.iter().map(|b| b.name.clone()).collect();
    let report = w.sim.report();
    for name in &report.undeployed {
        if !present.contains(name) {
            assert!(!w.sim.has_resources(name), "seed {seed}: resources of {name} left behind");
            assert!(
                !w.sim.jobs().iter().any(|j| &j.build_name == name),
                "seed {seed}: jobs of {name} left behind"
            );
        }
    }
    // Nothing accepted was lost: every build deployed is there, or was
    // undeployed (by a limit or a closed pull request).
    for name in w.accepted.lock().expect("lock").iter() {
        assert!(
            present.contains(name) || report.undeployed.contains(name),
            "seed {seed}: accepted build {name} lost"
        );
    }
    // No orphan jobs.
    for job in w.sim.jobs() {
        assert!(present.contains(&job.build_name), "seed {seed}: orphan job {}", job.name);
    }
    assert_eq!(w.handle.stats().actions_panicked, 0);
}

/// Runs one simulation; returns the calls the cluster received.
async fn simulate(seed: u64, steps: usize) -> Vec<runboat_core::sim::SimCall> {
    let mut rng = Rng::new(seed);
    // Every other seed supersedes (keeping 1 or 2 builds per group), with
    // no limit, closed pull request or reset taking builds, so that the
    // last good build of a group is checked at every step.
    let keep = if seed.is_multiple_of(2) { 0 } else { usize::from(seed % 4 == 1) + 1 };
    let (max_init, max_started) = (3, 4);
    let max_deployed = if keep == 0 { 40 } else { 10_000 };
    let start_after_init = seed.is_multiple_of(2);
    let no_cleanup_job = seed.is_multiple_of(3);
    let mut settings =
        settings(max_init, max_started, max_deployed, start_after_init, no_cleanup_job);
    Arc::make_mut(&mut settings).supersede_keep = keep;
    // Some of them with a cap of 3 deployed builds per group as well.
    let cap = if keep > 0 && seed.is_multiple_of(3) { 3 } else { 0 };
    Arc::make_mut(&mut settings).supersede_max_builds = cap;
    let sim = SimCluster::new(SimConfig {
        seed,
        init_failure_rate: 0.15,
        init_job: JobScript::succeed_after(Duration::from_secs(20)),
        faults: Faults::chaos(),
        max_initializing: Some(max_init),
        ..SimConfig::default()
    });
    let handle = spawn(&sim, Arc::new(NoForge), settings.clone(), seed);
    let mut w = World {
        sim,
        settings,
        handle,
        seed,
        restarts: 0,
        accepted: Arc::default(),
        failing_cleanups: BTreeSet::new(),
        keep,
        cap,
        had_good: BTreeSet::new(),
    };
    w.handle.ready().await;

    let repos = 4;
    let branches = ["16.0", "17.0", "18.0"];
    let mut commits: Vec<CommitInfo> = Vec::new();
    let mut open_prs: Vec<u64> = Vec::new();
    let mut next_pr = 1;
    let mut sha = seed.wrapping_mul(1_000_003);

    for _ in 0..steps {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(3000))).await;
        check_step(&w, max_init);
        check_last_good(&mut w);
        let op = rng.below(100);
        match op {
            // A push to a branch or a pull request: a new commit.
            0..=54 => {
                sha += 1;
                let repo = usize::try_from(rng.below(repos)).expect("small");
                let branch = branches[usize::try_from(rng.below(3)).expect("small")];
                let pr = if rng.below(2) == 0 {
                    None
                } else if !open_prs.is_empty() && rng.below(3) > 0 {
                    Some(open_prs[usize::try_from(rng.below(open_prs.len() as u64)).expect("i")])
                } else {
                    next_pr += 1;
                    open_prs.push(next_pr);
                    Some(next_pr)
                };
                let c = commit(repo, branch, pr, sha);
                if pr.is_some() && !no_cleanup_job && rng.below(25) == 0 {
                    w.sim.script_cleanup(
                        &c.build_name(),
                        JobScript::fail_after(Duration::from_secs(2)),
                    );
                    w.failing_cleanups.insert(c.build_name());
                }
                commits.push(c.clone());
                // A burst of identical webhooks, not awaited.
                for _ in 0..=rng.below(3) {
                    let h = w.handle.clone();
                    let accepted = w.accepted.clone();
                    let c = c.clone();
                    tokio::spawn(async move {
                        let name = c.build_name();
                        if h.deploy_commit(c).await == Ok(CommandOutcome::Done) {
                            accepted.lock().expect("lock").insert(name);
                        }
                    });
                }
            }
            // User commands on random builds.
            55..=84 if !commits.is_empty() => {
                let c = &commits[usize::try_from(rng.below(commits.len() as u64)).expect("i")];
                let name = c.build_name();
                let h = w.handle.clone();
                let which = rng.below(if keep == 0 { 3 } else { 2 });
                tokio::spawn(async move {
                    let _ = match which {
                        0 => h.start(&name).await,
                        1 => h.stop(&name).await,
                        _ => h.reset(&name).await,
                    };
                });
            }
            // A pull request is closed.
            85..=89 if !open_prs.is_empty() && keep == 0 => {
                let i = usize::try_from(rng.below(open_prs.len() as u64)).expect("i");
                let pr = open_prs.swap_remove(i);
                let h = w.handle.clone();
                tokio::spawn(async move {
                    let _ = h
                        .undeploy_matching(SearchFilters { pr: Some(pr), ..Default::default() })
                        .await;
                });
            }
            90..=93 => w.sim.restart_watches(),
            94..=95 => w.sim.end_watches(),
            96 => {
                // Controller restart mid-flight.
                w.handle.shutdown().await;
                w.restarts += 1;
                w.handle = spawn(&w.sim, Arc::new(NoForge), w.settings.clone(), seed + w.restarts);
                w.handle.ready().await;
            }
            _ => {}
        }
    }

    // Let everything settle, checking the step invariants meanwhile.
    let mut ok = false;
    for _ in 0..720 {
        check_step(&w, max_init);
        check_last_good(&mut w);
        if settled(&w) {
            ok = true;
            break;
        }
        // Paused clock: this only lets simulated time pass.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if !ok {
        let builds = sim_builds(&w.sim);
        let busy: Vec<String> = builds
            .iter()
            .filter(|b| {
                !matches!(
                    b.status,
                    BuildStatus::Stopped | BuildStatus::Failed | BuildStatus::Started
                )
            })
            .map(|b| format!("{} {} {}", b.name, b.status, b.init_status))
            .collect();
        let view: Vec<String> = w.handle.with_index(|idx| {
            idx.iter()
                .filter(|b| {
                    !matches!(
                        b.status,
                        BuildStatus::Stopped | BuildStatus::Failed | BuildStatus::Started
                    )
                })
                .map(|b| format!("{} {} {}", b.name, b.status, b.init_status))
                .collect()
        });
        panic!(
            "seed {seed}: did not settle in 2 hours: idle={} stats={:?} view={view:?} jobs={:?} busy={busy:?}",
            w.handle.is_idle(),
            w.handle.stats(),
            w.sim.jobs().iter().filter(|j| j.phase.is_active()).collect::<Vec<_>>()
        );
    }
    check_step(&w, max_init);
    check_settled(&w);
    if keep > 0 {
        let groups = check_superseded(&w);
        assert!(groups > 0, "seed {seed}: no group with a good build");
        // Supersede did undeploy builds (no limit nor closed pull request
        // does here).
        let gone = w.sim.report().undeployed.len();
        assert!(gone > 0, "seed {seed}: nothing superseded");
    }
    let report = w.sim.report();
    assert!(
        report.init_jobs_created > 0 && report.injected_failures > 0,
        "seed {seed}: {report:?}"
    );
    w.handle.shutdown().await;
    w.sim.calls()
}

fn seeds() -> std::ops::Range<u64> {
    if std::env::var_os("RUNBOAT_SLOW_TESTS").is_some_and(|v| v == "1") { 1..61 } else { 1..4 }
}

#[tokio::test(start_paused = true)]
async fn chaos_simulations_keep_every_invariant() {
    for seed in seeds() {
        simulate(seed, 400).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_identically() {
    let first = simulate(7, 120).await;
    let second = simulate(7, 120).await;
    assert!(first.len() > 100);
    assert_eq!(first, second, "same seed, same cluster calls in the same order");
}
