//! Whole build lifecycles driven by the real controller over `KubeCluster`
//! and kubesim, with and without faults.

use std::sync::Arc;
use std::time::Duration;

use kubesim::{ControllerConfig, FailRule, JobRule, JobScript, KubeSim};
use runboat_core::forge::NoForge;
use runboat_core::{
    BuildStatus, CommandOutcome, CommitInfo, Controller, ControllerConfig as LoopConfig,
    ControllerHandle, RetryPolicy,
};

use crate::cluster::{NS, cluster_on, commit, leftovers, settings, sim_with, slow};

const LIFECYCLE_WAIT: Duration = Duration::from_secs(60);

pub(crate) async fn controller(sim: &KubeSim, extra: &str) -> ControllerHandle {
    // Logs with RUST_LOG set (a second init in the same binary is ignored).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let settings = settings(extra);
    let cluster = cluster_on(sim, settings.clone()).await;
    let config = LoopConfig {
        retry: RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        },
        failure_backoff_max: Duration::from_secs(2),
        reflect_timeout: Duration::from_secs(5),
        ..LoopConfig::default()
    };
    let handle = Controller::spawn(Arc::new(cluster), Arc::new(NoForge), settings, config);
    tokio::time::timeout(LIFECYCLE_WAIT, handle.ready()).await.expect("controller ready");
    handle
}

/// Waits until `pred` holds for the build (`None`: the build is gone).
pub(crate) async fn wait_build(
    handle: &ControllerHandle,
    name: &str,
    what: &str,
    pred: impl Fn(Option<BuildStatus>) -> bool,
) {
    let mut events = handle.subscribe();
    let deadline = tokio::time::Instant::now() + LIFECYCLE_WAIT;
    loop {
        let status = handle.get(name).map(|b| b.status);
        if pred(status) {
            return;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(_) => {}
            Err(_) => panic!("{name}: never {what} (status {status:?})"),
        }
    }
}

pub(crate) async fn wait_status(handle: &ControllerHandle, name: &str, status: BuildStatus) {
    wait_build(handle, name, status.as_str(), |s| s == Some(status)).await;
}

/// deploy → initialize → succeed → start → stop → undeploy → cleanup → gone.
async fn full_lifecycle(sim: &KubeSim, handle: &ControllerHandle, c: CommitInfo) {
    let name = c.build_name();
    assert_eq!(handle.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    wait_status(handle, &name, BuildStatus::Stopped).await;
    let init_log = handle.init_log(&name).await.expect("init log");
    assert!(init_log.is_some_and(|l| !l.is_empty()), "an init log");

    assert_eq!(handle.start(&name).await, Ok(CommandOutcome::Done));
    wait_status(handle, &name, BuildStatus::Started).await;
    let build = handle.get(&name).expect("build");
    assert!(build.last_scaled.is_some(), "start writes last-scaled");

    assert_eq!(handle.stop(&name).await, Ok(CommandOutcome::Done));
    wait_status(handle, &name, BuildStatus::Stopped).await;

    assert_eq!(handle.undeploy(&name).await, Ok(CommandOutcome::Done));
    wait_build(handle, &name, "gone", |s| s.is_none()).await;
    let h = sim.handle();
    assert!(
        h.wait_until(LIFECYCLE_WAIT, |h| leftovers(h, &name).is_empty()).await,
        "left behind: {:?}",
        leftovers(&h, &name)
    );
}

#[tokio::test]
async fn a_build_lives_and_goes_without_a_trace() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let handle = controller(&sim, "").await;
    full_lifecycle(&sim, &handle, commit(10)).await;
    assert!(handle.cleanup_failures().is_empty());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_failed_initialization_is_failed_and_still_undeploys() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let c = commit(11);
    let name = c.build_name();
    sim.handle().add_job_rule(JobRule::by_name(
        &format!("^{name}-.*initialize"),
        JobScript::fail().with_log("Traceback: boom\n"),
    ));
    let handle = controller(&sim, "").await;
    assert_eq!(handle.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &name, BuildStatus::Failed).await;
    let log = handle.init_log(&name).await.expect("init log").expect("a log");
    assert!(log.contains("Traceback: boom"), "{log}");
    // Start of a failed build does nothing.
    assert!(matches!(handle.start(&name).await, Ok(CommandOutcome::Ignored(_))));
    assert_eq!(handle.undeploy(&name).await, Ok(CommandOutcome::Done));
    wait_build(&handle, &name, "gone", |s| s.is_none()).await;
    assert!(sim.handle().wait_until(LIFECYCLE_WAIT, |h| leftovers(h, &name).is_empty()).await);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_reset_build_initializes_again() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let handle = controller(&sim, "").await;
    let c = commit(12);
    let name = c.build_name();
    assert_eq!(handle.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &name, BuildStatus::Stopped).await;
    assert_eq!(handle.reset(&name).await, Ok(CommandOutcome::Done));
    // Back through initialization to stopped.
    wait_status(&handle, &name, BuildStatus::Stopped).await;
    assert_eq!(handle.undeploy(&name).await, Ok(CommandOutcome::Done));
    wait_build(&handle, &name, "gone", |s| s.is_none()).await;
    handle.shutdown().await;
}

#[tokio::test]
async fn undeploy_without_cleanup_job_deletes_everything() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let handle = controller(&sim, "no_cleanup_job = true").await;
    let c = commit(13);
    let name = c.build_name();
    assert_eq!(handle.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &name, BuildStatus::Stopped).await;
    assert_eq!(handle.undeploy(&name).await, Ok(CommandOutcome::Done));
    wait_build(&handle, &name, "gone", |s| s.is_none()).await;
    assert!(sim.handle().wait_until(LIFECYCLE_WAIT, |h| leftovers(h, &name).is_empty()).await);
    handle.shutdown().await;
}

/// Faults while builds live: watches closed, history compacted, bursts of
/// 500/503/429 on every verb, added latency.
#[tokio::test]
async fn lifecycles_survive_faults() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let h = sim.handle();
    let handle = controller(&sim, "").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = {
        let h = h.clone();
        let stop = stop.clone();
        let heavy = slow();
        tokio::spawn(async move {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match round % 4 {
                    0 => h.close_watches(),
                    1 => {
                        h.compact_history();
                        h.close_watches();
                    }
                    // A burst: the next requests fail, whatever they are...
                    2 => {
                        for status in [500, 503, 429] {
                            h.fail_next(FailRule::new(if heavy { 3 } else { 1 }, status));
                        }
                    }
                    // ... until it ends (what the burst left unused goes),
                    // then slow answers for a while.
                    _ => {
                        h.clear_faults();
                        h.set_latency(Duration::from_millis(if heavy { 30 } else { 5 }));
                    }
                }
                round += 1;
                // The cadence of the faults, not a wait for a condition.
                tokio::time::sleep(Duration::from_millis(if heavy { 400 } else { 700 })).await;
                h.set_latency(Duration::ZERO);
            }
        })
    };
    // Builds living side by side (within the default limits).
    let builds = if slow() { 6 } else { 2 };
    futures::future::join_all((0..builds).map(|i| full_lifecycle(&sim, &handle, commit(20 + i))))
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    chaos.await.expect("chaos task");
    h.clear_faults();
    // Nothing of any build is left, and the controller knows no build.
    for i in 0..builds {
        assert!(leftovers(&h, &commit(20 + i).build_name()).is_empty());
    }
    assert_eq!(handle.with_index(|idx| idx.len()), 0);
    assert!(h.list("deployments", Some(NS)).expect("list").is_empty());
    handle.shutdown().await;
}

/// The same lifecycle with the kustomize variant of the default kubefiles
/// (`kubectl kustomize`), when kubectl is on PATH.
#[tokio::test]
async fn a_kustomize_build_lives_and_goes_without_a_trace() {
    if !crate::support::kubectl_available("a_kustomize_build_lives_and_goes_without_a_trace").await
    {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kubefiles/kustomize");
    let sim = sim_with(ControllerConfig::instant()).await;
    let extra = format!("build_default_kubefiles_path = {:?}", dir.display().to_string());
    let handle = controller(&sim, &extra).await;
    full_lifecycle(&sim, &handle, commit(30)).await;
    handle.shutdown().await;
}

/// The controller is stopped mid-flight and a new one takes over from the
/// cluster's state alone: every build still ends stopped, then gone.
#[tokio::test]
async fn a_restarted_controller_finishes_what_the_first_began() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let h = sim.handle();
    // Slow initializations, so the first controller stops while they run.
    h.add_job_rule(JobRule::by_label(
        "runboat/job-kind",
        "initialize",
        JobScript::succeed().with_duration(Duration::from_millis(300)),
    ));
    let builds: u64 = if slow() { 12 } else { 4 };
    let commits: Vec<CommitInfo> = (0..builds).map(|i| commit(40 + i)).collect();
    // Room for every build (the limits policy would undeploy beyond 10).
    let limits = "max_deployed = 100";
    let first = controller(&sim, limits).await;
    for c in &commits {
        assert_eq!(first.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    }
    assert!(
        h.wait_until(LIFECYCLE_WAIT, |h| !h.list("jobs", Some(NS)).expect("jobs").is_empty()).await
    );
    first.shutdown().await;

    let second = controller(&sim, limits).await;
    for c in &commits {
        wait_status(&second, &c.build_name(), BuildStatus::Stopped).await;
    }
    for c in &commits {
        assert_eq!(second.undeploy(&c.build_name()).await, Ok(CommandOutcome::Done));
    }
    for c in &commits {
        let name = c.build_name();
        wait_build(&second, &name, "gone", |s| s.is_none()).await;
        assert!(h.wait_until(LIFECYCLE_WAIT, |h| leftovers(h, &name).is_empty()).await);
    }
    second.shutdown().await;
}

/// Idle stop on kubesim with a 2 s session: the session counts from the
/// `runboat/last-scaled` the start wrote in the cluster, so a second
/// controller (restarted with idle stop on) stops a build the first
/// started; a pinned build is never stopped, and a restart starts a new
/// session.
#[tokio::test]
async fn idle_stop_stops_unpinned_builds_after_their_session_across_a_restart() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let first = controller(&sim, "").await;
    let (idle, kept) = (commit(60).build_name(), commit(61).build_name());
    for c in [commit(60), commit(61)] {
        assert_eq!(first.deploy_commit(c).await, Ok(CommandOutcome::Done));
    }
    for name in [&idle, &kept] {
        wait_status(&first, name, BuildStatus::Stopped).await;
        assert_eq!(first.start(name).await, Ok(CommandOutcome::Done));
    }
    assert_eq!(first.pin(&kept).await, Ok(CommandOutcome::Done));
    for name in [&idle, &kept] {
        wait_status(&first, name, BuildStatus::Started).await;
    }
    wait_build(&first, &kept, "pinned", |_| first.get(&kept).is_some_and(|b| b.pinned)).await;
    first.shutdown().await;

    let second = controller(&sim, "idle_stop_after = \"2s\"").await;
    let started_at = second.get(&idle).and_then(|b| b.last_scaled).expect("last-scaled");
    wait_status(&second, &idle, BuildStatus::Stopped).await;
    assert!(jiff::Timestamp::now() >= started_at + jiff::SignedDuration::from_secs(2));
    assert_eq!(second.stats().idle_stops, 1);

    // Woken again: stopped again after a new session; the pinned build,
    // whose session ran out long ago, stays started all along.
    assert_eq!(second.start(&idle).await, Ok(CommandOutcome::Done));
    wait_status(&second, &idle, BuildStatus::Started).await;
    let restarted_at = second.get(&idle).and_then(|b| b.last_scaled).expect("last-scaled");
    assert!(restarted_at > started_at, "the start wrote a new last-scaled");
    wait_status(&second, &idle, BuildStatus::Stopped).await;
    assert!(jiff::Timestamp::now() >= restarted_at + jiff::SignedDuration::from_secs(2));
    assert_eq!(second.stats().idle_stops, 2);
    assert_eq!(second.get(&kept).map(|b| b.status), Some(BuildStatus::Started));
    let kept_since = second.get(&kept).and_then(|b| b.last_scaled).expect("last-scaled");
    assert!(jiff::Timestamp::now() >= kept_since + jiff::SignedDuration::from_secs(2));

    // Unpinned, its long-gone session stops it.
    assert_eq!(second.unpin(&kept).await, Ok(CommandOutcome::Done));
    wait_status(&second, &kept, BuildStatus::Stopped).await;
    assert_eq!(second.stats().idle_stops, 3);
    second.shutdown().await;
}

/// The Service an ingress controller would send a request for `host` to,
/// reading the cluster's Ingress objects as it does (host → rule → path
/// `/` → service backend).
fn resolve(h: &kubesim::Handle, host: &str) -> Option<String> {
    let ingresses = h.list("ingresses", Some(NS)).expect("ingresses");
    ingresses.iter().find_map(|i| {
        let rules = i.pointer("/spec/rules")?.as_array()?;
        let rule = rules.iter().find(|r| r["host"] == host)?;
        let paths = rule.pointer("/http/paths")?.as_array()?;
        let path = paths.iter().find(|p| p["path"] == "/")?;
        path.pointer("/backend/service/name")?.as_str().map(str::to_owned)
    })
}

/// With `wake_service`, a build's hosts reach the wake Service while it is
/// not started and ready, and its own Services once it is; a reset
/// re-applying the kubefiles and a controller restart keep that.
#[tokio::test]
async fn the_ingress_points_at_the_wake_service_while_the_build_sleeps() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let h = sim.handle();
    let extra = "wake_service = \"runboat-wake:8080\"";
    let first = controller(&sim, extra).await;
    let c = commit(70);
    let name = c.build_name();
    let host = format!("{}.runboat.example.com", c.slug());
    let mail = format!("{}.mail.runboat.example.com", c.slug());
    assert_eq!(first.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    wait_status(&first, &name, BuildStatus::Stopped).await;
    let sleeping = |h: &kubesim::Handle| {
        resolve(h, &host).as_deref() == Some("runboat-wake")
            && resolve(h, &mail).as_deref() == Some("runboat-wake")
    };
    assert!(h.wait_until(LIFECYCLE_WAIT, sleeping).await, "{:?}", resolve(&h, &host));
    let port =
        h.list("ingresses", Some(NS)).expect("ingresses").iter().find_map(|i| {
            i.pointer("/spec/rules/0/http/paths/0/backend/service/port/number").cloned()
        });
    assert_eq!(port, Some(serde_json::json!(8080)));

    // Started and ready: its own Services.
    assert_eq!(first.start(&name).await, Ok(CommandOutcome::Done));
    let awake = |h: &kubesim::Handle| {
        resolve(h, &host).is_some_and(|s| s != "runboat-wake" && s.starts_with(&name))
            && resolve(h, &mail).is_some_and(|s| s != "runboat-wake")
    };
    assert!(h.wait_until(LIFECYCLE_WAIT, awake).await, "{:?}", resolve(&h, &host));
    let own = (resolve(&h, &host), resolve(&h, &mail));
    assert_eq!(first.get(&name).map(|b| b.status), Some(BuildStatus::Started));

    // Stopped: the wake Service again; a reset (which re-applies the
    // kubefiles, backends included) leaves it so.
    assert_eq!(first.stop(&name).await, Ok(CommandOutcome::Done));
    assert!(h.wait_until(LIFECYCLE_WAIT, sleeping).await);
    assert_eq!(first.reset(&name).await, Ok(CommandOutcome::Done));
    wait_build(&first, &name, "re-initializing", |s| s != Some(BuildStatus::Stopped)).await;
    wait_status(&first, &name, BuildStatus::Stopped).await;
    assert!(sleeping(&h), "after the reset: {:?}", resolve(&h, &host));
    first.shutdown().await;

    // A new controller finds the routing in the cluster, and puts the
    // build's own backends back on the next start.
    let second = controller(&sim, extra).await;
    assert!(sleeping(&h));
    assert_eq!(second.start(&name).await, Ok(CommandOutcome::Done));
    assert!(h.wait_until(LIFECYCLE_WAIT, awake).await);
    assert_eq!((resolve(&h, &host), resolve(&h, &mail)), own);
    assert_eq!(second.stop(&name).await, Ok(CommandOutcome::Done));
    assert!(h.wait_until(LIFECYCLE_WAIT, sleeping).await);
    // The record follows the Ingress write.
    let recorded = |_: Option<BuildStatus>| {
        second.get(&name).and_then(|b| b.route) == Some(runboat_core::Route::Wake)
    };
    wait_build(&second, &name, "recorded as routed to wake", recorded).await;
    second.shutdown().await;

    // The setting removed: a sleeping build's Ingress gets its own
    // backends back (else it would stay unreachable once started).
    let third = controller(&sim, "").await;
    let own_again = |h: &kubesim::Handle| (resolve(h, &host), resolve(h, &mail)) == own;
    assert!(h.wait_until(LIFECYCLE_WAIT, own_again).await, "{:?}", resolve(&h, &host));
    assert_eq!(third.get(&name).map(|b| b.status), Some(BuildStatus::Stopped));
    third.shutdown().await;
}
