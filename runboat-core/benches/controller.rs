//! `cargo bench -p runboat-core --bench controller`: how fast the controller
//! reacts and how it copes with a burst.
//!
//! - `reaction_latency`: one Deployment event of a new `todo` build in →
//!   the `apply_kubefiles(initialize)` call out, through a bare channel
//!   cluster (so only the controller is measured), on a 2-worker runtime.
//! - `burst_10k`: 10,000 `deploy_commit` commands at once through the
//!   simulated cluster (no delays, jobs succeed at once, `max_initializing`
//!   200), until all 10,000 builds are initialized and stopped: deploy, init job, init success,
//!   about 60,000 cluster calls and 70,000 events in all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::stream::{BoxStream, StreamExt};
use runboat_core::contract::{
    ANNOTATION_GIT_COMMIT, ANNOTATION_INIT_STATUS, ANNOTATION_PR, ANNOTATION_REPO,
    ANNOTATION_TARGET_BRANCH, LABEL_BUILD,
};
use runboat_core::forge::NoForge;
use runboat_core::sim::{JobOutcome, JobScript, SimCluster, SimConfig};
use runboat_core::{
    BuildStatus, Cluster, ClusterEvent, ClusterResult, CommitInfo, Controller, ControllerConfig,
    DeploymentFacts, InitStatus, JobFacts, JobKind, KubefilesMode, Settings,
};
use tokio::sync::mpsc;

fn settings(max: usize) -> Arc<Settings> {
    settings_with(max, max)
}

fn settings_with(max_initializing: usize, max: usize) -> Arc<Settings> {
    Arc::new(
        Settings::from_toml_str(&format!(
            r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "ns"
build_domain = "example.com"
max_initializing = {max_initializing}
max_started = {max}
max_deployed = {max}

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{{ image = "odoo:16" }}]
"#
        ))
        .expect("settings"),
    )
}

fn commit(n: u64) -> CommitInfo {
    CommitInfo::new("oca/bench", "16.0", Some(n % 5000 + 1), &format!("{n:040x}")).expect("commit")
}

fn todo_facts(c: &CommitInfo) -> DeploymentFacts {
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_REPO.to_owned(), c.repo().to_owned());
    annotations.insert(ANNOTATION_TARGET_BRANCH.to_owned(), c.target_branch().to_owned());
    annotations.insert(ANNOTATION_PR.to_owned(), c.pr_annotation());
    annotations.insert(ANNOTATION_GIT_COMMIT.to_owned(), c.git_commit().to_owned());
    annotations.insert(ANNOTATION_INIT_STATUS.to_owned(), InitStatus::Todo.as_str().to_owned());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_BUILD.to_owned(), c.build_name());
    DeploymentFacts {
        name: c.build_name(),
        annotations,
        labels,
        spec_replicas: Some(0),
        creation_timestamp: Some(jiff::Timestamp::now()),
        available_since: None,
        ..DeploymentFacts::default()
    }
}

type Rx<T> = Mutex<Option<mpsc::UnboundedReceiver<ClusterEvent<T>>>>;

/// A cluster that only forwards: events from the bench, calls to the bench.
struct ChannelCluster {
    deployments: Rx<DeploymentFacts>,
    jobs: Rx<JobFacts>,
    applied: mpsc::UnboundedSender<String>,
}

fn take<T: Send + 'static>(rx: &Rx<T>) -> BoxStream<'static, ClusterEvent<T>> {
    match rx.lock().expect("lock").take() {
        Some(rx) => {
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
                .boxed()
        }
        None => futures::stream::pending().boxed(),
    }
}

#[async_trait]
impl Cluster for ChannelCluster {
    fn deployment_events(&self) -> BoxStream<'static, ClusterEvent<DeploymentFacts>> {
        take(&self.deployments)
    }
    fn job_events(&self) -> BoxStream<'static, ClusterEvent<JobFacts>> {
        take(&self.jobs)
    }
    async fn apply_kubefiles(
        &self,
        _build_name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()> {
        if mode == KubefilesMode::Initialize {
            let _ = self.applied.send(commit.build_name());
        }
        Ok(())
    }
    async fn scale(&self, _: &str, _: i32) -> ClusterResult<()> {
        Ok(())
    }
    async fn set_init_status(&self, _: &str, _: InitStatus) -> ClusterResult<()> {
        Ok(())
    }
    async fn delete_deployment(&self, _: &str) -> ClusterResult<()> {
        Ok(())
    }
    async fn remove_finalizer(&self, _: &str) -> ClusterResult<()> {
        Ok(())
    }
    async fn kill_jobs(&self, _: &str, _: JobKind) -> ClusterResult<()> {
        Ok(())
    }
    async fn delete_build_resources(&self, _: &str) -> ClusterResult<()> {
        Ok(())
    }
    async fn init_log(&self, _: &str) -> ClusterResult<Option<String>> {
        Ok(None)
    }
    async fn log(&self, _: &str) -> ClusterResult<Option<String>> {
        Ok(None)
    }
    async fn get_deployment(&self, _: &str) -> ClusterResult<Option<DeploymentFacts>> {
        Ok(None)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn reaction_latency(c: &mut Criterion) {
    let rt = runtime();
    let (dtx, drx) = mpsc::unbounded_channel();
    let (jtx, jrx) = mpsc::unbounded_channel();
    let (atx, mut arx) = mpsc::unbounded_channel();
    dtx.send(ClusterEvent::Relisted(Vec::new())).expect("send");
    jtx.send(ClusterEvent::Relisted(Vec::new())).expect("send");
    let cluster = ChannelCluster {
        deployments: Mutex::new(Some(drx)),
        jobs: Mutex::new(Some(jrx)),
        applied: atx,
    };
    let handle = rt.block_on(async {
        let h = Controller::spawn(
            Arc::new(cluster),
            Arc::new(NoForge),
            settings(1_000_000_000),
            ControllerConfig::default(),
        );
        h.ready().await;
        h
    });
    let mut n = 0u64;
    let mut group = c.benchmark_group("controller");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    group.bench_function("reaction_latency", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let facts = todo_facts(&commit(n));
                    let start = Instant::now();
                    dtx.send(ClusterEvent::Applied(facts.clone())).expect("send");
                    arx.recv().await.expect("initialize call");
                    total += start.elapsed();
                    // Keep the index small and steady between iterations.
                    dtx.send(ClusterEvent::Deleted(facts)).expect("send");
                }
                total
            })
        });
    });
    group.finish();
    drop(handle);
}

fn burst(c: &mut Criterion) {
    const N: u64 = 10_000;
    let rt = runtime();
    let mut group = c.benchmark_group("controller");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("burst_10k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let instant = JobScript {
                        pending: Duration::ZERO,
                        run: Duration::ZERO,
                        outcome: JobOutcome::Succeed,
                    };
                    let sim = SimCluster::new(SimConfig {
                        scale_delay: Duration::ZERO,
                        init_job: instant,
                        cleanup_job: instant,
                        ..SimConfig::default()
                    });
                    let handle = Controller::spawn(
                        Arc::new(sim.clone()),
                        Arc::new(NoForge),
                        settings_with(200, 100_000),
                        ControllerConfig { max_concurrent_actions: 64, ..Default::default() },
                    );
                    handle.ready().await;
                    let start = Instant::now();
                    let mut commands = tokio::task::JoinSet::new();
                    for i in 0..N {
                        let h = handle.clone();
                        commands.spawn(async move { h.deploy_commit(commit(i)).await });
                    }
                    while let Some(r) = commands.join_next().await {
                        r.expect("join").expect("deploy");
                    }
                    loop {
                        let stopped =
                            handle.with_index(|i| i.count_by_status(BuildStatus::Stopped));
                        if stopped == usize::try_from(N).expect("n") {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    total += start.elapsed();
                    handle.shutdown().await;
                }
                total
            })
        });
    });
    group.finish();
}

criterion_group!(benches, reaction_latency, burst);
criterion_main!(benches);
