//! mockall interaction tests of the job and command handlers: which cluster
//! calls happen, in which order, and which must not happen. An unexpected
//! call panics inside the action, which the controller contains and counts,
//! so every test ends by asserting that no action panicked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use mockall::{Sequence, mock};
use tokio::sync::mpsc;

use super::*;
use crate::cluster::{ClusterEvent, JobFacts, JobKind, JobPhase, KubefilesMode};
use crate::contract::{
    ANNOTATION_GIT_COMMIT, ANNOTATION_INIT_STATUS, ANNOTATION_PR, ANNOTATION_REPO,
    ANNOTATION_TARGET_BRANCH, LABEL_BUILD,
};
use crate::forge::{CommitState, CommitStatus};
use crate::status::{BuildStatus, DeploymentFacts, InitStatus};

mock! {
    pub Cluster {}

    #[async_trait]
    impl Cluster for Cluster {
        fn deployment_events(&self) -> BoxStream<'static, ClusterEvent<DeploymentFacts>>;
        fn job_events(&self) -> BoxStream<'static, ClusterEvent<JobFacts>>;
        async fn apply_kubefiles(&self, build_name: &str, commit: &CommitInfo, mode: KubefilesMode) -> ClusterResult<()>;
        async fn scale(&self, build_name: &str, replicas: i32) -> ClusterResult<()>;
        async fn set_init_status(&self, build_name: &str, status: InitStatus) -> ClusterResult<()>;
        async fn delete_deployment(&self, build_name: &str) -> ClusterResult<()>;
        async fn remove_finalizer(&self, build_name: &str) -> ClusterResult<()>;
        async fn kill_jobs(&self, build_name: &str, kind: JobKind) -> ClusterResult<()>;
        async fn delete_build_resources(&self, build_name: &str) -> ClusterResult<()>;
        async fn init_log(&self, build_name: &str) -> ClusterResult<Option<String>>;
        async fn log(&self, build_name: &str) -> ClusterResult<Option<String>>;
        async fn get_deployment(&self, build_name: &str) -> ClusterResult<Option<DeploymentFacts>>;
    }
}

/// Records statuses, and how many expected cluster calls had happened
/// when each was posted.
#[derive(Default)]
struct RecordingForge(Mutex<Vec<CommitStatus>>, Mutex<(Option<Arc<AtomicUsize>>, Vec<usize>)>);

impl Forge for RecordingForge {
    fn post_status(&self, status: CommitStatus) {
        self.0.lock().expect("lock").push(status);
        let mut calls = self.1.lock().expect("lock");
        let seen = calls.0.as_ref().map_or(0, |c| c.load(Ordering::SeqCst));
        calls.1.push(seen);
    }
}

impl RecordingForge {
    fn states(&self) -> Vec<CommitState> {
        self.0.lock().expect("lock").iter().map(|s| s.state).collect()
    }
}

fn settings(start_after_init: bool, no_cleanup_job: bool, max_initializing: usize) -> Settings {
    Settings::from_toml_str(&format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "ns"
build_domain = "example.com"
base_url = "https://runboat.example.com"
start_after_init = {start_after_init}
no_cleanup_job = {no_cleanup_job}
max_initializing = {max_initializing}

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{{ image = "odoo:16" }}]
"#
    ))
    .expect("settings")
}

fn commit(n: u8) -> CommitInfo {
    CommitInfo::new("oca/mis-builder", "16.0", Some(u64::from(n)), &format!("{n:040x}"))
        .expect("commit")
}

/// The Deployment of `commit`'s build.
fn facts(
    c: &CommitInfo,
    init: InitStatus,
    spec: i32,
    available: i32,
    deleting: bool,
) -> DeploymentFacts {
    let at: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_REPO.to_owned(), c.repo().to_owned());
    annotations.insert(ANNOTATION_TARGET_BRANCH.to_owned(), c.target_branch().to_owned());
    annotations.insert(ANNOTATION_PR.to_owned(), c.pr_annotation());
    annotations.insert(ANNOTATION_GIT_COMMIT.to_owned(), c.git_commit().to_owned());
    annotations.insert(ANNOTATION_INIT_STATUS.to_owned(), init.as_str().to_owned());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_BUILD.to_owned(), c.build_name());
    DeploymentFacts {
        name: format!("{}-odoo", c.build_name()),
        annotations,
        labels,
        spec_replicas: Some(spec),
        status_replicas: Some(available),
        available_replicas: Some(available),
        deletion_timestamp: deleting.then_some(at),
        creation_timestamp: Some(at),
        available_since: None,
    }
}

fn job(c: &CommitInfo, kind: JobKind, phase: JobPhase) -> JobFacts {
    JobFacts {
        name: format!("{}-{}", c.build_name(), kind.as_str()),
        build_name: c.build_name(),
        kind,
        phase,
        deleting: false,
        started: None,
        finished: None,
    }
}

struct Harness {
    handle: ControllerHandle,
    forge: Arc<RecordingForge>,
    /// Incremented by the returning closures of the expected calls.
    calls: Arc<AtomicUsize>,
    jobs: mpsc::UnboundedSender<ClusterEvent<JobFacts>>,
    _deployments: mpsc::UnboundedSender<ClusterEvent<DeploymentFacts>>,
}

fn stream<T: Send + 'static>(rx: mpsc::UnboundedReceiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
}

async fn harness(
    mock: MockCluster,
    deployments: Vec<DeploymentFacts>,
    jobs: Vec<JobFacts>,
    settings: Settings,
) -> Harness {
    harness_counting(mock, deployments, jobs, settings, Arc::default()).await
}

async fn harness_counting(
    mut mock: MockCluster,
    deployments: Vec<DeploymentFacts>,
    jobs: Vec<JobFacts>,
    settings: Settings,
    calls: Arc<AtomicUsize>,
) -> Harness {
    let (dtx, drx) = mpsc::unbounded_channel();
    let (jtx, jrx) = mpsc::unbounded_channel();
    dtx.send(ClusterEvent::Relisted(deployments)).expect("send");
    jtx.send(ClusterEvent::Relisted(jobs)).expect("send");
    mock.expect_deployment_events().times(1).return_once(move || stream(drx));
    mock.expect_job_events().times(1).return_once(move || stream(jrx));
    let forge = Arc::new(RecordingForge::default());
    forge.1.lock().expect("lock").0 = Some(calls.clone());
    let handle = Controller::spawn(
        Arc::new(mock),
        forge.clone(),
        Arc::new(settings),
        ControllerConfig::default(),
    );
    handle.ready().await;
    Harness { handle, forge, calls, jobs: jtx, _deployments: dtx }
}

impl Harness {
    /// Waits (paused clock) until `n` expected calls happened, then a
    /// while longer so that an unexpected extra call would show.
    async fn wait_calls(&self, n: usize) {
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.calls.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < end,
                "only {} calls",
                self.calls.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    async fn finish(self) {
        assert_eq!(self.handle.stats().actions_panicked, 0, "an unexpected call happened");
        self.handle.shutdown().await;
    }
}

fn counted(calls: &Arc<AtomicUsize>) -> impl Fn() -> ClusterResult<()> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Sets up the mock first, then the harness, sharing the call counter.
async fn with_mock(
    setup: impl FnOnce(&mut MockCluster, &Arc<AtomicUsize>),
    deployments: Vec<DeploymentFacts>,
    jobs: Vec<JobFacts>,
    settings: Settings,
) -> Harness {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut mock = MockCluster::new();
    setup(&mut mock, &calls);
    harness_counting(mock, deployments, jobs, settings, calls).await
}

fn expect_apply(
    m: &mut MockCluster,
    seq: &mut Sequence,
    calls: &Arc<AtomicUsize>,
    name: String,
    mode: KubefilesMode,
) {
    let ok = counted(calls);
    m.expect_apply_kubefiles()
        .withf(move |n, _, md| n == name && *md == mode)
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _, _| ok());
}

fn expect_scale(
    m: &mut MockCluster,
    seq: &mut Sequence,
    calls: &Arc<AtomicUsize>,
    name: String,
    replicas: i32,
) {
    let ok = counted(calls);
    m.expect_scale()
        .withf(move |n, r| n == name && *r == replicas)
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _| ok());
}

fn expect_set_init(
    m: &mut MockCluster,
    seq: &mut Sequence,
    calls: &Arc<AtomicUsize>,
    name: String,
    status: InitStatus,
) {
    let ok = counted(calls);
    m.expect_set_init_status()
        .withf(move |n, s| n == name && *s == status)
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _| ok());
}

fn expect_get(
    m: &mut MockCluster,
    seq: &mut Sequence,
    calls: &Arc<AtomicUsize>,
    name: String,
    current: Option<DeploymentFacts>,
) {
    let calls = calls.clone();
    m.expect_get_deployment().withf(move |n| n == name).times(1).in_sequence(seq).returning(
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(current.clone())
        },
    );
}

/// An undeploy of every matching build proceeds at once, without waiting
/// for some other event to wake the loop up.
#[tokio::test(start_paused = true)]
async fn undeploy_matching_deletes_every_match_at_once() {
    let (a, b, other) = (
        commit(1),
        commit(2),
        CommitInfo::new("oca/crm", "16.0", None, &format!("{:040x}", 3)).expect("commit"),
    );
    let names = [a.build_name(), b.build_name()];
    let h = with_mock(
        |m, calls| {
            let ok = counted(calls);
            let expected = names.clone();
            m.expect_delete_deployment()
                .withf(move |n| expected.iter().any(|e| e == n))
                .times(2)
                .returning(move |_| ok());
        },
        vec![
            facts(&a, InitStatus::Succeeded, 0, 0, false),
            facts(&b, InitStatus::Failed, 0, 0, false),
            facts(&other, InitStatus::Succeeded, 0, 0, false),
        ],
        vec![],
        settings(false, false, 2),
    )
    .await;
    let filters =
        SearchFilters { repo: Some("oca/mis-builder".into()), ..SearchFilters::default() };
    assert_eq!(h.handle.undeploy_matching(filters).await, Ok(2));
    h.wait_calls(2).await;
    h.finish().await;
}

/// A start that waited because its build was busy, and whose caller hung
/// up meanwhile, is dropped from the queue, never run later.
#[tokio::test(start_paused = true)]
async fn a_start_whose_caller_hung_up_while_the_build_was_busy_is_dropped() {
    let c = commit(1);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Start);
            expect_scale(m, &mut seq, calls, name.clone(), 1);
        },
        vec![facts(&c, InitStatus::Succeeded, 0, 0, false)],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.start(&name).await, Ok(CommandOutcome::Done));
    // No event shows the effect: the build stays busy until the reflect
    // timeout, and a second start waits; its caller gives up.
    let second = tokio::time::timeout(Duration::from_secs(1), h.handle.start(&name)).await;
    assert!(second.is_err(), "the second start waits while the build is busy");
    // Past the reflect timeout (paused clock), nothing more is applied: an
    // extra call would panic inside the action, which `finish` reports.
    tokio::time::sleep(ControllerConfig::default().reflect_timeout * 2).await;
    h.wait_calls(2).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn start_of_a_stopped_build_applies_start_then_scales_to_one() {
    let c = commit(1);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Start);
            expect_scale(m, &mut seq, calls, name.clone(), 1);
        },
        vec![facts(&c, InitStatus::Succeeded, 0, 0, false)],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.start(&name).await, Ok(CommandOutcome::Done));
    h.wait_calls(2).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn start_of_a_failed_build_does_nothing() {
    let c = commit(2);
    let name = c.build_name();
    let h = with_mock(
        |_, _| {},
        vec![facts(&c, InitStatus::Failed, 0, 0, false)],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(
        h.handle.start(&name).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::Status(BuildStatus::Failed)))
    );
    assert_eq!(h.handle.stats().actions_started, 0);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn stop_of_a_started_build_scales_to_zero_then_applies_stop() {
    let c = commit(3);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_scale(m, &mut seq, calls, name.clone(), 0);
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Stop);
        },
        vec![facts(&c, InitStatus::Succeeded, 1, 1, false)],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.stop(&name).await, Ok(CommandOutcome::Done));
    h.wait_calls(2).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn initialization_success_applies_stop_sets_succeeded_and_posts_success() {
    let c = commit(4);
    let name = c.build_name();
    let current = facts(&c, InitStatus::Started, 0, 0, false);
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_get(m, &mut seq, calls, name.clone(), Some(current.clone()));
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Stop);
            expect_set_init(m, &mut seq, calls, name.clone(), InitStatus::Succeeded);
        },
        vec![current.clone()],
        vec![job(&c, JobKind::Initialize, JobPhase::Succeeded)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(3).await;
    assert_eq!(h.forge.states(), [CommitState::Success]);
    let posted = h.forge.0.lock().expect("lock")[0].clone();
    assert_eq!(posted.target_url, format!("https://runboat.example.com/builds/{name}?live"));
    assert_eq!(posted.git_commit, c.git_commit());
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn initialization_success_also_starts_with_start_after_init() {
    let c = commit(5);
    let name = c.build_name();
    let current = facts(&c, InitStatus::Started, 0, 0, false);
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_get(m, &mut seq, calls, name.clone(), Some(current.clone()));
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Stop);
            expect_set_init(m, &mut seq, calls, name.clone(), InitStatus::Succeeded);
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Start);
            expect_scale(m, &mut seq, calls, name.clone(), 1);
        },
        vec![current.clone()],
        vec![job(&c, JobKind::Initialize, JobPhase::Succeeded)],
        settings(true, false, 2),
    )
    .await;
    h.wait_calls(5).await;
    // The status is posted after the action's last cluster call.
    assert_eq!(h.forge.states(), [CommitState::Success]);
    assert_eq!(h.forge.1.lock().expect("lock").1, [5]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn initialization_failure_scales_to_zero_applies_stop_sets_failed_and_posts_failure() {
    let c = commit(6);
    let name = c.build_name();
    let current = facts(&c, InitStatus::Started, 0, 0, false);
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_get(m, &mut seq, calls, name.clone(), Some(current.clone()));
            expect_scale(m, &mut seq, calls, name.clone(), 0);
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Stop);
            expect_set_init(m, &mut seq, calls, name.clone(), InitStatus::Failed);
        },
        vec![current.clone()],
        vec![job(&c, JobKind::Initialize, JobPhase::Failed)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(4).await;
    assert_eq!(h.forge.states(), [CommitState::Failure]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_init_job_marks_the_build_started_and_posts_pending() {
    let c = commit(7);
    let name = c.build_name();
    let current = facts(&c, InitStatus::Todo, 0, 0, false);
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_get(m, &mut seq, calls, name.clone(), Some(current.clone()));
            expect_set_init(m, &mut seq, calls, name.clone(), InitStatus::Started);
        },
        vec![current.clone()],
        vec![job(&c, JobKind::Initialize, JobPhase::Running)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(2).await;
    assert_eq!(h.forge.states(), [CommitState::Pending]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn replayed_job_events_of_a_finished_initialization_do_nothing() {
    let c = commit(8);
    let h = with_mock(
        |_, _| {},
        vec![facts(&c, InitStatus::Succeeded, 0, 0, false)],
        vec![job(&c, JobKind::Initialize, JobPhase::Succeeded)],
        settings(false, false, 2),
    )
    .await;
    for phase in [JobPhase::Running, JobPhase::Succeeded, JobPhase::Succeeded] {
        h.jobs.send(ClusterEvent::Applied(job(&c, JobKind::Initialize, phase))).expect("send");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.handle.stats().actions_started, 0);
    assert!(h.forge.states().is_empty());
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_success_event_is_checked_against_the_cluster_first() {
    let c = commit(9);
    let name = c.build_name();
    // The index (stale) says started; the cluster says succeeded already.
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            let now = facts(&c, InitStatus::Succeeded, 0, 0, false);
            expect_get(m, &mut seq, calls, name.clone(), Some(now));
        },
        vec![facts(&c, InitStatus::Started, 0, 0, false)],
        vec![job(&c, JobKind::Initialize, JobPhase::Succeeded)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(1).await;
    assert!(h.forge.states().is_empty(), "no second success status");
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_succeeded_cleanup_deletes_the_resources_then_removes_the_finalizer() {
    let c = commit(10);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            let (n1, n2) = (name.clone(), name.clone());
            let (ok1, ok2) = (counted(calls), counted(calls));
            m.expect_delete_build_resources()
                .withf(move |n| n == n1)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_| ok1());
            m.expect_remove_finalizer()
                .withf(move |n| n == n2)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_| ok2());
        },
        vec![facts(&c, InitStatus::Succeeded, 0, 0, true)],
        vec![job(&c, JobKind::Cleanup, JobPhase::Succeeded)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(2).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_cleanup_is_reported_and_nothing_is_done() {
    let c = commit(11);
    let name = c.build_name();
    let h = with_mock(
        |_, _| {},
        vec![facts(&c, InitStatus::Succeeded, 0, 0, true)],
        vec![job(&c, JobKind::Cleanup, JobPhase::Failed)],
        settings(false, false, 2),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.handle.cleanup_failures(), vec![name]);
    assert_eq!(h.handle.stats().actions_started, 0);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn an_undeploying_build_gets_its_init_job_killed_scaled_down_and_cleaned_up() {
    let c = commit(12);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            let n1 = name.clone();
            let ok = counted(calls);
            m.expect_kill_jobs()
                .withf(move |n, k| n == n1 && *k == JobKind::Initialize)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_, _| ok());
            expect_scale(m, &mut seq, calls, name.clone(), 0);
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Cleanup);
        },
        vec![facts(&c, InitStatus::Started, 0, 0, true)],
        vec![job(&c, JobKind::Initialize, JobPhase::Running)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(3).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn without_cleanup_job_an_undeploying_build_is_deleted_directly() {
    let c = commit(13);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            let (n1, n2, n3) = (name.clone(), name.clone(), name.clone());
            let (ok1, ok2, ok3) = (counted(calls), counted(calls), counted(calls));
            m.expect_kill_jobs()
                .withf(move |n, k| n == n1 && *k == JobKind::Initialize)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_, _| ok1());
            expect_scale(m, &mut seq, calls, name.clone(), 0);
            m.expect_delete_build_resources()
                .withf(move |n| n == n2)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_| ok2());
            m.expect_remove_finalizer()
                .withf(move |n| n == n3)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_| ok3());
        },
        vec![facts(&c, InitStatus::Succeeded, 0, 0, true)],
        vec![],
        settings(false, true, 2),
    )
    .await;
    h.wait_calls(4).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_without_deployment_gets_its_build_resources_deleted() {
    let c = commit(14);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_get(m, &mut seq, calls, name.clone(), None);
            let n1 = name.clone();
            let ok = counted(calls);
            m.expect_delete_build_resources()
                .withf(move |n| n == n1)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_| ok());
        },
        vec![],
        vec![job(&c, JobKind::Initialize, JobPhase::Succeeded)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(2).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn reset_kills_the_jobs_reapplies_the_deployment_and_posts_pending() {
    let c = commit(15);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            for kind in [JobKind::Initialize, JobKind::Cleanup] {
                let n = name.clone();
                let ok = counted(calls);
                m.expect_kill_jobs()
                    .withf(move |x, k| *x == n && *k == kind)
                    .times(1)
                    .in_sequence(&mut seq)
                    .returning(move |_, _| ok());
            }
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Deployment);
        },
        vec![facts(&c, InitStatus::Failed, 0, 0, false)],
        vec![job(&c, JobKind::Initialize, JobPhase::Failed)],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.reset(&name).await, Ok(CommandOutcome::Done));
    h.wait_calls(3).await;
    assert_eq!(h.forge.states(), [CommitState::Pending]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn deploy_applies_the_deployment_once_and_ignores_a_known_commit() {
    let c = commit(16);
    let known = commit(17);
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_apply(m, &mut seq, calls, c.build_name(), KubefilesMode::Deployment);
        },
        vec![facts(&known, InitStatus::Failed, 0, 0, false)],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.deploy_commit(c.clone()).await, Ok(CommandOutcome::Done));
    assert_eq!(
        h.handle.deploy_commit(known.clone()).await,
        Ok(CommandOutcome::Ignored(IgnoredReason::AlreadyDeployed {
            build_name: known.build_name()
        }))
    );
    h.wait_calls(1).await;
    assert_eq!(h.forge.states(), [CommitState::Pending]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn only_the_room_left_by_max_initializing_is_used_oldest_first() {
    let running = commit(20);
    let (older, newer) = (commit(21), commit(22));
    let mut f_older = facts(&older, InitStatus::Todo, 0, 0, false);
    let mut f_newer = facts(&newer, InitStatus::Todo, 0, 0, false);
    f_older.creation_timestamp = Some("2025-01-01T00:00:00Z".parse().expect("ts"));
    f_newer.creation_timestamp = Some("2025-02-01T00:00:00Z".parse().expect("ts"));
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_apply(m, &mut seq, calls, older.build_name(), KubefilesMode::Initialize);
        },
        vec![facts(&running, InitStatus::Started, 0, 0, false), f_older, f_newer],
        vec![job(&running, JobKind::Initialize, JobPhase::Running)],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(1).await;
    // More batches while the new init job has not shown up yet: the
    // initialize action is not issued again, and no other one either.
    for _ in 0..3 {
        let event = ClusterEvent::Applied(job(&running, JobKind::Initialize, JobPhase::Running));
        h.jobs.send(event).expect("send");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(h.handle.stats().actions_started, 1);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_within_the_action() {
    let c = commit(23);
    let name = c.build_name();
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_apply(m, &mut seq, calls, name.clone(), KubefilesMode::Start);
            let n = name.clone();
            m.expect_scale()
                .withf(move |x, r| *x == n && *r == 1)
                .times(2)
                .in_sequence(&mut seq)
                .returning(|_, _| Err(ClusterError::Transient("503".into())));
            expect_scale(m, &mut seq, calls, name.clone(), 1);
        },
        vec![facts(&c, InitStatus::Succeeded, 0, 0, false)],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.start(&name).await, Ok(CommandOutcome::Done));
    h.wait_calls(2).await;
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_action_is_contained_and_the_controller_goes_on() {
    let (a, b) = (commit(24), commit(25));
    let (na, nb) = (a.build_name(), b.build_name());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut mock = MockCluster::new();
    let n = na.clone();
    mock.expect_apply_kubefiles()
        .withf(move |name, _, m| name == n && *m == KubefilesMode::Start)
        .times(1)
        .returning(|_, _, _| panic!("bug in the cluster implementation"));
    let mut seq = Sequence::new();
    expect_apply(&mut mock, &mut seq, &calls, nb.clone(), KubefilesMode::Start);
    expect_scale(&mut mock, &mut seq, &calls, nb.clone(), 1);
    let h = harness(
        mock,
        vec![
            facts(&a, InitStatus::Succeeded, 0, 0, false),
            facts(&b, InitStatus::Succeeded, 0, 0, false),
        ],
        vec![],
        settings(false, false, 2),
    )
    .await;
    assert_eq!(h.handle.start(&na).await, Err(CommandError::Panicked));
    assert_eq!(h.handle.start(&nb).await, Ok(CommandOutcome::Done));
    assert_eq!(h.handle.stats().actions_panicked, 1);
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_build_initializing_without_init_job_goes_back_to_todo() {
    let c = commit(26);
    let name = c.build_name();
    let current = facts(&c, InitStatus::Started, 0, 0, false);
    let h = with_mock(
        |m, calls| {
            let mut seq = Sequence::new();
            expect_get(m, &mut seq, calls, name.clone(), Some(current.clone()));
            expect_set_init(m, &mut seq, calls, name.clone(), InitStatus::Todo);
        },
        vec![current.clone()],
        vec![],
        settings(false, false, 2),
    )
    .await;
    h.wait_calls(2).await;
    assert_eq!(h.forge.states(), [CommitState::Pending]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_command_past_its_deadline_is_still_applied_once_queued() {
    let (a, b) = (commit(1), commit(2));
    let names = [a.build_name(), b.build_name()];
    let h = with_mock(
        |m, calls| {
            let ok = counted(calls);
            let expected = names.clone();
            m.expect_delete_deployment()
                .withf(move |n| expected.iter().any(|e| e == n))
                .times(2)
                .returning(move |_| ok());
        },
        vec![
            facts(&a, InitStatus::Succeeded, 0, 0, false),
            facts(&b, InitStatus::Succeeded, 0, 0, false),
        ],
        vec![],
        settings(false, false, 2),
    )
    .await;
    let filters =
        SearchFilters { repo: Some("oca/mis-builder".into()), ..SearchFilters::default() };
    // A deadline that has passed: the command is queued (the channel has
    // room), its answer cannot come in time.
    let now = tokio::time::Instant::now();
    assert_eq!(h.handle.undeploy_matching_until(filters, now).await, Err(Late::Queued));
    // The loop applies it all the same.
    h.wait_calls(2).await;
    // With time to answer, the answer comes (nothing matches this one).
    let later = tokio::time::Instant::now() + Duration::from_secs(5);
    let none = SearchFilters { repo: Some("oca/none".into()), ..SearchFilters::default() };
    assert_eq!(h.handle.undeploy_matching_until(none, later).await, Ok(Ok(0)));
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn watches_are_not_current_while_a_stream_is_resubscribed() {
    let mut mock = MockCluster::new();
    let (dtx, drx) = mpsc::unbounded_channel();
    let (jtx, jrx) = mpsc::unbounded_channel();
    dtx.send(ClusterEvent::Relisted(vec![])).expect("send");
    jtx.send(ClusterEvent::Relisted(vec![])).expect("send");
    mock.expect_deployment_events().times(1).return_once(move || stream(drx));
    // The resubscription never delivers its listing.
    mock.expect_deployment_events().returning(|| futures::stream::pending().boxed());
    mock.expect_job_events().times(1).return_once(move || stream(jrx));
    let handle = Controller::spawn(
        Arc::new(mock),
        Arc::new(crate::forge::NoForge),
        Arc::new(settings(false, false, 2)),
        ControllerConfig::default(),
    );
    handle.ready().await;
    assert!(handle.watches_current());
    drop(dtx);
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while handle.watches_current() {
        assert!(tokio::time::Instant::now() < end, "still current");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Ready means "had its first listing": it does not reset.
    assert!(handle.is_ready());
    assert!(handle.is_running());
    drop(jtx);
    handle.shutdown().await;
    assert!(!handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn a_full_request_queue_refuses_at_once_and_frees_up_when_drained() {
    // No listing yet: every request waits in the queue.
    let mut mock = MockCluster::new();
    let (dtx, drx) = mpsc::unbounded_channel();
    let (jtx, jrx) = mpsc::unbounded_channel();
    mock.expect_deployment_events().times(1).return_once(move || stream(drx));
    mock.expect_job_events().times(1).return_once(move || stream(jrx));
    let applied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = applied.clone();
    mock.expect_apply_kubefiles()
        .withf(|_, _, mode| *mode == KubefilesMode::Deployment)
        .times(4)
        .returning(move |_, _, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
    let config = ControllerConfig { max_queued_requests: 3, ..ControllerConfig::default() };
    let handle = Controller::spawn(
        Arc::new(mock),
        Arc::new(crate::forge::NoForge),
        Arc::new(settings(false, false, 2)),
        config,
    );
    // Three deploys, queued (the callers stop waiting at once; a deploy is
    // kept all the same: a webhook that answered "queued" still asked).
    for n in 1..=3 {
        let soon = tokio::time::Instant::now() + Duration::from_millis(1);
        assert_eq!(handle.deploy_commit_until(commit(n), soon).await, Err(Late::Queued));
    }
    // A deadline far away: a refusal is an answer, not a timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    let started = tokio::time::Instant::now();
    assert_eq!(handle.deploy_commit_until(commit(9), deadline).await, Ok(Err(CommandError::Busy)));
    assert_eq!(
        handle.undeploy_matching_until(SearchFilters::default(), deadline).await,
        Ok(Err(CommandError::Busy))
    );
    assert_eq!(handle.start("b1").await, Err(CommandError::Busy));
    assert_eq!(started.elapsed(), Duration::ZERO, "refused at once (paused clock)");
    // The listings in, the queue drains and takes requests again.
    dtx.send(ClusterEvent::Relisted(vec![])).expect("send");
    jtx.send(ClusterEvent::Relisted(vec![])).expect("send");
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while applied.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < end, "the queued deploys never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        handle.deploy_commit_until(commit(10), deadline).await,
        Ok(Ok(CommandOutcome::Done))
    );
    assert_eq!(handle.stats().actions_panicked, 0);
    handle.shutdown().await;
}
