//! The REST client against the mock GitHub: paths, headers, retries,
//! rate limits, 404s, timeouts.

use std::time::Duration;

use http::Method;
use runboat_core::forge::{CommitState, CommitStatus};
use runboat_github::client::STATUS_CONTEXT;
use runboat_github::{ClientConfig, ClientError, GitHubClient, GitHubToken, RetryPolicy};

use crate::mock::{MockGitHub, MockResponse};

pub(crate) const TOKEN: &str = "ghp_TopSecretToken0123456789";
const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

pub(crate) fn config(url: &str) -> ClientConfig {
    ClientConfig {
        api_url: url.to_owned(),
        token: Some(GitHubToken::new(TOKEN)),
        user_agent: "runboat-test/1.0".into(),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_wait: Duration::from_secs(5),
        },
    }
}

fn client(mock: &MockGitHub) -> GitHubClient {
    GitHubClient::new(config(&mock.url)).expect("client")
}

fn branch_json(sha: &str) -> String {
    serde_json::json!({
        "name": "16.0",
        "commit": {"sha": sha, "url": format!("https://api.github.com/repos/OCA/web/commits/{sha}")},
        "protected": true,
    })
    .to_string()
}

pub(crate) fn status(state: CommitState, description: &str) -> CommitStatus {
    CommitStatus {
        repo: "oca/web".into(),
        git_commit: SHA.into(),
        state,
        target_url: "https://runboat.example.org/builds/b1234".into(),
        description: description.into(),
    }
}

fn assert_no_token(error: &ClientError) {
    let text = format!("{error} {error:?}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
}

#[tokio::test]
async fn branch_head_uses_the_right_path_and_headers() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![MockResponse::new(200, branch_json(SHA))],
    )
    .await;
    let sha = client(&mock).branch_head("OCA/web", "16.0").await.expect("branch head");
    assert_eq!(sha, SHA);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::GET);
    let headers = &requests[0].headers;
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}").as_str());
    assert_eq!(headers["accept"], "application/vnd.github+json");
    assert_eq!(headers["user-agent"], "runboat-test/1.0");
    assert_eq!(headers["x-github-api-version"], "2022-11-28");
}

#[tokio::test]
async fn branch_names_with_slashes_and_specials_are_encoded() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/feature/a%20b",
        vec![MockResponse::new(200, branch_json(SHA))],
    )
    .await;
    let sha = client(&mock).branch_head("oca/web", "feature/a b").await.expect("branch head");
    assert_eq!(sha, SHA);
}

#[tokio::test]
async fn enterprise_base_path_is_kept() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/api/v3/repos/oca/web/branches/16.0",
        vec![MockResponse::new(200, branch_json(SHA))],
    )
    .await;
    let client = GitHubClient::new(config(&format!("{}/api/v3/", mock.url))).expect("client");
    assert_eq!(client.branch_head("oca/web", "16.0").await.expect("head"), SHA);
}

#[tokio::test]
async fn no_token_means_no_authorization_header() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![MockResponse::new(200, branch_json(SHA))],
    )
    .await;
    let client =
        GitHubClient::new(ClientConfig { token: None, ..config(&mock.url) }).expect("client");
    client.branch_head("oca/web", "16.0").await.expect("head");
    assert!(mock.requests()[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn pull_request_gives_base_branch_and_head_sha() {
    let mock = MockGitHub::start().await;
    let body = serde_json::json!({
        "number": 42,
        "state": "open",
        "head": {"ref": "16.0-fix", "sha": SHA.to_uppercase()},
        "base": {"ref": "16.0", "sha": "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9"},
    });
    mock.on(Method::GET, "/repos/oca/web/pulls/42", vec![MockResponse::new(200, body.to_string())])
        .await;
    let pr = client(&mock).pull_request("oca/web", 42).await.expect("pull request");
    assert_eq!(pr.base_branch, "16.0");
    assert_eq!(pr.head_sha, SHA);
    assert!(pr.open);
}

#[tokio::test]
async fn create_status_posts_the_status_with_the_runboat_context() {
    let mock = MockGitHub::start().await;
    let path = format!("/repos/oca/web/statuses/{SHA}");
    mock.on(Method::POST, &path, vec![MockResponse::new(201, "{}")]).await;
    client(&mock).create_status(&status(CommitState::Success, "build ready")).await.expect("post");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::POST);
    assert_eq!(requests[0].path, path);
    assert_eq!(requests[0].headers["authorization"], format!("Bearer {TOKEN}").as_str());
    assert_eq!(requests[0].headers["content-type"], "application/json");
    assert_eq!(
        requests[0].body,
        serde_json::json!({
            "state": "success",
            "target_url": "https://runboat.example.org/builds/b1234",
            "description": "build ready",
            "context": STATUS_CONTEXT,
        })
    );
    assert_eq!(STATUS_CONTEXT, "runboat/build");
}

#[tokio::test]
async fn retries_a_502_then_succeeds() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![MockResponse::new(502, "Bad Gateway"), MockResponse::new(200, branch_json(SHA))],
    )
    .await;
    let sha = client(&mock).branch_head("oca/web", "16.0").await.expect("retried");
    assert_eq!(sha, SHA);
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn gives_up_after_the_configured_retries_with_the_response() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![MockResponse::new(500, r#"{"message":"Server Error"}"#)],
    )
    .await;
    let error = client(&mock).branch_head("oca/web", "16.0").await.expect_err("500s");
    assert_eq!(mock.requests().len(), 4, "1 attempt + 3 retries");
    match &error {
        ClientError::Status { status, body, .. } => {
            assert_eq!(status.as_u16(), 500);
            assert!(body.contains("Server Error"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert_no_token(&error);
}

#[tokio::test]
async fn rate_limit_waits_as_retry_after_says() {
    let mock = MockGitHub::start().await;
    let path = format!("/repos/oca/web/statuses/{SHA}");
    mock.on(
        Method::POST,
        &path,
        vec![
            MockResponse::new(403, r#"{"message":"API rate limit exceeded"}"#)
                .header("retry-after", "1")
                .header("x-ratelimit-remaining", "0"),
            MockResponse::new(201, "{}"),
        ],
    )
    .await;
    client(&mock).create_status(&status(CommitState::Pending, "queued")).await.expect("waited");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn primary_rate_limit_waits_for_the_reset_time() {
    let mock = MockGitHub::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![
            MockResponse::new(403, r#"{"message":"API rate limit exceeded"}"#)
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", (now + 1).to_string()),
            MockResponse::new(200, branch_json(SHA)),
        ],
    )
    .await;
    assert_eq!(client(&mock).branch_head("oca/web", "16.0").await.expect("waited"), SHA);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    // The wait is at least a second whatever the clock says.
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn rate_limit_longer_than_the_cap_fails_at_once() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/pulls/7",
        vec![MockResponse::new(429, "{}").header("retry-after", "3600")],
    )
    .await;
    let error = client(&mock).pull_request("oca/web", 7).await.expect_err("rate limited");
    assert!(
        matches!(error, ClientError::RateLimited { wait: Some(w), .. } if w == Duration::from_secs(3600)),
        "{error:?}"
    );
    assert_eq!(mock.requests().len(), 1);
    assert_no_token(&error);
}

#[tokio::test]
async fn not_found_is_typed() {
    let mock = MockGitHub::start().await;
    let error = client(&mock).branch_head("oca/web", "nope").await.expect_err("404");
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");
    assert_eq!(error.to_string(), "repo or branch not found on GitHub: branch nope of oca/web");
    let error = client(&mock).pull_request("oca/web", 9).await.expect_err("404");
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");
    let error =
        client(&mock).create_status(&status(CommitState::Failure, "x")).await.expect_err("404");
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");
    // A 404 is final: no retries.
    assert_eq!(mock.requests().len(), 3);
    assert_no_token(&error);
}

#[tokio::test]
async fn unexpected_json_is_a_decode_error() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![MockResponse::new(200, "{\"commit\":1}")],
    )
    .await;
    let error = client(&mock).branch_head("oca/web", "16.0").await.expect_err("bad json");
    assert!(matches!(error, ClientError::Decode { .. }), "{error:?}");
}

#[tokio::test]
async fn every_attempt_has_a_timeout() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::GET,
        "/repos/oca/web/branches/16.0",
        vec![MockResponse::new(200, branch_json(SHA)).delay(Duration::from_secs(30))],
    )
    .await;
    let config = ClientConfig {
        timeout: Duration::from_millis(200),
        retry: RetryPolicy { max_retries: 1, ..config(&mock.url).retry },
        ..config(&mock.url)
    };
    let client = GitHubClient::new(config).expect("client");
    let error = client.branch_head("oca/web", "16.0").await.expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    mock.wait_for_requests(2).await;
    assert_no_token(&error);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    // A port nobody listens on any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let client = GitHubClient::new(config(&url)).expect("client");
    let error = client.branch_head("oca/web", "16.0").await.expect_err("refused");
    assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
    assert_no_token(&error);
}

#[tokio::test]
async fn invalid_repo_names_never_reach_the_network() {
    let mock = MockGitHub::start().await;
    let error = client(&mock).branch_head("oca/../../admin", "16.0").await.expect_err("bad");
    assert!(matches!(error, ClientError::InvalidRepo { .. }), "{error:?}");
    assert!(mock.requests().is_empty());
}
