//! Several replicas on one cluster: a follower (its controller follows a
//! leadership signal that says "not leading") serves webhooks and actions
//! exactly as the leader does, and they take effect: the follower's own
//! writes are the idempotent request writes (deterministic names,
//! server-side apply, scale), the leader's step does the scheduling (the
//! init job). And the production wiring with an election: the status and
//! metrics say who leads, shutdown releases the lease, and an election
//! loop that dies ends the process with an error.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use runboat_core::forge::NoForge;
use runboat_core::sim::SimCluster;
use runboat_core::{BuildStatus, Cluster, Controller, ControllerConfig, JobKind};
use runboat_github::WebhookSecret;
use runboat_k8s::lease::{LeaseError, LeaseStore};
use runboat_k8s::{LeaderElector, LeaseConfig};
use runboat_server::{AppState, GitHubLookup, ServerOptions};
use serde_json::json;
use tokio::sync::watch;

use crate::fake::FakeGitHub;
use crate::support::{Answer, Harness, admin, get, settings, sha, still};

/// A replica on `sim` whose leadership is `leading`.
async fn replica(sim: &SimCluster, leading: bool) -> (Harness, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(leading);
    let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
    let handle = Controller::spawn_with_leadership(
        cluster,
        Arc::new(NoForge),
        settings(),
        ControllerConfig::default(),
        rx,
    );
    handle.ready().await;
    let github = Arc::new(FakeGitHub::default());
    let lookup: Arc<dyn GitHubLookup> = github.clone();
    let state = AppState::new(handle.clone(), Some(lookup), ServerOptions::default());
    (Harness { state, sim: sim.clone(), handle, github }, tx)
}

async fn push(h: &Harness, sha: &str) -> Answer {
    let payload = json!({
        "ref": "refs/heads/16.0",
        "after": sha,
        "repository": {"full_name": "oca/web"},
    });
    let body = serde_json::to_vec(&payload).expect("json");
    let signature = WebhookSecret::new("whsecret").sign(&body);
    let req = Request::post("/webhooks/github")
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", signature)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    h.send(req).await
}

fn init_jobs(sim: &SimCluster, build: &str) -> usize {
    sim.jobs().iter().filter(|j| j.build_name == build && j.kind == JobKind::Initialize).count()
}

#[tokio::test]
async fn a_followers_webhooks_and_actions_take_effect_and_answer_as_the_leaders() {
    let sim = SimCluster::new(still());
    let (follower, _f) = replica(&sim, false).await;

    // Alone, the follower deploys (the request's own write) but schedules
    // nothing: the build waits for initialization.
    let a = push(&follower, &sha(1)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let name = a.detail().strip_prefix("deploying build ").expect("deploying").to_owned();
    let build = follower.wait_status(&name, Some(BuildStatus::Initializing)).await;
    assert_eq!(build.commit_info.git_commit(), sha(1));
    assert!(sim.deployment(&name).is_some(), "the Deployment is in the cluster");
    // Every step of the follower's loop ran over the new build; give it
    // several more events (another build) and still no init job.
    let other = push(&follower, &sha(2)).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    let other = other.detail().strip_prefix("deploying build ").expect("name").to_owned();
    follower.wait_status(&other, Some(BuildStatus::Initializing)).await;
    assert_eq!(init_jobs(&sim, &name) + init_jobs(&sim, &other), 0, "a follower scheduled");

    // A leader comes: it decides from the cluster alone and initializes
    // what the follower deployed.
    let (leader, _l) = replica(&sim, true).await;
    leader
        .wait_for(|_| (init_jobs(&sim, &name) == 1 && init_jobs(&sim, &other) == 1).then_some(()))
        .await
        .expect("the leader starts the init jobs");

    // The same push through either replica: the same answer.
    let again_f = push(&follower, &sha(1)).await;
    let again_l = push(&leader, &sha(1)).await;
    assert_eq!((again_f.status, again_f.text()), (again_l.status, again_l.text()));

    // An action on the follower takes effect and answers as on the leader.
    let stopped = leader.add("oca/web", "16.0", None, &sha(3), BuildStatus::Stopped, 0).await;
    follower.wait_status(&stopped.name, Some(BuildStatus::Stopped)).await;
    let started =
        follower.send(admin("POST", &format!("/api/v1/builds/{}/start", stopped.name))).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert_eq!(started.json()["ignored"], json!(null), "{}", started.text());
    leader.wait_status(&stopped.name, Some(BuildStatus::Starting)).await;
    follower.wait_status(&stopped.name, Some(BuildStatus::Starting)).await;
    let on_f =
        follower.send(admin("POST", &format!("/api/v1/builds/{}/start", stopped.name))).await;
    let on_l = leader.send(admin("POST", &format!("/api/v1/builds/{}/start", stopped.name))).await;
    assert_eq!((on_f.status, on_f.text()), (on_l.status, on_l.text()));
    assert_eq!(on_f.json()["ignored"], json!(true));

    // The read API answers the same (no leader election view here: the
    // wire has no leadership field).
    let status_f = follower.send(get("/api/v1/status")).await;
    let status_l = leader.send(get("/api/v1/status")).await;
    assert_eq!(status_f.json(), status_l.json());
    assert!(status_f.json().get("leadership").is_none(), "{}", status_f.text());
    let build_f = follower.send(get(&format!("/api/v1/builds/{name}"))).await;
    let build_l = leader.send(get(&format!("/api/v1/builds/{name}"))).await;
    assert_eq!(build_f.json(), build_l.json());
}

/// One Lease in memory, with resourceVersion preconditions; `broken` makes
/// every read panic (an election loop that dies).
#[derive(Default)]
struct MemoryLease {
    lease: std::sync::Mutex<Option<Lease>>,
    version: std::sync::atomic::AtomicU64,
    broken: bool,
}

impl MemoryLease {
    fn stored(&self) -> Option<Lease> {
        self.lease.lock().expect("lease").clone()
    }

    fn stamp(&self, lease: &Lease) -> Lease {
        let mut lease = lease.clone();
        let v = self.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        lease.metadata.resource_version = Some(v.to_string());
        lease
    }
}

#[async_trait::async_trait]
impl LeaseStore for MemoryLease {
    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        assert!(!self.broken, "a broken lease store");
        Ok(self.stored())
    }
    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut stored = self.lease.lock().expect("lease");
        if stored.is_some() {
            return Err(LeaseError::Conflict);
        }
        *stored = Some(self.stamp(lease));
        Ok(stored.clone().expect("stored"))
    }
    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut stored = self.lease.lock().expect("lease");
        let current = stored.as_ref().and_then(|l| l.metadata.resource_version.clone());
        if current != lease.metadata.resource_version {
            return Err(LeaseError::Conflict);
        }
        *stored = Some(self.stamp(lease));
        Ok(stored.clone().expect("stored"))
    }
}

fn holder(store: &MemoryLease) -> Option<String> {
    store.stored().and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

/// The production wiring (`run_with_cluster_elected`) on a simulated
/// cluster, with an election on `store`; `stop` ends it as SIGTERM does.
fn serve_elected(
    store: Arc<MemoryLease>,
    listener: tokio::net::TcpListener,
) -> (
    tokio::task::JoinHandle<runboat_server::error::Result<()>>,
    runboat_k8s::Leadership,
    tokio::sync::oneshot::Sender<()>,
) {
    let cluster: Arc<dyn Cluster> = Arc::new(SimCluster::new(still()));
    let elector = LeaderElector::spawn_on(store, LeaseConfig::new("replica-1"));
    let leadership = elector.leadership();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runboat_server::run::run_with_cluster_elected(
        (*settings()).clone(),
        cluster,
        Some(elector),
        ServerOptions::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (server, leadership, stop)
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Full::default())
        .expect("request");
    let resp = client.request(req).await.expect("HTTP request");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_elected_server_says_who_leads_and_releases_the_lease_on_shutdown() {
    let store = Arc::new(MemoryLease::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (server, leadership, stop) = serve_elected(store.clone(), listener);
    let leading = leadership;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !leading.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "never led");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(holder(&store).as_deref(), Some("replica-1"));

    let status = loop {
        let (code, body) = http_get(addr, "/api/v1/status").await;
        if code == StatusCode::OK {
            break serde_json::from_str::<serde_json::Value>(&body).expect("JSON");
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {code} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        status["leadership"],
        json!({"identity": "replica-1", "leader": true, "holder": "replica-1"})
    );
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(metrics.contains("\nrunboat_leader 1\n"), "{metrics}");
    assert!(metrics.contains("\nrunboat_leader_transitions_total 1\n"), "{metrics}");
    assert!(metrics.contains("\nrunboat_lease_renew_failures_total 0\n"), "{metrics}");

    stop.send(()).expect("the server runs");
    let result = tokio::time::timeout(std::time::Duration::from_secs(20), server)
        .await
        .expect("stops in time")
        .expect("joined");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(holder(&store), None, "the lease is released");
    assert!(!leading.is_leader() && !leading.is_running());
}

#[tokio::test]
async fn the_server_exits_with_an_error_when_its_election_dies() {
    let store = Arc::new(MemoryLease { broken: true, ..MemoryLease::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (server, _leadership, _stop) = serve_elected(store, listener);
    let result = tokio::time::timeout(std::time::Duration::from_secs(20), server)
        .await
        .expect("exits by itself")
        .expect("joined");
    assert!(matches!(result, Err(runboat_server::error::Error::ElectionStopped)), "{result:?}");
}
