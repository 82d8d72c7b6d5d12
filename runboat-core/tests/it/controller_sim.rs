//! Scenario tests of the controller against the simulated cluster.

use std::sync::Arc;
use std::time::Duration;

use runboat_core::forge::NoForge;
use runboat_core::sim::{JobScript, SimConfig, SimMethod};
use runboat_core::{
    BuildStatus, Cluster, ClusterError, CommandError, CommandOutcome, IgnoredReason, InitStatus,
    JobKind, KubefilesMode, SearchFilters,
};

use crate::common::{RecordingForge, commit, eventually, settings, sim, spawn};

const MINUTE: Duration = Duration::from_secs(60);

fn status_of(h: &runboat_core::ControllerHandle, name: &str) -> Option<BuildStatus> {
    h.get(name).map(|b| b.status)
}

#[tokio::test(start_paused = true)]
async fn a_build_goes_through_its_whole_life() {
    let sim = sim(SimConfig::default());
    let forge = Arc::new(RecordingForge::default());
    let h = spawn(&sim, forge.clone(), settings(2, 6, 10, false, false), 1);
    h.ready().await;
    let c = commit(1, "16.0", Some(1), 1);
    let name = c.build_name();

    assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);
    assert_eq!(h.get(&name).map(|b| b.init_status), Some(InitStatus::Succeeded));
    assert_eq!(forge.states_for(c.git_commit()), ["pending", "pending", "success"]);
    let target = forge.0.lock().expect("lock")[0].target_url.clone();
    assert_eq!(target, format!("https://runboat.example.com/builds/{name}?live"));
    assert_eq!(
        h.deploy_commit(c.clone()).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::AlreadyDeployed { build_name: name.clone() }))
    );

    assert_eq!(
        h.stop(&name).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::Status(BuildStatus::Stopped)))
    );
    assert_eq!(h.start(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Started)).await);
    assert!(h.get(&name).and_then(|b| b.last_scaled).is_some());
    assert!(h.log(&name).await.expect("log").is_some());
    assert!(h.init_log(&name).await.expect("init log").is_some());
    assert_eq!(h.stop(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);

    assert_eq!(h.undeploy(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.get(&name).is_none()).await);
    assert!(sim.deployment(&name).is_none());
    assert!(!sim.has_resources(&name));
    assert!(sim.jobs().is_empty(), "the cleanup job went with the resources");
    assert_eq!(sim.report().cleanup_jobs_created, 1);
    assert_eq!(sim.report().violations, Vec::<String>::new());
    assert_eq!(h.start(&name).await, Ok(CommandOutcome::NotFound));
}

#[tokio::test(start_paused = true)]
async fn commands_are_checked_against_the_build_status_and_settings() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(1, 6, 10, false, false), 2);
    h.ready().await;
    let unsupported =
        runboat_core::CommitInfo::new("acme/x", "main", None, &"a".repeat(40)).expect("commit");
    assert_eq!(h.deploy_commit(unsupported).await, Ok(CommandOutcome::Unsupported));
    let c = commit(1, "16.0", Some(2), 2);
    let name = c.build_name();
    assert_eq!(h.deploy_commit(c).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.get(&name).is_some()).await);
    assert_eq!(
        h.start(&name).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::Status(BuildStatus::Initializing)))
    );
    assert_eq!(h.reset("nope").await, Ok(CommandOutcome::NotFound));
    assert_eq!(h.undeploy(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.get(&name).is_none()).await);
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_failed_initialization_marks_the_build_failed_and_it_cannot_start() {
    let sim = sim(SimConfig::default());
    let forge = Arc::new(RecordingForge::default());
    let h = spawn(&sim, forge.clone(), settings(2, 6, 10, false, false), 3);
    h.ready().await;
    let c = commit(1, "16.0", Some(7), 3);
    let name = c.build_name();
    sim.script_init(&name, JobScript::fail_after(Duration::from_secs(10)));
    h.deploy_commit(c.clone()).await.expect("deploy");
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Failed)).await);
    assert_eq!(forge.states_for(c.git_commit()), ["pending", "pending", "failure"]);
    assert_eq!(sim.deployment(&name).and_then(|d| d.spec_replicas), Some(0));
    assert_eq!(
        h.start(&name).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::Status(BuildStatus::Failed)))
    );
    // Reset: back to todo, initialized again (successfully this time).
    sim.script_init(&name, JobScript::succeed_after(Duration::from_secs(10)));
    assert_eq!(h.reset(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);
    assert_eq!(sim.report().init_jobs_created, 2);
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn start_after_init_starts_the_build_once_initialized() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, true, false), 4);
    h.ready().await;
    let c = commit(2, "17.0", None, 4);
    let name = c.build_name();
    h.deploy_commit(c).await.expect("deploy");
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Started)).await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_cleanup_leaves_the_build_undeploying_and_reported() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 5);
    h.ready().await;
    let c = commit(1, "16.0", Some(3), 5);
    let name = c.build_name();
    sim.script_cleanup(&name, JobScript::fail_after(Duration::from_secs(3)));
    h.deploy_commit(c).await.expect("deploy");
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);
    assert_eq!(h.undeploy(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.cleanup_failures() == vec![name.clone()]).await);
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(status_of(&h, &name), Some(BuildStatus::Undeploying));
    assert!(sim.has_finalizer(&name) && sim.has_resources(&name));
    assert_eq!(sim.report().cleanup_jobs_created, 1, "a failed cleanup is not retried blindly");
    // Deleting the failed job is how an admin asks for another try.
    sim.script_cleanup(&name, JobScript::succeed_after(Duration::from_secs(3)));
    sim.kill_jobs(&name, JobKind::Cleanup).await.expect("kill");
    assert!(eventually(MINUTE, || h.get(&name).is_none()).await);
    assert!(h.cleanup_failures().is_empty());
    assert!(!sim.has_resources(&name));
}

#[tokio::test(start_paused = true)]
async fn without_cleanup_job_resources_are_deleted_directly() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, true), 6);
    h.ready().await;
    let c = commit(1, "16.0", Some(4), 6);
    let name = c.build_name();
    h.deploy_commit(c).await.expect("deploy");
    assert!(eventually(MINUTE, || h.get(&name).is_some()).await);
    // Undeploy while initializing: the init job is killed too.
    assert_eq!(h.undeploy(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.get(&name).is_none()).await);
    assert!(!sim.has_resources(&name) && sim.jobs().is_empty());
    assert_eq!(sim.report().cleanup_jobs_created, 0);
}

#[tokio::test(start_paused = true)]
async fn the_resources_of_a_job_without_deployment_are_deleted() {
    let sim = sim(SimConfig::default());
    let c = commit(3, "16.0", None, 7);
    let name = c.build_name();
    // An init job left behind by a build whose Deployment is gone.
    sim.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Initialize).await.expect("apply");
    assert_eq!(sim.jobs().len(), 1);
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 7);
    h.ready().await;
    assert!(eventually(MINUTE, || sim.jobs().is_empty()).await);
    assert!(h.get(&name).is_none());
}

#[tokio::test(start_paused = true)]
async fn existing_builds_are_adopted_and_ghosts_vanish_on_relisting() {
    let sim = sim(SimConfig::default());
    let created: jiff::Timestamp = "2025-06-01T00:00:00Z".parse().expect("ts");
    let a = sim.insert_deployment(&commit(1, "16.0", None, 8), InitStatus::Succeeded, 1, created);
    let b =
        sim.insert_deployment(&commit(1, "16.0", Some(9), 9), InitStatus::Succeeded, 0, created);
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 8);
    h.ready().await;
    assert_eq!(status_of(&h, &a), Some(BuildStatus::Started));
    assert_eq!(status_of(&h, &b), Some(BuildStatus::Stopped));
    assert_eq!(h.status_counts().started, 1);
    // While the watches are down, b is removed behind the controller's back.
    sim.end_watches();
    sim.delete_build_resources(&b).await.expect("delete");
    sim.remove_finalizer(&b).await.expect("finalizer");
    assert!(eventually(MINUTE, || h.get(&b).is_none()).await, "the relisting removed the ghost");
    assert_eq!(status_of(&h, &a), Some(BuildStatus::Started));
}

#[tokio::test(start_paused = true)]
async fn limits_stop_the_oldest_started_and_undeploy_the_oldest_stopped() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(4, 2, 3, true, false), 9);
    h.ready().await;
    let mut names = Vec::new();
    for i in 0..3 {
        let c = commit(1, "16.0", Some(10 + i), 10 + i);
        names.push(c.build_name());
        h.deploy_commit(c).await.expect("deploy");
        // Distinct creation and scaling seconds.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        eventually(10 * MINUTE, || {
            h.with_index(|idx| {
                idx.count_by_status(BuildStatus::Started) == 2
                    && idx.count_by_status(BuildStatus::Stopped) == 1
            })
        })
        .await
    );
    // The first to be started is the one stopped.
    assert_eq!(status_of(&h, &names[0]), Some(BuildStatus::Stopped));
    // A fourth build: max_deployed 3, so the oldest stopped build goes.
    let c = commit(1, "16.0", Some(20), 20);
    h.deploy_commit(c).await.expect("deploy");
    assert!(eventually(10 * MINUTE, || h.get(&names[0]).is_none()).await);
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_and_invalid_ones_reported() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 10);
    h.ready().await;
    let c = commit(1, "16.0", None, 11);
    let name = c.build_name();
    sim.fail_next(SimMethod::ApplyKubefiles, 2, ClusterError::Transient("503".into()));
    assert_eq!(h.deploy_commit(c).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);
    sim.fail_next(SimMethod::ApplyKubefiles, 1, ClusterError::Invalid("bad kubefile".into()));
    assert_eq!(
        h.start(&name).await,
        Err(CommandError::Cluster(ClusterError::Invalid("bad kubefile".into())))
    );
    // After its backoff, the build can be started.
    assert!(eventually(MINUTE, || h.is_idle()).await, "backoff ends and the controller goes idle");
    assert_eq!(h.start(&name).await, Ok(CommandOutcome::Done));
    assert!(h.stats().actions_failed >= 1);
}

#[tokio::test(start_paused = true)]
async fn undeploy_matching_undeploys_a_pull_request() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(4, 6, 10, false, false), 11);
    h.ready().await;
    for n in 0..3 {
        h.deploy_commit(commit(1, "16.0", Some(42), 30 + n)).await.expect("deploy");
    }
    let keep = commit(1, "16.0", Some(43), 40);
    h.deploy_commit(keep.clone()).await.expect("deploy");
    assert!(eventually(MINUTE, || h.with_index(|i| i.len()) == 4).await);
    let filters = SearchFilters { pr: Some(42), ..SearchFilters::default() };
    assert_eq!(h.undeploy_matching(filters).await, Ok(3));
    assert!(eventually(10 * MINUTE, || h.with_index(|i| i.len()) == 1).await);
    assert!(h.get(&keep.build_name()).is_some());
}

#[tokio::test(start_paused = true)]
async fn the_controller_stops_on_shutdown_and_commands_then_fail() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 12);
    h.ready().await;
    h.shutdown().await;
    assert_eq!(h.start("b1").await, Err(CommandError::Stopped));
}

#[tokio::test(start_paused = true)]
async fn metrics_count_actions_by_kind_and_outcome_and_watch_restarts() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 7);
    h.ready().await;
    assert_eq!(h.stats().watch_restarts, 0, "the first listings are not restarts");

    let c = commit(1, "16.0", None, 42);
    let name = c.build_name();
    assert_eq!(h.deploy_commit(c).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);
    // A start whose scale keeps failing ends in an error of its kind.
    sim.fail_next(SimMethod::Scale, 100, ClusterError::Invalid("rejected".into()));
    assert!(matches!(h.start(&name).await, Err(CommandError::Cluster(ClusterError::Invalid(_)))));

    let counts = h.action_counts();
    let count = |kind: &str, outcome: &str| {
        counts.iter().find(|c| c.kind == kind && c.outcome == outcome).map_or(0, |c| c.count)
    };
    assert_eq!(count("deploy", "ok"), 1, "{counts:?}");
    assert_eq!(count("initialize", "ok"), 1, "{counts:?}");
    assert_eq!(count("init-succeeded", "ok"), 1, "{counts:?}");
    assert_eq!(count("start", "invalid"), 1, "{counts:?}");
    assert_eq!(h.stats().actions_failed, 1);

    // Both watches restart: each fresh listing counts once.
    sim.restart_watches();
    assert!(eventually(MINUTE, || h.stats().watch_restarts == 2).await, "{:?}", h.stats());
}

#[tokio::test(start_paused = true)]
async fn a_build_made_by_the_original_controller_keeps_its_name_through_its_life() {
    // The Python runboat names builds `b` + a UUID, not the derived name:
    // after a swap of controllers such a build must be initialized, started,
    // reset and undeployed under its own name, never duplicated.
    let sim = sim(SimConfig::default());
    // A PR build: the sim records undeploying a branch's newest build as a
    // policy violation, whoever asked.
    let c = commit(3, "16.0", Some(12), 77);
    let name = "b3f1c0de9a8b7c6d5e4f3a2b1c0d9e8f7";
    let created = jiff::Timestamp::from_second(1_700_000_000).expect("time");
    sim.insert_deployment_named(name, &c, InitStatus::Todo, 0, created);
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 3);
    h.ready().await;

    assert!(eventually(MINUTE, || status_of(&h, name) == Some(BuildStatus::Stopped)).await);
    assert_eq!(h.start(name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, name) == Some(BuildStatus::Started)).await);
    assert_eq!(h.stop(name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, name) == Some(BuildStatus::Stopped)).await);
    assert_eq!(h.reset(name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, name) == Some(BuildStatus::Stopped)).await);
    // Redelivering the commit's webhook finds the existing build.
    assert_eq!(
        h.deploy_commit(c.clone()).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::AlreadyDeployed { build_name: name.to_owned() }))
    );
    assert!(sim.deployment(&c.build_name()).is_none(), "no second build under the derived name");
    assert_eq!(sim.deployments().len(), 1);

    assert_eq!(h.undeploy(name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.get(name).is_none()).await);
    assert!(!sim.has_resources(name));
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_commit_redeployed_while_its_build_undeploys_is_deployed_again_afterwards() {
    // A pull request closed then reopened with the same head while the
    // cleanup of its build still runs: the reopen must not be dropped.
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 11);
    h.ready().await;
    let c = commit(4, "16.0", Some(8), 88);
    let name = c.build_name();
    assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);

    sim.script_cleanup(&name, JobScript::succeed_after(Duration::from_secs(20)));
    assert_eq!(h.undeploy(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Undeploying)).await);
    assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done), "accepted, queued");

    // The old build goes, then the commit is deployed and initialized anew.
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Initializing)).await);
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Stopped)).await);
    assert_eq!(sim.report().cleanup_jobs_created, 1);
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

/// Deploys `c` and waits until its initialization made it stopped.
async fn deployed_stopped(
    h: &runboat_core::ControllerHandle,
    c: runboat_core::CommitInfo,
) -> String {
    let name = c.build_name();
    assert_eq!(h.deploy_commit(c).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(h, &name) == Some(BuildStatus::Stopped)).await);
    name
}

#[tokio::test(start_paused = true)]
async fn idle_stop_stops_a_started_build_after_its_session_but_never_a_pinned_one() {
    let sim = sim(SimConfig::default());
    let settings = crate::common::settings_with(6, 10, "idle_stop_after = \"10m\"\nmax_pinned = 1");
    let h = spawn(&sim, Arc::new(NoForge), settings, 11);
    h.ready().await;
    let kept = deployed_stopped(&h, commit(1, "16.0", Some(1), 1)).await;
    let idle = deployed_stopped(&h, commit(1, "16.0", Some(2), 2)).await;

    assert_eq!(h.pin(&kept).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || h.get(&kept).is_some_and(|b| b.pinned)).await);
    assert_eq!(h.pin(&kept).await, Ok(CommandOutcome::Done), "pinning a pinned build is done");
    assert_eq!(h.pin(&idle).await, Ok(CommandOutcome::PinLimit { max_pinned: 1 }));
    assert_eq!(h.pin("nope").await, Ok(CommandOutcome::NotFound));
    assert_eq!(h.status_counts().pinned, 1);

    assert_eq!(h.start(&kept).await, Ok(CommandOutcome::Done));
    assert_eq!(h.start(&idle).await, Ok(CommandOutcome::Done));
    let both_started = || {
        status_of(&h, &kept) == Some(BuildStatus::Started)
            && status_of(&h, &idle) == Some(BuildStatus::Started)
    };
    assert!(eventually(MINUTE, both_started).await);
    let started_at = tokio::time::Instant::now();

    // Within the session nothing is stopped (paused clock: this advances it).
    tokio::time::sleep(Duration::from_secs(8 * 60)).await;
    assert!(both_started(), "stopped before the session ended");
    assert_eq!(h.stats().idle_stops, 0);

    // The session ends: the unpinned build is stopped, the pinned one not.
    assert!(eventually(5 * MINUTE, || status_of(&h, &idle) == Some(BuildStatus::Stopped)).await);
    let stopped_after = started_at.elapsed();
    assert!(stopped_after >= Duration::from_secs(10 * 60), "stopped after {stopped_after:?}");
    assert_eq!(h.stats().idle_stops, 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(status_of(&h, &kept), Some(BuildStatus::Started), "a pinned build was stopped");

    // Woken (started) again: a new session from the new start.
    assert_eq!(h.start(&idle).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &idle) == Some(BuildStatus::Started)).await);
    tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    assert_eq!(status_of(&h, &idle), Some(BuildStatus::Started), "the session restarts on start");
    assert!(eventually(10 * MINUTE, || status_of(&h, &idle) == Some(BuildStatus::Stopped)).await);
    assert_eq!(h.stats().idle_stops, 2);

    // Unpinned, the build's session (long over) ends it.
    assert_eq!(h.unpin(&kept).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &kept) == Some(BuildStatus::Stopped)).await);
    assert_eq!(h.stats().idle_stops, 3);
    assert_eq!(h.status_counts().pinned, 0);
    assert_eq!(
        sim.deployment(&kept).map(|d| d.annotations.contains_key("runboat/pinned")),
        Some(false)
    );
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn pinned_builds_count_against_the_limits_but_survive_them() {
    let sim = sim(SimConfig::default());
    let settings = crate::common::settings_with(2, 3, "max_pinned = 2");
    let h = spawn(&sim, Arc::new(NoForge), settings, 12);
    h.ready().await;
    // The oldest build, pinned and stopped: the first max_deployed would
    // take were it not pinned.
    let p1 = deployed_stopped(&h, commit(1, "16.0", Some(1), 1)).await;
    assert_eq!(h.pin(&p1).await, Ok(CommandOutcome::Done));
    let p2 = deployed_stopped(&h, commit(1, "16.0", Some(2), 2)).await;
    assert_eq!(h.pin(&p2).await, Ok(CommandOutcome::Done));
    assert_eq!(h.start(&p2).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &p2) == Some(BuildStatus::Started)).await);
    let b3 = deployed_stopped(&h, commit(1, "16.0", Some(3), 3)).await;
    assert_eq!(h.status_counts().pinned, 2);

    // A fourth deployed build, one over max_deployed: the oldest unpinned
    // stopped build goes, not the older pinned one.
    let b4 = deployed_stopped(&h, commit(1, "16.0", Some(4), 4)).await;
    assert!(eventually(MINUTE, || h.get(&b3).is_none()).await, "b3 undeployed by max_deployed");
    assert!(h.get(&p1).is_some_and(|b| b.pinned), "the pinned build was undeployed");
    assert_eq!(h.status_counts().deployed, 3, "pinned builds count as deployed");

    // Pinned builds count as started: p2 and b4 fill max_started; starting
    // p1 stops b4 (the only unpinned started build), never a pinned one.
    assert_eq!(h.start(&b4).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &b4) == Some(BuildStatus::Started)).await);
    assert_eq!(h.start(&p1).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &b4) == Some(BuildStatus::Stopped)).await);
    assert!(eventually(MINUTE, || status_of(&h, &p1) == Some(BuildStatus::Started)).await);
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert_eq!(status_of(&h, &p1), Some(BuildStatus::Started));
    assert_eq!(status_of(&h, &p2), Some(BuildStatus::Started));
    assert_eq!(h.stats().idle_stops, 0, "idle stop is off by default");
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn with_a_wake_service_the_route_follows_the_status() {
    use runboat_core::Route;
    let sim = sim(SimConfig::default());
    let settings = crate::common::settings_with(6, 10, "wake_service = \"runboat-wake:8080\"");
    let h = spawn(&sim, Arc::new(NoForge), settings, 13);
    h.ready().await;
    let name = deployed_stopped(&h, commit(1, "16.0", Some(1), 1)).await;
    let route = || h.get(&name).and_then(|b| b.route);
    assert!(eventually(MINUTE, || route() == Some(Route::Wake)).await, "a stopped build wakes");
    assert_eq!(h.start(&name).await, Ok(CommandOutcome::Done));
    // Starting (pod not ready): still the wake Service.
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Starting)).await);
    assert_eq!(route(), Some(Route::Wake));
    assert!(eventually(MINUTE, || route() == Some(Route::Build)).await, "started: the build");
    assert_eq!(status_of(&h, &name), Some(BuildStatus::Started));
    assert_eq!(h.stop(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || route() == Some(Route::Wake)).await, "stopping: wake again");
    let routes = sim.calls().iter().filter(|c| c.method == SimMethod::SetRoute).count();
    assert_eq!(routes, 3, "one write per change");
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn without_a_wake_service_nothing_is_routed() {
    let sim = sim(SimConfig::default());
    let h = spawn(&sim, Arc::new(NoForge), settings(2, 6, 10, false, false), 14);
    h.ready().await;
    let name = deployed_stopped(&h, commit(1, "16.0", Some(1), 1)).await;
    assert_eq!(h.start(&name).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &name) == Some(BuildStatus::Started)).await);
    assert!(sim.calls().iter().all(|c| c.method != SimMethod::SetRoute));
    assert_eq!(h.get(&name).and_then(|b| b.route), None);
    assert_eq!(sim.report().violations, Vec::<String>::new());
}

/// The descriptions posted for `git_commit`, in order.
fn descriptions(forge: &RecordingForge, git_commit: &str) -> Vec<String> {
    let posted = forge.0.lock().expect("lock");
    posted.iter().filter(|s| s.git_commit == git_commit).map(|s| s.description.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn statuses_say_when_a_build_will_be_ready_and_by_which_it_was_superseded() {
    let sim = sim(SimConfig::default());
    let forge = Arc::new(RecordingForge::default());
    let mut s = (*settings(2, 6, 10, false, false)).clone();
    s.supersede_keep = 1;
    let h = spawn(&sim, forge.clone(), Arc::new(s), 11);
    h.ready().await;
    let first = commit(1, "16.0", Some(4), 1);
    sim.script_init(&first.build_name(), JobScript::succeed_after(Duration::from_secs(230)));
    h.deploy_commit(first.clone()).await.expect("deploy");
    let stopped = |c: &runboat_core::CommitInfo| {
        let name = c.build_name();
        let h = h.clone();
        move || status_of(&h, &name) == Some(BuildStatus::Stopped)
    };
    assert!(eventually(10 * MINUTE, stopped(&first)).await);
    // No history before the first run: no estimate.
    assert_eq!(
        descriptions(&forge, first.git_commit()),
        ["build queued", "initializing", "build ready"]
    );
    // The first run took about 4 minutes: the next commit's status says so.
    let second = commit(1, "16.0", Some(4), 2);
    h.deploy_commit(second.clone()).await.expect("deploy");
    assert!(eventually(10 * MINUTE, stopped(&second)).await);
    assert_eq!(
        descriptions(&forge, second.git_commit()),
        ["build queued", "initializing, ready in ~4 min", "build ready"]
    );
    // Initialized, the second supersedes the first, whose status says so.
    assert!(eventually(MINUTE, || h.get(&first.build_name()).is_none()).await);
    let said = descriptions(&forge, first.git_commit());
    assert_eq!(
        said.last().map(String::as_str),
        Some(format!("superseded by {}", second.build_name()).as_str())
    );
    assert_eq!(forge.states_for(first.git_commit()).last().map(String::as_str), Some("success"));
    // The estimate and the init times are known to the handle.
    let eta = h.with_progress(|p| p.init_times(&second.build_name()));
    assert!(eta.is_some_and(|t| t.started.is_some() && t.finished.is_some()));
}

/// A forge that records deployment updates.
#[derive(Debug, Default)]
struct DeploymentRecorder(std::sync::Mutex<Vec<runboat_core::forge::DeploymentUpdate>>);

impl runboat_core::forge::Forge for DeploymentRecorder {
    fn post_status(&self, _status: runboat_core::forge::CommitStatus) {}

    fn post_deployment(&self, update: runboat_core::forge::DeploymentUpdate) {
        self.0.lock().expect("lock").push(update);
    }
}

impl DeploymentRecorder {
    fn of(&self, build: &str) -> Vec<(String, String, String, String)> {
        let updates = self.0.lock().expect("lock");
        updates
            .iter()
            .filter(|u| u.build_name == build)
            .map(|u| {
                (
                    u.state.as_str().to_owned(),
                    u.description.clone(),
                    u.environment_url.clone(),
                    u.log_url.clone(),
                )
            })
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn deployment_updates_follow_the_build_when_enabled() {
    let sim = sim(SimConfig::default());
    let forge = Arc::new(DeploymentRecorder::default());
    let mut s = (*settings(2, 6, 10, false, false)).clone();
    s.supersede_keep = 1;
    s.github_deployments = true;
    let h = spawn(&sim, forge.clone(), Arc::new(s), 12);
    h.ready().await;
    let first = commit(1, "16.0", Some(9), 1);
    let (b1, page) = (first.build_name(), "https://runboat.example.com/builds/");
    h.deploy_commit(first.clone()).await.expect("deploy");
    assert!(eventually(MINUTE, || status_of(&h, &b1) == Some(BuildStatus::Stopped)).await);
    // Started: no new deployment state.
    assert_eq!(h.start(&b1).await, Ok(CommandOutcome::Done));
    assert!(eventually(MINUTE, || status_of(&h, &b1) == Some(BuildStatus::Started)).await);
    // A failing new commit: failure with its init log; the first stays.
    let second = commit(1, "16.0", Some(9), 2);
    let b2 = second.build_name();
    sim.script_init(&b2, JobScript::fail_after(Duration::from_secs(5)));
    h.deploy_commit(second).await.expect("deploy");
    assert!(eventually(MINUTE, || status_of(&h, &b2) == Some(BuildStatus::Failed)).await);
    // A good one: the first two are superseded.
    let third = commit(1, "16.0", Some(9), 3);
    let b3 = third.build_name();
    h.deploy_commit(third.clone()).await.expect("deploy");
    assert!(eventually(MINUTE, || h.get(&b1).is_none() && h.get(&b2).is_none()).await);
    let url = |c: &runboat_core::CommitInfo| format!("http://{}.runboat.example.com", c.slug());
    let s = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    let by = format!("superseded by {b3}");
    assert_eq!(
        forge.of(&b1),
        [
            s("queued", "build queued", "", &format!("{page}{b1}")),
            s("in_progress", "initializing", "", &format!("{page}{b1}")),
            s("success", "build ready", &url(&first), &format!("{page}{b1}")),
            s("inactive", &by, "", &format!("{page}{b1}")),
            s("inactive", "undeployed", "", &format!("{page}{b1}")),
        ]
    );
    let log = format!("https://runboat.example.com/api/v1/builds/{b2}/init-log");
    let b2_states: Vec<(String, String)> = forge
        .of(&b2)
        .into_iter()
        .map(|(st, d, _, l)| (st, if l == log { "log".into() } else { d }))
        .collect();
    assert_eq!(
        b2_states,
        [
            ("queued".into(), "build queued".into()),
            ("in_progress".into(), "initializing, ready in ~1 min".into()),
            ("failure".into(), "log".into()),
            ("inactive".into(), by.clone()),
            ("inactive".into(), "undeployed".into()),
        ]
    );
    assert!(eventually(MINUTE, || status_of(&h, &b3) == Some(BuildStatus::Stopped)).await);
    assert_eq!(forge.of(&b3).last().map(|u| u.2.clone()), Some(url(&third)));
    let envs: std::collections::BTreeSet<(String, bool)> = forge
        .0
        .lock()
        .expect("lock")
        .iter()
        .map(|u| (u.environment.clone(), u.transient))
        .collect();
    assert_eq!(envs.into_iter().collect::<Vec<_>>(), [("runboat/16.0-pr9".to_owned(), true)]);
}

#[tokio::test(start_paused = true)]
async fn no_deployment_updates_unless_enabled() {
    let sim = sim(SimConfig::default());
    let forge = Arc::new(DeploymentRecorder::default());
    let h = spawn(&sim, forge.clone(), settings(2, 6, 10, false, false), 13);
    h.ready().await;
    let c = commit(1, "16.0", Some(9), 1);
    h.deploy_commit(c.clone()).await.expect("deploy");
    assert!(
        eventually(MINUTE, || status_of(&h, &c.build_name()) == Some(BuildStatus::Stopped)).await
    );
    assert!(forge.0.lock().expect("lock").is_empty());
}
