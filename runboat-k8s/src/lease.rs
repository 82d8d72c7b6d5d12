//! Leader election on a `coordination.k8s.io/v1` Lease, so that exactly one
//! of several runboat replicas makes scheduling decisions.
//!
//! The shape is the repo's usual one: a pure [`decide`] from what was read
//! to what to do ([`Decision`]), and a thin async loop ([`LeaderElector`])
//! that reads, decides, writes and publishes the leadership on a
//! `watch::Receiver<bool>` (runboat-core's
//! `Controller::spawn_with_leadership` follows it).
//!
//! Safety rests on two rules, both judged on the local monotonic clock
//! only, never by comparing a `renewTime` written by another replica with
//! this replica's wall clock (so clock skew between replicas changes
//! nothing; client-go's leader election does the same):
//!
//! - A lease held by another replica is taken only once its record (its
//!   resourceVersion) has not changed for the lease duration, as observed
//!   here.
//! - A leader steps down once it has not renewed for `renew_deadline`
//!   (shorter than the lease duration), counted from *before* its last
//!   successful renewal was sent. Every other replica saw that renewal at
//!   or after that instant, so it steps down before anyone may take the
//!   lease (fencing by time).
//!
//! Writes use optimistic concurrency: a replace carries the resourceVersion
//! that was read, and a conflict (409) means another replica won the race.
//! Releasing (on shutdown) writes no holder, which others take at once.
//!
//! Why not a crate: `kube-lease-manager` (the one maintained crate on kube
//! 5) judges expiry as the holder's `renewTime` plus the duration against
//! the local wall clock, which clock skew breaks; `kube-leader-election`
//! is on kube 4 and kubert's lease module on an older kube and k8s-openapi.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// The election's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name (in the namespace of the `Api`).
    pub name: String,
    /// This replica's identity: the pod name, or the hostname.
    pub identity: String,
    /// How long a lease whose record does not change stays held.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal
    /// (shorter than `lease_duration`: the gap is the fencing margin).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The default name `runboat-leader` and durations 15 s / 10 s / 2 s.
    pub fn new(identity: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            name: "runboat-leader".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks that a leader steps down before anyone may take its lease
    /// (renew deadline < lease duration) and that it retries within its
    /// renew deadline.
    pub fn validate(&self) -> Result<(), InvalidLeaseConfig> {
        if Duration::ZERO < self.retry_period
            && self.retry_period < self.renew_deadline
            && self.renew_deadline < self.lease_duration
        {
            return Ok(());
        }
        Err(InvalidLeaseConfig {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        })
    }
}

/// Durations that would break the fencing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "lease settings need 0 < retry period ({retry_period:?}) < renew deadline \
     ({renew_deadline:?}) < lease duration ({lease_duration:?})"
)]
pub struct InvalidLeaseConfig {
    /// The lease duration given.
    pub lease_duration: Duration,
    /// The renew deadline given.
    pub renew_deadline: Duration,
    /// The retry period given.
    pub retry_period: Duration,
}

/// A failed call on the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another replica wrote the lease first (HTTP 409).
    #[error("another replica wrote the lease first")]
    Conflict,
    /// The API call failed.
    #[error("lease API call failed")]
    Api(#[source] kube::Error),
}

impl From<kube::Error> for LeaseError {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(status) if status.is_conflict() => LeaseError::Conflict,
            _ => LeaseError::Api(e),
        }
    }
}

/// Where the lease lives: `Api<Lease>` plus the lease name in production;
/// a test double can fail calls to simulate a partition.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads the lease; `None` when it does not exist.
    async fn get(&self) -> Result<Option<Lease>, LeaseError>;
    /// Creates the lease (`Conflict` when it exists already).
    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError>;
    /// Replaces the lease; its `metadata.resourceVersion` is the one read
    /// (`Conflict` when it changed since).
    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError>;
}

/// The production store: one named Lease through kube's `Api`.
#[derive(Clone)]
pub struct ApiLeaseStore {
    api: Api<Lease>,
    name: String,
}

impl ApiLeaseStore {
    /// The lease `name` reached by `api` (a namespaced `Api<Lease>`).
    pub fn new(api: Api<Lease>, name: impl Into<String>) -> ApiLeaseStore {
        ApiLeaseStore { api, name: name.into() }
    }
}

#[async_trait]
impl LeaseStore for ApiLeaseStore {
    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        Ok(self.api.get_opt(&self.name).await?)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        Ok(self.api.create(&PostParams::default(), lease).await?)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        Ok(self.api.replace(&self.name, &PostParams::default(), lease).await?)
    }
}

/// What a read of the lease gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// The read failed (or timed out).
    Failed,
    /// No lease.
    Missing,
    /// The lease, held by `holder` (`None`: released).
    Held {
        /// The holder's identity.
        holder: Option<&'a str>,
    },
}

/// What the elector should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Create the lease, holding it.
    Create,
    /// Write a new renew time (the lease is ours).
    Renew,
    /// Take the lease (released, or not renewed for the lease duration).
    Take,
    /// Nothing now; try again after the retry period.
    Wait,
    /// Stop leading at once (no renewal within the renew deadline, or the
    /// lease is someone else's).
    StepDown,
}

/// What [`decide`] reads besides the lease.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When this replica last saw the lease record change (its
    /// resourceVersion), on its own monotonic clock.
    pub changed_at: Instant,
    /// While leading: when the last successful renewal was sent.
    pub renewed_at: Option<Instant>,
    /// Now.
    pub now: Instant,
}

/// The election step: see the [module docs](self).
pub fn decide(seen: Seen<'_>, me: &str, clock: Clock, config: &LeaseConfig) -> Decision {
    let since = |t: Instant| clock.now.saturating_duration_since(t);
    if let Some(renewed_at) = clock.renewed_at {
        if since(renewed_at) >= config.renew_deadline {
            return Decision::StepDown;
        }
        return match seen {
            Seen::Held { holder: Some(h) } if h == me => Decision::Renew,
            // Someone replaced the lease, or deleted it: not ours any more.
            Seen::Held { .. } | Seen::Missing => Decision::StepDown,
            Seen::Failed => Decision::Wait,
        };
    }
    match seen {
        Seen::Failed => Decision::Wait,
        Seen::Missing => Decision::Create,
        // Ours from before a restart with the same identity.
        Seen::Held { holder: Some(h) } if h == me => Decision::Take,
        Seen::Held { holder: None } => Decision::Take,
        Seen::Held { holder: Some(_) } if since(clock.changed_at) >= config.lease_duration => {
            Decision::Take
        }
        Seen::Held { .. } => Decision::Wait,
    }
}

/// Election counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElectionStats {
    /// Leadership gained or lost.
    pub transitions: u64,
    /// Failed reads or writes while leading.
    pub renew_failures: u64,
}

#[derive(Default)]
struct Counters {
    transitions: AtomicU64,
    renew_failures: AtomicU64,
    /// The holder of the lease as last read or written (`None`: none, or
    /// never read).
    holder: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn stats(&self) -> ElectionStats {
        ElectionStats {
            transitions: self.transitions.load(Ordering::Relaxed),
            renew_failures: self.renew_failures.load(Ordering::Relaxed),
        }
    }

    fn holder(&self) -> Option<String> {
        self.holder.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_holder(&self, holder: Option<&str>) {
        let mut h = self.holder.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.as_deref() != holder {
            *h = holder.map(str::to_owned);
        }
    }
}

/// A cheap, cloneable view of a running election, for readers (metrics,
/// status): whether this replica leads, who holds the lease, the counters.
#[derive(Clone)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
    counters: Arc<Counters>,
    identity: Arc<str>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("identity", &self.identity)
            .field("leading", &self.is_leader())
            .finish()
    }
}

impl Leadership {
    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The lease's holder as this replica last read or wrote it (`None`:
    /// released, or not read yet). It may be stale by a retry period, and
    /// may name a holder whose lease has expired.
    pub fn holder(&self) -> Option<String> {
        self.counters.holder()
    }

    /// The counters.
    pub fn stats(&self) -> ElectionStats {
        self.counters.stats()
    }

    /// Whether the election loop still runs (false once it was released,
    /// or if it died).
    pub fn is_running(&self) -> bool {
        // The loop holds the sender: an error means it is gone.
        self.leading.has_changed().is_ok()
    }
}

/// A running election: the leadership signal, counters, and release.
pub struct LeaderElector {
    leading: watch::Receiver<bool>,
    counters: Arc<Counters>,
    identity: Arc<str>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector").field("leading", &*self.leading.borrow()).finish()
    }
}

impl LeaderElector {
    /// Starts the election on the lease `config.name` of `api`'s namespace.
    pub fn spawn(api: Api<Lease>, config: LeaseConfig) -> LeaderElector {
        let store = ApiLeaseStore::new(api, config.name.clone());
        LeaderElector::spawn_on(Arc::new(store), config)
    }

    /// Starts the election on any [`LeaseStore`].
    pub fn spawn_on(store: Arc<dyn LeaseStore>, config: LeaseConfig) -> LeaderElector {
        let (tx, leading) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let identity: Arc<str> = config.identity.as_str().into();
        let elector = Elector {
            store,
            config,
            tx,
            counters: counters.clone(),
            version: None,
            changed_at: Instant::now(),
            renewed_at: None,
        };
        let task = tokio::spawn(elector.run(stop_rx));
        LeaderElector { leading, counters, identity, stop: Some(stop), task: Some(task) }
    }

    /// The leadership signal: `true` while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// The counters.
    pub fn stats(&self) -> ElectionStats {
        self.counters.stats()
    }

    /// A cloneable view for readers.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            leading: self.leading.clone(),
            counters: self.counters.clone(),
            identity: self.identity.clone(),
        }
    }

    /// Whether the election loop still runs (it ends only by
    /// [`release`](Self::release), or by a panic).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the election: stops leading at once and, if this replica
    /// held the lease, releases it (no holder) so another takes it at once.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the loop is gone already.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // The loop never panics; a JoinError would mean it was aborted.
            let _ = task.await;
        }
    }
}

impl Drop for LeaderElector {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The loop's state.
struct Elector {
    store: Arc<dyn LeaseStore>,
    config: LeaseConfig,
    tx: watch::Sender<bool>,
    counters: Arc<Counters>,
    /// The last resourceVersion seen, and when it was first seen.
    version: Option<String>,
    changed_at: Instant,
    /// While leading: when the last successful renewal was sent.
    renewed_at: Option<Instant>,
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut wake = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = tokio::time::sleep_until(wake) => {}
            }
            self.attempt().await;
            wake = Instant::now() + self.config.retry_period;
            if let Some(renewed_at) = self.renewed_at {
                wake = wake.min(renewed_at + self.config.renew_deadline);
            }
        }
        self.release().await;
    }

    /// How long a call may take: a leader must not wait past its renew
    /// deadline for an answer.
    fn budget(&self) -> Duration {
        match self.renewed_at {
            Some(at) => (at + self.config.renew_deadline).saturating_duration_since(Instant::now()),
            None => self.config.lease_duration,
        }
    }

    async fn call<T>(
        &self,
        f: impl Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, Option<LeaseError>> {
        match tokio::time::timeout(self.budget(), f).await {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        }
    }

    fn set_leading(&mut self, leading: bool) {
        if !leading {
            self.renewed_at = None;
        }
        if *self.tx.borrow() != leading {
            self.counters.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(identity = self.config.identity, leading, "leadership changed");
            self.tx.send_replace(leading);
        }
    }

    fn failed(&self, what: &str, error: Option<&LeaseError>) {
        if self.renewed_at.is_some() {
            self.counters.renew_failures.fetch_add(1, Ordering::Relaxed);
        }
        match error {
            // Another replica wrote first: the normal outcome of a race.
            Some(LeaseError::Conflict) => tracing::debug!(what, "lease taken by another replica"),
            Some(e) => tracing::warn!(error = %e, what, "lease call failed"),
            None => tracing::warn!(what, "lease call timed out"),
        }
    }

    fn saw(&mut self, lease: &Lease, now: Instant) {
        self.counters.set_holder(holder_of(lease));
        let version = lease.metadata.resource_version.clone();
        if version != self.version {
            self.version = version;
            self.changed_at = now;
        }
    }

    /// Leading from now, after a write of `lease` sent at `sent`.
    fn won(&mut self, lease: &Lease, sent: Instant) {
        self.saw(lease, Instant::now());
        self.renewed_at = Some(sent);
        self.set_leading(true);
    }

    async fn attempt(&mut self) {
        let now = Instant::now();
        if self.renewed_at.is_some_and(|at| now >= at + self.config.renew_deadline) {
            tracing::warn!(identity = self.config.identity, "lease not renewed in time");
            self.set_leading(false);
            return;
        }
        let read = self.call(self.store.get()).await;
        let now = Instant::now();
        let read = match read {
            Ok(Some(lease)) => {
                self.saw(&lease, now);
                Some(Some(lease))
            }
            Ok(None) => {
                self.counters.set_holder(None);
                self.version = None;
                Some(None)
            }
            Err(e) => {
                self.failed("read", e.as_ref());
                None
            }
        };
        let seen = match &read {
            None => Seen::Failed,
            Some(None) => Seen::Missing,
            Some(Some(lease)) => Seen::Held { holder: holder_of(lease) },
        };
        let clock = Clock { changed_at: self.changed_at, renewed_at: self.renewed_at, now };
        let decision = decide(seen, &self.config.identity, clock, &self.config);
        tracing::trace!(?decision, identity = self.config.identity, "lease step");
        // Whole seconds, rounded up: the API server refuses 0 (a duration
        // under a second is for tests), and other tools read this field.
        let duration = self.config.lease_duration;
        let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        let seconds = i32::try_from(whole).unwrap_or(i32::MAX);
        match (decision, read) {
            (Decision::Wait, _) => {}
            (Decision::StepDown, _) => {
                tracing::warn!(identity = self.config.identity, "stepping down");
                self.set_leading(false);
            }
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now_micro()),
                        renew_time: Some(now_micro()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                let sent = Instant::now();
                match self.call(self.store.create(&lease)).await {
                    Ok(created) => self.won(&created, sent),
                    Err(e) => self.failed("create", e.as_ref()),
                }
            }
            (Decision::Renew | Decision::Take, Some(Some(mut lease))) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Take {
                    if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(now_micro());
                }
                spec.renew_time = Some(now_micro());
                spec.lease_duration_seconds = Some(seconds);
                let sent = Instant::now();
                match self.call(self.store.replace(&lease)).await {
                    Ok(written) => self.won(&written, sent),
                    Err(e) => self.failed("renew", e.as_ref()),
                }
            }
            // Renew and Take only follow a successful read.
            (Decision::Renew | Decision::Take, _) => {}
        }
    }

    /// On shutdown: stop leading first, then hand the lease over by
    /// writing no holder (others take a released lease at once).
    async fn release(&mut self) {
        let was_leading = self.renewed_at.is_some();
        self.set_leading(false);
        if !was_leading {
            return;
        }
        let budget = self.config.retry_period;
        let Ok(Ok(Some(mut lease))) = tokio::time::timeout(budget, self.store.get()).await else {
            tracing::warn!("lease not released: cannot read it");
            return;
        };
        if holder_of(&lease) != Some(self.config.identity.as_str()) {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        match tokio::time::timeout(budget, self.store.replace(&lease)).await {
            Ok(Ok(_)) => {
                self.counters.set_holder(None);
                tracing::info!(identity = self.config.identity, "lease released");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "lease not released"),
            Err(_) => tracing::warn!("lease not released: timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig::new("me")
    }

    fn clock(changed_ago: u64, renewed_ago: Option<u64>) -> Clock {
        let now = Instant::now() + Duration::from_secs(3600);
        let ago = |s: u64| now - Duration::from_secs(s);
        Clock { changed_at: ago(changed_ago), renewed_at: renewed_ago.map(ago), now }
    }

    const OTHER: Seen<'static> = Seen::Held { holder: Some("other") };
    const MINE: Seen<'static> = Seen::Held { holder: Some("me") };

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = config();
        assert_eq!(c.validate(), Ok(()));
        let unsafe_ = LeaseConfig { renew_deadline: c.lease_duration, ..c.clone() };
        assert!(unsafe_.validate().is_err());
        let slow_retry = LeaseConfig { retry_period: c.renew_deadline, ..c.clone() };
        assert!(slow_retry.validate().is_err());
        assert_eq!(c.name, "runboat-leader");
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
        );
    }

    #[test]
    fn a_follower_creates_a_missing_lease_and_takes_a_released_one_at_once() {
        assert_eq!(decide(Seen::Missing, "me", clock(0, None), &config()), Decision::Create);
        let released = Seen::Held { holder: None };
        assert_eq!(decide(released, "me", clock(0, None), &config()), Decision::Take);
        assert_eq!(decide(Seen::Failed, "me", clock(100, None), &config()), Decision::Wait);
    }

    #[test]
    fn a_held_lease_is_taken_only_once_unchanged_for_the_lease_duration_on_my_clock() {
        assert_eq!(decide(OTHER, "me", clock(0, None), &config()), Decision::Wait);
        assert_eq!(decide(OTHER, "me", clock(14, None), &config()), Decision::Wait);
        assert_eq!(decide(OTHER, "me", clock(15, None), &config()), Decision::Take);
        // A lease recorded as mine (a restart with the same identity).
        assert_eq!(decide(MINE, "me", clock(0, None), &config()), Decision::Take);
    }

    #[test]
    fn a_leader_renews_and_steps_down_at_the_renew_deadline_before_anyone_may_take() {
        assert_eq!(decide(MINE, "me", clock(1, Some(1)), &config()), Decision::Renew);
        assert_eq!(decide(Seen::Failed, "me", clock(9, Some(9)), &config()), Decision::Wait);
        assert_eq!(decide(Seen::Failed, "me", clock(10, Some(10)), &config()), Decision::StepDown);
        assert_eq!(decide(MINE, "me", clock(0, Some(10)), &config()), Decision::StepDown);
        // Lost to another replica, or deleted.
        assert_eq!(decide(OTHER, "me", clock(0, Some(1)), &config()), Decision::StepDown);
        assert_eq!(decide(Seen::Missing, "me", clock(0, Some(1)), &config()), Decision::StepDown);
        // Fencing: the leader's deadline comes before any taker's.
        let c = config();
        assert!(c.renew_deadline < c.lease_duration);
    }

    /// One Lease in memory with resourceVersions, as seen by one replica:
    /// its calls can fail or hang (a partition), and its clock can be off
    /// (the times it writes are shifted by `skew`).
    #[derive(Default)]
    struct Memory {
        lease: std::sync::Mutex<Option<Lease>>,
        version: AtomicU64,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Link {
        Up,
        Failing,
        Hanging,
    }

    struct Replica {
        memory: Arc<Memory>,
        link: Arc<std::sync::Mutex<Link>>,
        skew: jiff::SignedDuration,
    }

    impl Replica {
        async fn link(&self) -> Result<(), LeaseError> {
            let link = *self.link.lock().expect("link");
            match link {
                Link::Up => Ok(()),
                Link::Failing => Err(LeaseError::Api(kube::Error::ReadEvents(
                    std::io::Error::other("partitioned"),
                ))),
                Link::Hanging => std::future::pending().await,
            }
        }

        fn stamp(&self, lease: &Lease) -> Lease {
            let mut lease = lease.clone();
            let version = self.memory.version.fetch_add(1, Ordering::SeqCst) + 1;
            lease.metadata.resource_version = Some(version.to_string());
            if let Some(spec) = lease.spec.as_mut() {
                let shift = |t: &mut Option<MicroTime>| {
                    if let Some(t) = t {
                        t.0 = t.0.checked_add(self.skew).expect("in range");
                    }
                };
                shift(&mut spec.renew_time);
                shift(&mut spec.acquire_time);
            }
            lease
        }
    }

    #[async_trait]
    impl LeaseStore for Replica {
        async fn get(&self) -> Result<Option<Lease>, LeaseError> {
            self.link().await?;
            Ok(self.memory.lease.lock().expect("lease").clone())
        }
        async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
            self.link().await?;
            let mut stored = self.memory.lease.lock().expect("lease");
            if stored.is_some() {
                return Err(LeaseError::Conflict);
            }
            let lease = self.stamp(lease);
            *stored = Some(lease.clone());
            Ok(lease)
        }
        async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
            self.link().await?;
            let mut stored = self.memory.lease.lock().expect("lease");
            let current = stored.as_ref().and_then(|l| l.metadata.resource_version.clone());
            if current != lease.metadata.resource_version {
                return Err(LeaseError::Conflict);
            }
            let lease = self.stamp(lease);
            *stored = Some(lease.clone());
            Ok(lease)
        }
    }

    fn replica(
        memory: &Arc<Memory>,
        name: &str,
        skew_hours: i64,
    ) -> (LeaderElector, Arc<std::sync::Mutex<Link>>) {
        let link = Arc::new(std::sync::Mutex::new(Link::Up));
        let store = Replica {
            memory: memory.clone(),
            link: link.clone(),
            skew: jiff::SignedDuration::from_hours(skew_hours),
        };
        (LeaderElector::spawn_on(Arc::new(store), LeaseConfig::new(name)), link)
    }

    async fn leads(e: &LeaderElector, leading: bool, within: Duration) -> Option<Instant> {
        let mut rx = e.subscribe();
        tokio::time::timeout(within, rx.wait_for(|l| *l == leading)).await.ok()?.ok()?;
        Some(Instant::now())
    }

    /// On tokio's paused clock, so the timings are exact: with clocks a
    /// year apart, a leader whose lease calls fail or hang steps down
    /// within the renew deadline, and the other takes over only a full
    /// lease duration after it last saw the lease change, so at least
    /// `lease_duration - renew_deadline` after the step-down.
    /// Durations under a second (tests) are written rounded up: the API
    /// server refuses `leaseDurationSeconds: 0`.
    #[tokio::test(start_paused = true)]
    async fn a_lease_duration_is_written_in_whole_seconds_rounded_up() {
        let memory = Arc::new(Memory::default());
        let store = Replica {
            memory: memory.clone(),
            link: Arc::new(std::sync::Mutex::new(Link::Up)),
            skew: jiff::SignedDuration::ZERO,
        };
        let config = LeaseConfig {
            lease_duration: Duration::from_millis(600),
            renew_deadline: Duration::from_millis(400),
            retry_period: Duration::from_millis(100),
            ..LeaseConfig::new("quick")
        };
        let e = LeaderElector::spawn_on(Arc::new(store), config);
        assert!(leads(&e, true, Duration::from_secs(1)).await.is_some());
        let lease = memory.lease.lock().expect("lease").clone().expect("lease");
        assert_eq!(lease.spec.and_then(|s| s.lease_duration_seconds), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partitioned_leader_is_fenced_by_time_whatever_the_clocks_say() {
        let c = LeaseConfig::new("any");
        for partition in [Link::Failing, Link::Hanging] {
            let memory = Arc::new(Memory::default());
            let (a, a_link) = replica(&memory, "a", 24 * 365);
            assert!(leads(&a, true, c.retry_period).await.is_some());
            let (b, _) = replica(&memory, "b", -24 * 365);
            assert!(
                leads(&b, true, Duration::from_secs(120)).await.is_none(),
                "b took a live lease"
            );

            let cut_at = Instant::now();
            *a_link.lock().expect("link") = partition;
            let (a_down, b_up) = tokio::join!(
                leads(&a, false, Duration::from_secs(60)),
                leads(&b, true, Duration::from_secs(60))
            );
            let (a_down, b_up) = (a_down.expect("a steps down"), b_up.expect("b takes over"));
            assert!(a_down - cut_at <= c.renew_deadline, "a led {:?} on", a_down - cut_at);
            assert!(
                b_up - a_down >= c.lease_duration - c.renew_deadline,
                "b took over {:?} after a stepped down",
                b_up - a_down
            );
            assert!(b_up - cut_at <= c.lease_duration + c.retry_period * 2);
            assert!(a.stats().renew_failures > 0 || partition == Link::Hanging);
            assert_eq!(a.stats().transitions, 2);
            assert_eq!(b.leadership().holder().as_deref(), Some("b"));
            assert!(b.leadership().is_leader() && !a.leadership().is_leader());
            assert!(a.is_running() && b.is_running());
            let b_view = b.leadership();
            assert!(b_view.is_running());

            // Healed, a sees b renewing and stays a follower.
            *a_link.lock().expect("link") = Link::Up;
            assert!(leads(&a, true, Duration::from_secs(120)).await.is_none());
            assert_eq!(a.leadership().holder().as_deref(), Some("b"));
            assert_eq!(a.leadership().identity(), "a");
            // b releases: a takes over at the next retry.
            let released_at = Instant::now();
            b.release().await;
            assert!(!b_view.is_running() && !b_view.is_leader());
            let a_up = leads(&a, true, Duration::from_secs(60)).await.expect("a takes over");
            assert!(a_up - released_at <= c.retry_period);
            assert_eq!(a.leadership().holder().as_deref(), Some("a"));
            let lease = memory.lease.lock().expect("lease").clone().expect("lease");
            let spec = lease.spec.expect("spec");
            assert_eq!(spec.lease_transitions, Some(2));
            assert_eq!(spec.lease_duration_seconds, Some(15));
        }
    }
}
