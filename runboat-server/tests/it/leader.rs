//! Several replicas on one cluster: a follower (its controller follows a
//! leadership signal that says "not leading") serves webhooks and actions
//! exactly as the leader does, and they take effect: the follower's own
//! writes are the idempotent request writes (deterministic names,
//! server-side apply, scale), the leader's step does the scheduling (the
//! init job).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runboat_core::forge::NoForge;
use runboat_core::sim::SimCluster;
use runboat_core::{BuildStatus, Cluster, Controller, ControllerConfig, JobKind};
use runboat_github::WebhookSecret;
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
