//! ETA and timeline end to end: the real binary on kubesim. runboat learns
//! how long a repo's initialization takes from a first build's init Job,
//! then shows a queued build's estimate, which shrinks as its own
//! initialization runs, and the stages in the build's timeline.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use kubesim::{JobRule, JobScript};
use runboat_github::WebhookSecret;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::e2e::{SECRET, STEP, Server, env};

const REPO: &str = "oca/eta-addons";
/// How long every init Job runs.
const INIT: Duration = Duration::from_secs(6);

/// Pushes `sha` to 16.0; the name of the build it deploys.
async fn push(server: &Server, sha: &str) -> String {
    let payload =
        json!({"ref": "refs/heads/16.0", "after": sha, "repository": {"full_name": REPO}});
    let body = payload.to_string().into_bytes();
    let req = Request::post(format!("{}/webhooks/github", server.base))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", WebhookSecret::new(SECRET).sign(&body))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("request");
    let (status, answer) = server.request(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let detail = answer["detail"].as_str().expect("a detail");
    detail.strip_prefix("deploying build ").expect("the build's name").to_owned()
}

/// The build `name`, once the index has it (a webhook's 202 may come
/// before the Deployment's event).
async fn build(server: &Server, name: &str) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, build) = server.get(&format!("/api/v1/builds/{name}")).await;
        if status == StatusCode::OK {
            return build;
        }
        assert!(Instant::now() < deadline, "{name}: {status} {build}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_queued_build_shows_an_estimate_that_shrinks_and_then_its_timeline() {
    let env = env().await;
    let settings = env.settings("max_initializing = 1");
    let h = env.sim.handle();
    h.add_job_rule(JobRule::by_label(
        "runboat/job-kind",
        "initialize",
        JobScript::succeed().with_duration(INIT),
    ));
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, &settings, &[]).await;
    server.wait_ready().await;

    // No history: no estimate. The first run teaches one.
    let first = push(&server, &"a".repeat(40)).await;
    let b = build(&server, &first).await;
    assert_eq!(b.get("eta_seconds"), None, "{b}");
    let deadline = Instant::now() + STEP;
    while build(&server, &first).await["status"] != "stopped" {
        assert!(Instant::now() < deadline, "never initialized:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = &build(&server, &first).await["timeline"];
    for stage in ["created", "init_started", "init_finished"] {
        assert!(t[stage].is_string(), "{stage} in {t}");
    }
    assert_eq!(t.get("started"), None, "{t}");

    // Two more commits: the second waits for the first's slot.
    let running = push(&server, &"b".repeat(40)).await;
    let queued = push(&server, &"c".repeat(40)).await;
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + STEP;
    loop {
        let b = build(&server, &queued).await;
        if b["status"] == "stopped" {
            assert_eq!(b.get("eta_seconds"), None, "{b}");
            break;
        }
        if let Some(eta) = b["eta_seconds"].as_u64()
            && seen.last() != Some(&eta)
        {
            seen.push(eta);
        }
        assert!(Instant::now() < deadline, "never initialized; etas {seen:?}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_eta = *seen.first().expect("an estimate was shown");
    // Queued behind the running one (one slot): two runs of INIT, give or
    // take the second timestamps round to.
    assert!((10..=16).contains(&first_eta), "estimate {first_eta} s, two {INIT:?} runs");
    // Its own run under way: at most one run left.
    assert!(seen.iter().any(|e| *e <= 8), "the estimate never came down to its own run: {seen:?}");
    assert!(seen.iter().any(|e| *e < first_eta), "the estimate never shrank: {seen:?}");
    // The timeline is in the single-build answer only: lists and events
    // stay as small as they were.
    assert!(build(&server, &running).await["timeline"]["init_finished"].is_string());
    let (_, list) = server.get(&format!("/api/v1/builds?repo={REPO}")).await;
    let listed = list.as_array().expect("a list").iter().find(|b| b["name"] == running.as_str());
    assert!(listed.expect("listed").get("timeline").is_none(), "{list}");

    // A restarted runboat relearns the estimate from the init Jobs the
    // cluster holds: a new commit shows one at once.
    drop(server);
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, &settings, &[]).await;
    server.wait_ready().await;
    let after = push(&server, &"d".repeat(40)).await;
    let b = build(&server, &after).await;
    let eta = b["eta_seconds"].as_u64();
    assert!(eta.is_some_and(|e| (5..=16).contains(&e)), "no estimate after a restart: {b}");
}
