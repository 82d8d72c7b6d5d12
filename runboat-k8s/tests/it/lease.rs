//! Leader election over kubesim: two electors on one Lease, a partitioned
//! leader, a released lease and skewed renew times. Real time with short
//! durations (the HTTP server does not run on tokio's paused clock); every
//! wait has a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use kubesim::{ControllerConfig, KubeSim};
use runboat_k8s::lease::{ApiLeaseStore, LeaseError, LeaseStore};
use runboat_k8s::{LeaderElector, LeaseConfig};
use tokio::time::Instant;

use crate::cluster::{NS, sim_with};

const LEASE: Duration = Duration::from_millis(2000);
const RENEW: Duration = Duration::from_millis(1000);
const RETRY: Duration = Duration::from_millis(100);
/// Scheduling slack of a loaded CI machine.
const SLACK: Duration = Duration::from_millis(700);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "runboat-leader".into(),
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..LeaseConfig::new(identity)
    }
}

fn api(sim: &KubeSim) -> Api<Lease> {
    Api::namespaced(sim.client(), NS)
}

/// The real store, cut off from the API server while `cut` is set (a
/// partition of the leader's lease calls; kubesim keeps serving others).
struct Partitionable {
    inner: ApiLeaseStore,
    cut: Arc<AtomicBool>,
}

impl Partitionable {
    fn check(&self) -> Result<(), LeaseError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(LeaseError::Api(kube::Error::ReadEvents(std::io::Error::other(
                "partitioned",
            ))));
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for Partitionable {
    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.check()?;
        self.inner.get().await
    }
    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.check()?;
        self.inner.create(lease).await
    }
    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.check()?;
        self.inner.replace(lease).await
    }
}

/// Waits until `elector` leads (or not), within `within`; returns when.
async fn leads(elector: &LeaderElector, leading: bool, within: Duration) -> Option<Instant> {
    let mut rx = elector.subscribe();
    tokio::time::timeout(within, rx.wait_for(|l| *l == leading)).await.ok()?.ok()?;
    Some(Instant::now())
}

#[tokio::test]
async fn a_partitioned_leader_steps_down_before_the_other_takes_over() {
    let sim = sim_with(ControllerConfig::default()).await;
    let cut = Arc::new(AtomicBool::new(false));
    let store =
        Partitionable { inner: ApiLeaseStore::new(api(&sim), "runboat-leader"), cut: cut.clone() };
    let a = LeaderElector::spawn_on(Arc::new(store), config("a"));
    assert!(leads(&a, true, Duration::from_secs(5)).await.is_some(), "a leads");
    let b = LeaderElector::spawn(api(&sim), config("b"));
    // While a renews, b never leads, even after a whole lease duration.
    assert!(leads(&b, true, LEASE * 2).await.is_none(), "b took a renewed lease");
    assert!(a.is_leader());

    let cut_at = Instant::now();
    cut.store(true, Ordering::SeqCst);
    let (a_down, b_up) = tokio::join!(
        leads(&a, false, LEASE + RENEW + SLACK),
        leads(&b, true, LEASE + RENEW + SLACK)
    );
    let a_down = a_down.expect("a steps down");
    let b_up = b_up.expect("b takes over");
    assert!(a_down < b_up, "a stepped down {a_down:?}, b took over {b_up:?}");
    assert!(a_down - cut_at <= RENEW + SLACK, "a stepped down after {:?}", a_down - cut_at);
    assert!(b_up - cut_at >= LEASE - RETRY * 2, "b took over after {:?}", b_up - cut_at);
    assert!(b_up - cut_at <= LEASE + SLACK, "b took over after {:?}", b_up - cut_at);
    let stats = a.stats();
    assert_eq!(stats.transitions, 2);
    assert!(stats.renew_failures > 0);

    // The partition heals: a sees b's renewals and stays a follower.
    cut.store(false, Ordering::SeqCst);
    assert!(leads(&a, true, LEASE * 2).await.is_none(), "a took b's lease back");
    assert!(b.is_leader());
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let sim = sim_with(ControllerConfig::default()).await;
    let slow = |id: &str| LeaseConfig { lease_duration: Duration::from_secs(30), ..config(id) };
    let a = LeaderElector::spawn(api(&sim), slow("a"));
    assert!(leads(&a, true, Duration::from_secs(5)).await.is_some());
    let b = LeaderElector::spawn(api(&sim), slow("b"));
    assert!(leads(&b, true, RETRY * 5).await.is_none());
    let released_at = Instant::now();
    a.release().await;
    let b_up = leads(&b, true, Duration::from_secs(5)).await.expect("b takes the released lease");
    assert!(b_up - released_at <= RETRY * 2 + SLACK, "after {:?}", b_up - released_at);
    let lease = api(&sim).get("runboat-leader").await.expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

/// A lease held by a replica whose clock is far off (its renewTime in the
/// far future or past) and that stopped renewing is taken exactly after a
/// lease duration of no change, as seen on the taker's own clock.
#[tokio::test]
async fn skewed_renew_times_change_nothing() {
    for year in ["2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"] {
        let sim = sim_with(ControllerConfig::default()).await;
        let at: jiff::Timestamp = year.parse().expect("timestamp");
        let lease = Lease {
            metadata: ObjectMeta { name: Some("runboat-leader".into()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some("skewed".into()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(MicroTime(at)),
                renew_time: Some(MicroTime(at)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        api(&sim).create(&PostParams::default(), &lease).await.expect("create");
        let started = Instant::now();
        let b = LeaderElector::spawn(api(&sim), config("b"));
        let up = leads(&b, true, LEASE + SLACK * 2).await.expect("b takes the stale lease");
        assert!(up - started >= LEASE, "{year}: taken after {:?}", up - started);
        b.release().await;
    }
}

/// The controller of one replica on `KubeCluster`, following `elector`.
async fn replica(sim: &KubeSim, elector: &LeaderElector) -> runboat_core::ControllerHandle {
    let settings = crate::cluster::settings("");
    let cluster = crate::cluster::cluster_on(sim, settings.clone()).await;
    let config = runboat_core::ControllerConfig {
        reflect_timeout: Duration::from_secs(5),
        failure_backoff_max: Duration::from_secs(2),
        ..runboat_core::ControllerConfig::default()
    };
    let handle = runboat_core::Controller::spawn_with_leadership(
        Arc::new(cluster),
        Arc::new(runboat_core::forge::NoForge),
        settings,
        config,
        elector.subscribe(),
    );
    tokio::time::timeout(Duration::from_secs(30), handle.ready()).await.expect("ready");
    handle
}

/// Two replicas, each a controller following its own elector on one
/// Lease: requests reach either, the leader schedules, and a release hands
/// the scheduling over to the other at once.
#[tokio::test]
async fn two_replicas_schedule_one_at_a_time_and_hand_over_on_release() {
    use runboat_core::{BuildStatus, CommandOutcome};

    use crate::lifecycle::{wait_build, wait_status};

    let sim = sim_with(ControllerConfig::instant()).await;
    let a = LeaderElector::spawn(api(&sim), config("a"));
    assert!(leads(&a, true, Duration::from_secs(5)).await.is_some());
    let b = LeaderElector::spawn(api(&sim), config("b"));
    let (ca, cb) = (replica(&sim, &a).await, replica(&sim, &b).await);

    // A request reaching the follower takes effect; the leader initializes.
    let first = crate::cluster::commit(40);
    assert_eq!(cb.deploy_commit(first.clone()).await, Ok(CommandOutcome::Done));
    wait_status(&cb, &first.build_name(), BuildStatus::Stopped).await;
    assert!(a.is_leader() && !b.is_leader());

    // A rolling update: a releases, b schedules from then on.
    a.release().await;
    assert!(leads(&b, true, Duration::from_secs(2)).await.is_some(), "b takes over at once");
    let second = crate::cluster::commit(41);
    assert_eq!(ca.deploy_commit(second.clone()).await, Ok(CommandOutcome::Done));
    wait_status(&ca, &second.build_name(), BuildStatus::Stopped).await;
    assert_eq!(ca.undeploy(&first.build_name()).await, Ok(CommandOutcome::Done));
    wait_build(&ca, &first.build_name(), "gone", |s| s.is_none()).await;

    ca.shutdown().await;
    cb.shutdown().await;
    b.release().await;
}
