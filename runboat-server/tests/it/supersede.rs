//! Supersede end to end: the real binary on kubesim, with
//! `supersede_keep = 1`. A pull request's first commit initializes; a
//! second one fails its initialization and the first one, the last good
//! build, stays; a third one initializes and both older builds are
//! undeployed, their last event saying by which build.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use kubesim::{JobRule, JobScript};
use runboat_github::WebhookSecret;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::e2e::{SECRET, STEP, Server, env};

const REPO: &str = "oca/supersede-addons";

/// Sends a signed `pull_request` webhook for PR 7 at `sha`; the name of
/// the build it deploys.
async fn push_commit(server: &Server, sha: &str) -> String {
    let payload = json!({
        "action": "synchronize",
        "number": 7,
        "pull_request": {"number": 7, "base": {"ref": "16.0"}, "head": {"sha": sha}},
        "repository": {"full_name": REPO},
    });
    let body = payload.to_string().into_bytes();
    let req = Request::post(format!("{}/webhooks/github", server.base))
        .header("X-GitHub-Event", "pull_request")
        .header("X-Hub-Signature-256", WebhookSecret::new(SECRET).sign(&body))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("request");
    let (status, answer) = server.request(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let detail = answer["detail"].as_str().expect("a detail");
    detail.strip_prefix("deploying build ").expect("the build's name").to_owned()
}

/// Polls `GET /api/v1/builds/{name}` until `check` holds of (HTTP status,
/// build); the last build read.
async fn until(
    server: &Server,
    name: &str,
    what: &str,
    check: impl Fn(StatusCode, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, build) = server.get(&format!("/api/v1/builds/{name}")).await;
        if check(status, &build) {
            return build;
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {build}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The creation time of build `name`, in seconds since the epoch.
async fn build_time(server: &Server, name: &str) -> i64 {
    let (_, build) = server.get(&format!("/api/v1/builds/{name}")).await;
    let created = build["created"].as_str().expect("created");
    created.parse::<jiff::Timestamp>().expect("RFC 3339").as_second()
}

#[tokio::test]
async fn a_newer_commit_supersedes_the_older_builds_only_once_initialized() {
    let env = env().await;
    let settings = env.settings("supersede_keep = 1");
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, &settings, &[]).await;
    server.wait_ready().await;
    let mut events = server.events(&format!("repo={REPO}")).await;
    let status_is =
        |s: &'static str| move |c: StatusCode, b: &Value| c == StatusCode::OK && b["status"] == s;

    let first = push_commit(&server, &"1".repeat(40)).await;
    until(&server, &first, "stopped", status_is("stopped")).await;

    // The second commit's initialization fails: the first build stays.
    let h = env.sim.handle();
    h.add_job_rule(JobRule::by_label("runboat/job-kind", "initialize", JobScript::fail()));
    let second = push_commit(&server, &"2".repeat(40)).await;
    until(&server, &second, "failed", status_is("failed")).await;
    h.update_controllers(|c| c.job_rules.clear());
    let (status, build) = server.get(&format!("/api/v1/builds/{first}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(build["status"], "stopped");
    assert_eq!(build.get("superseded_by"), None, "{build}");

    // The third one initializes: the two older builds go, superseded by it.
    // Builds are ordered by their creation time, which Kubernetes keeps to
    // the second (ties by name): the third is created a second later.
    let created = build_time(&server, &second).await;
    let deadline = Instant::now() + STEP;
    while jiff::Timestamp::now().as_second() <= created {
        assert!(Instant::now() < deadline, "the clock does not advance");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = push_commit(&server, &"3".repeat(40)).await;
    until(&server, &third, "stopped", status_is("stopped")).await;
    for old in [&first, &second] {
        until(&server, old, "gone", |c, _| c == StatusCode::NOT_FOUND).await;
    }
    let third_build = until(&server, &third, "kept", status_is("stopped")).await;
    assert_eq!(third_build.get("superseded_by"), None, "{third_build}");

    // Each old build's undeploying event said by which build.
    let mut said: Vec<(String, Value)> = Vec::new();
    let deadline = Instant::now() + STEP;
    while said.iter().filter(|(_, b)| b.is_null()).count() < 2 {
        let Ok(Some((_, data))) = tokio::time::timeout_at(deadline, events.recv()).await else {
            panic!("events ended early: {said:?}");
        };
        let build = &data["build"];
        let name = build["name"].as_str().unwrap_or_default().to_owned();
        if name == first || name == second {
            if data["event"] == "del" {
                said.push((name, Value::Null));
            } else if build["status"] == "undeploying" {
                said.push((name, build["superseded_by"].clone()));
            }
        }
    }
    for old in [&first, &second] {
        assert!(
            said.iter().any(|(n, by)| n == old && by.as_str() == Some(third.as_str())),
            "{old} undeploying without superseded_by {third}: {said:?}"
        );
    }
}
