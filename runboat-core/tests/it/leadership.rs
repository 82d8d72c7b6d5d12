//! Two controllers on one simulated cluster following a leadership signal:
//! the leadership moves from one to the other in the middle of a burst of
//! deploys, and the old leader makes no scheduling write once it stepped
//! down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use runboat_core::forge::NoForge;
use runboat_core::sim::{Faults, JobScript, SimCluster, SimConfig};
use runboat_core::{
    BuildStatus, Cluster, ClusterEvent, ClusterResult, CommandOutcome, CommitInfo, Controller,
    ControllerHandle, DeploymentFacts, InitStatus, JobFacts, JobKind, KubefilesMode,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::common::{commit, config, eventually, settings};

/// One write a controller made: when, and whether only a request could
/// have asked for it (the apply of a deploy).
#[derive(Clone)]
struct Write {
    replica: &'static str,
    at: Instant,
    what: String,
    of_request: bool,
    /// The call returned (an aborted action's call never does).
    done: bool,
}

/// A [`Cluster`] that forwards to the shared simulated cluster and logs
/// every write of its replica.
struct Counting {
    replica: &'static str,
    sim: SimCluster,
    log: Arc<Mutex<Vec<Write>>>,
}

impl Counting {
    async fn write<T>(
        &self,
        what: String,
        of_request: bool,
        call: impl Future<Output = ClusterResult<T>>,
    ) -> ClusterResult<T> {
        let at = Instant::now();
        let replica = self.replica;
        let i = {
            let mut log = self.log.lock().expect("log");
            log.push(Write { replica, at, what, of_request, done: false });
            log.len() - 1
        };
        let r = call.await;
        self.log.lock().expect("log")[i].done = true;
        r
    }
}

#[async_trait]
impl Cluster for Counting {
    fn deployment_events(&self) -> BoxStream<'static, ClusterEvent<DeploymentFacts>> {
        self.sim.deployment_events()
    }
    fn job_events(&self) -> BoxStream<'static, ClusterEvent<JobFacts>> {
        self.sim.job_events()
    }
    async fn apply_kubefiles(
        &self,
        build_name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()> {
        self.write(
            format!("apply {mode} {build_name}"),
            mode == KubefilesMode::Deployment,
            self.sim.apply_kubefiles(build_name, commit, mode),
        )
        .await
    }
    async fn scale(&self, build_name: &str, replicas: i32) -> ClusterResult<()> {
        self.write(
            format!("scale {build_name} {replicas}"),
            false,
            self.sim.scale(build_name, replicas),
        )
        .await
    }
    async fn set_init_status(&self, build_name: &str, status: InitStatus) -> ClusterResult<()> {
        self.write(
            format!("init status {build_name} {status:?}"),
            false,
            self.sim.set_init_status(build_name, status),
        )
        .await
    }
    async fn delete_deployment(&self, build_name: &str) -> ClusterResult<()> {
        self.write(format!("delete {build_name}"), false, self.sim.delete_deployment(build_name))
            .await
    }
    async fn remove_finalizer(&self, build_name: &str) -> ClusterResult<()> {
        self.write(
            format!("remove finalizer {build_name}"),
            false,
            self.sim.remove_finalizer(build_name),
        )
        .await
    }
    async fn kill_jobs(&self, build_name: &str, kind: JobKind) -> ClusterResult<()> {
        self.write(
            format!("kill {kind} jobs {build_name}"),
            false,
            self.sim.kill_jobs(build_name, kind),
        )
        .await
    }
    async fn delete_build_resources(&self, build_name: &str) -> ClusterResult<()> {
        self.write(
            format!("delete resources {build_name}"),
            false,
            self.sim.delete_build_resources(build_name),
        )
        .await
    }
    async fn init_log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        self.sim.init_log(build_name).await
    }
    async fn log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        self.sim.log(build_name).await
    }
    async fn get_deployment(&self, build_name: &str) -> ClusterResult<Option<DeploymentFacts>> {
        self.sim.get_deployment(build_name).await
    }
}

fn replica(
    name: &'static str,
    sim: &SimCluster,
    log: &Arc<Mutex<Vec<Write>>>,
    seed: u64,
    leader: watch::Receiver<bool>,
) -> ControllerHandle {
    let cluster = Arc::new(Counting { replica: name, sim: sim.clone(), log: log.clone() });
    Controller::spawn_with_leadership(
        cluster,
        Arc::new(NoForge),
        settings(2, 100, 100, false, false),
        config(seed),
        leader,
    )
}

#[tokio::test(start_paused = true)]
async fn leadership_moves_mid_burst_and_the_old_leader_stops_scheduling_at_once() {
    let sim = SimCluster::new(SimConfig {
        init_job: JobScript::succeed_after(Duration::from_secs(5)),
        // Calls and events take time, so the step-down finds actions
        // running.
        faults: Faults {
            max_call_delay: Duration::from_millis(400),
            max_event_delay: Duration::from_millis(200),
            ..Faults::default()
        },
        // The sim records every init job created above this as a violation.
        max_initializing: Some(2),
        ..SimConfig::default()
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a_leads, a_rx) = watch::channel(true);
    let (b_leads, b_rx) = watch::channel(false);
    let a = replica("a", &sim, &log, 1, a_rx);
    let b = replica("b", &sim, &log, 2, b_rx);
    a.ready().await;
    b.ready().await;

    // Webhooks reach either replica; a follower serves its deploys too.
    let commits: Vec<CommitInfo> = (1..=20).map(|n| commit(1, "16.0", Some(n), n)).collect();
    for (i, c) in commits[..10].iter().enumerate() {
        let h = if i % 2 == 0 { &a } else { &b };
        assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    }
    // Step down while A has a scheduling call under way.
    let a_mid_call =
        || log.lock().expect("log").iter().any(|w| w.replica == "a" && !w.of_request && !w.done);
    assert!(
        eventually(Duration::from_secs(60), || sim.report().init_jobs_created >= 1 && a_mid_call())
            .await
    );

    // A stops renewing: it steps down at once; B takes the lease only once
    // it could have expired (renew deadline < lease duration).
    let down_at = Instant::now();
    a_leads.send_replace(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let up_at = Instant::now();
    b_leads.send_replace(true);
    for (i, c) in commits[10..].iter().enumerate() {
        let h = if i % 2 == 0 { &a } else { &b };
        assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    }

    let settled = |h: &ControllerHandle| {
        commits.iter().all(|c| {
            h.get(&c.build_name()).is_some_and(|b| {
                b.status == BuildStatus::Stopped && b.init_status == InitStatus::Succeeded
            })
        })
    };
    assert!(eventually(Duration::from_secs(600), || settled(&a) && settled(&b)).await);

    let report = sim.report();
    assert_eq!(report.violations, Vec::<String>::new(), "initializing above max_initializing");
    assert_eq!(report.init_jobs_created, 20, "one init job per build, never two");

    let log = log.lock().expect("log").clone();
    let scheduling = |w: &&Write| !w.of_request;
    assert!(
        log.iter().filter(scheduling).any(|w| w.replica == "a" && w.at < down_at),
        "A scheduled before stepping down"
    );
    assert!(
        log.iter().filter(scheduling).any(|w| w.replica == "a" && !w.done),
        "the step-down aborted a running action mid-call"
    );
    let late: Vec<&str> = log
        .iter()
        .filter(scheduling)
        .filter(|w| w.replica == "a" && w.at > down_at)
        .map(|w| w.what.as_str())
        .collect();
    assert!(late.is_empty(), "A wrote after stepping down: {late:?}");
    let early: Vec<&str> = log
        .iter()
        .filter(scheduling)
        .filter(|w| w.replica == "b" && w.at < up_at)
        .map(|w| w.what.as_str())
        .collect();
    assert!(early.is_empty(), "B scheduled before it led: {early:?}");
    assert!(log.iter().filter(scheduling).any(|w| w.replica == "b"), "B took over");
    // Requests reached both replicas all along.
    for r in ["a", "b"] {
        assert!(log.iter().any(|w| w.replica == r && w.of_request && w.at >= up_at));
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_without_the_leadership_never_schedules() {
    let sim = SimCluster::new(SimConfig::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (_leads, rx) = watch::channel(false);
    let h = replica("f", &sim, &log, 3, rx);
    h.ready().await;
    let c = commit(2, "17.0", None, 7);
    assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    assert!(eventually(Duration::from_secs(5), || h.get(&c.build_name()).is_some()).await);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.get(&c.build_name()).map(|b| b.init_status), Some(InitStatus::Todo));
    let log = log.lock().expect("log").clone();
    let scheduled: Vec<&str> =
        log.iter().filter(|w| !w.of_request).map(|w| w.what.as_str()).collect();
    assert!(scheduled.is_empty(), "a follower scheduled: {scheduled:?}");
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_signal_goes_away_stops_scheduling_and_does_not_spin() {
    let sim = SimCluster::new(SimConfig::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (leads, rx) = watch::channel(true);
    let h = replica("l", &sim, &log, 4, rx);
    h.ready().await;
    drop(leads);
    let c = commit(3, "17.0", None, 9);
    assert_eq!(h.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    let batches = h.stats().batches;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.get(&c.build_name()).map(|b| b.init_status), Some(InitStatus::Todo));
    assert!(log.lock().expect("log").iter().all(|w| w.of_request));
    // A closed channel is not followed forever: the loop stays quiet.
    assert!(h.stats().batches - batches < 20, "{} batches", h.stats().batches - batches);
    h.shutdown().await;
}
