//! GitHub deployments against the mock GitHub: the exact calls of a pull
//! request build's life (initialized, started, superseded) and of a failing
//! one, coalescing under a burst, and rate limiting.

use std::time::Duration;

use http::Method;
use runboat_core::forge::{DeploymentState, DeploymentUpdate, Forge};
use runboat_github::{GitHubClient, GitHubForge};
use serde_json::{Value, json};

use crate::client::config;
use crate::mock::{MockGitHub, MockResponse};

const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const DEPLOYMENTS: &str = "/repos/oca/web/deployments";

fn statuses(id: u64) -> String {
    format!("/repos/oca/web/deployments/{id}/statuses")
}

fn update(build: &str, state: DeploymentState, description: &str) -> DeploymentUpdate {
    let (environment_url, log_url) = match state {
        DeploymentState::Success => (
            format!("http://{build}.runboat.example.org"),
            format!("https://r.example.org/builds/{build}"),
        ),
        DeploymentState::Failure => {
            (String::new(), format!("https://r.example.org/api/v1/builds/{build}/init-log"))
        }
        _ => (String::new(), format!("https://r.example.org/builds/{build}")),
    };
    DeploymentUpdate {
        repo: "oca/web".into(),
        git_commit: SHA.into(),
        build_name: build.into(),
        environment: "runboat/16.0-pr7".into(),
        transient: true,
        state,
        environment_url,
        log_url,
        description: description.into(),
    }
}

async fn mock_with(ids: &[u64]) -> MockGitHub {
    let mock = MockGitHub::start().await;
    let created =
        ids.iter().map(|id| MockResponse::new(201, json!({"id": id}).to_string())).collect();
    mock.on(Method::POST, DEPLOYMENTS, created).await;
    for id in ids {
        mock.on(Method::POST, &statuses(*id), vec![MockResponse::new(201, "{}")]).await;
    }
    mock
}

fn forge(mock: &MockGitHub) -> GitHubForge {
    GitHubForge::new(GitHubClient::new(config(&mock.url)).expect("client"))
}

/// (path, state or environment) of every request, in order.
fn calls(mock: &MockGitHub) -> Vec<(String, String)> {
    mock.requests()
        .iter()
        .map(|r| {
            let what = r.body.get("state").or_else(|| r.body.get("environment"));
            let what = what.and_then(Value::as_str).unwrap_or(if r.method == Method::GET {
                "GET"
            } else {
                ""
            });
            (r.path.clone(), what.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_pull_request_build_that_initializes_then_is_superseded() {
    let mock = mock_with(&[42]).await;
    let forge = forge(&mock);
    // The controller's updates, each sent before the next comes (a build's
    // steps are seconds apart). Starting it earns no new state.
    for (state, description) in [
        (DeploymentState::Queued, "build queued"),
        (DeploymentState::InProgress, "initializing, ready in ~4 min"),
        (DeploymentState::Success, "build ready"),
        (DeploymentState::Inactive, "superseded by b2"),
        // The cleanup that follows says inactive again: not resent.
        (DeploymentState::Inactive, "undeployed"),
    ] {
        forge.post_deployment(update("b1", state, description));
        forge.flush().await;
    }
    assert_eq!(
        calls(&mock),
        [
            // None made before a restart (the mock knows none: 404).
            (DEPLOYMENTS.to_owned(), "GET".to_owned()),
            (DEPLOYMENTS.to_owned(), "runboat/16.0-pr7".to_owned()),
            (statuses(42), "queued".to_owned()),
            (statuses(42), "in_progress".to_owned()),
            (statuses(42), "success".to_owned()),
            (statuses(42), "inactive".to_owned()),
        ]
    );
    let requests: Vec<_> = mock.requests().into_iter().skip(1).collect();
    let created = &requests[0].body;
    assert_eq!(created["ref"], SHA);
    assert_eq!(created["transient_environment"], true);
    assert_eq!(created["production_environment"], false);
    assert_eq!(created["auto_merge"], false);
    assert_eq!(created["required_contexts"], json!([]));
    let success = &requests[3].body;
    assert_eq!(success["environment_url"], "http://b1.runboat.example.org");
    assert_eq!(success["log_url"], "https://r.example.org/builds/b1");
    assert_eq!(success["auto_inactive"], false);
    assert_eq!(requests[2].body["description"], "initializing, ready in ~4 min");
    assert_eq!(requests[4].body["description"], "superseded by b2");
    assert!(requests[1].body.get("environment_url").is_none());
}

#[tokio::test]
async fn a_failing_build_links_its_init_log() {
    let mock = mock_with(&[7]).await;
    let forge = forge(&mock);
    for state in [DeploymentState::Queued, DeploymentState::InProgress, DeploymentState::Failure] {
        forge.post_deployment(update("b1", state, "x"));
        forge.flush().await;
    }
    let states: Vec<String> = calls(&mock).into_iter().skip(2).map(|(_, s)| s).collect();
    assert_eq!(states, ["queued", "in_progress", "failure"]);
    let last = mock.requests().pop().expect("requests");
    assert_eq!(last.body["log_url"], "https://r.example.org/api/v1/builds/b1/init-log");
    assert!(last.body.get("environment_url").is_none());
}

#[tokio::test]
async fn a_burst_of_updates_coalesces_per_build() {
    let mock = mock_with(&[1, 2]).await;
    let forge = forge(&mock);
    // Without yielding (current-thread runtime): the sender sees only the
    // newest update of each build.
    for state in [DeploymentState::Queued, DeploymentState::InProgress, DeploymentState::Success] {
        forge.post_deployment(update("b1", state, "x"));
        forge.post_deployment(update("b2", state, "x"));
    }
    assert_eq!(forge.queued_deployments(), 2);
    forge.flush().await;
    assert_eq!(
        calls(&mock),
        [
            (DEPLOYMENTS.to_owned(), "GET".to_owned()),
            (DEPLOYMENTS.to_owned(), "runboat/16.0-pr7".to_owned()),
            (statuses(1), "success".to_owned()),
            (DEPLOYMENTS.to_owned(), "GET".to_owned()),
            (DEPLOYMENTS.to_owned(), "runboat/16.0-pr7".to_owned()),
            (statuses(2), "success".to_owned()),
        ]
    );
    // An update of a build never deployed on GitHub that is already
    // inactive creates nothing.
    forge.post_deployment(update("b3", DeploymentState::Inactive, "undeployed"));
    forge.flush().await;
    assert_eq!(mock.requests().len(), 7);
    assert_eq!(mock.requests()[6].method, Method::GET);
}

#[tokio::test]
async fn a_rate_limit_holds_the_update_and_every_later_one_then_sends_them() {
    let mock = MockGitHub::start().await;
    mock.on(Method::POST, DEPLOYMENTS, vec![MockResponse::new(201, r#"{"id": 5}"#)]).await;
    mock.on(
        Method::POST,
        &statuses(5),
        vec![
            MockResponse::new(403, r#"{"message":"API rate limit exceeded"}"#)
                .header("retry-after", "1")
                .header("x-ratelimit-remaining", "0"),
            MockResponse::new(201, "{}"),
        ],
    )
    .await;
    // A client that never waits itself: the forge holds the update.
    let mut config = config(&mock.url);
    config.retry.max_wait = Duration::ZERO;
    let forge = GitHubForge::new(GitHubClient::new(config).expect("client"));
    forge.post_deployment(update("b1", DeploymentState::Queued, "build queued"));
    mock.wait_for_requests(3).await;
    // Newer updates while held: the newest is sent once the pause ends.
    forge.post_deployment(update("b1", DeploymentState::InProgress, "initializing"));
    forge.flush().await;
    let requests = mock.requests();
    let states: Vec<String> = calls(&mock).into_iter().map(|(_, s)| s).collect();
    assert_eq!(states, ["GET", "runboat/16.0-pr7", "queued", "in_progress"]);
    let paused = requests[3].at.duration_since(requests[2].at);
    assert!(paused >= Duration::from_secs(1), "resent after {paused:?}");
    // No second deployment was created for the held update.
    let posts = requests.iter().filter(|r| r.path == DEPLOYMENTS && r.method == Method::POST);
    assert_eq!(posts.count(), 1);
}

#[tokio::test]
async fn after_a_restart_the_deployment_made_before_is_found_and_closed() {
    let mock = MockGitHub::start().await;
    let listed = json!([
        {"id": 8, "payload": {"build": "other"}},
        {"id": 9, "payload": {"build": "b1"}},
    ]);
    mock.on(Method::GET, DEPLOYMENTS, vec![MockResponse::new(200, listed.to_string())]).await;
    mock.on(Method::POST, &statuses(9), vec![MockResponse::new(201, "{}")]).await;
    let forge = forge(&mock);
    forge.post_deployment(update("b1", DeploymentState::Inactive, "superseded by b2"));
    forge.flush().await;
    assert_eq!(
        calls(&mock),
        [(DEPLOYMENTS.to_owned(), "GET".to_owned()), (statuses(9), "inactive".to_owned())]
    );
    let asked = &mock.requests()[0];
    assert_eq!(asked.method, Method::GET);
}
