//! The background status forge against the mock GitHub: coalescing,
//! bounded queue, failures logged and contained.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use runboat_core::forge::{CommitState, CommitStatus, Forge};
use runboat_github::{GitHubClient, GitHubForge, RetryPolicy};

use crate::client::{TOKEN, config, status};
use crate::mock::{MockGitHub, MockResponse};

fn status_path(sha: &str) -> String {
    format!("/repos/oca/web/statuses/{sha}")
}

fn commit(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

fn forge(mock: &MockGitHub) -> GitHubForge {
    GitHubForge::new(GitHubClient::new(config(&mock.url)).expect("client"))
}

fn described(description: &str) -> CommitStatus {
    status(CommitState::Pending, description)
}

#[tokio::test]
async fn five_quick_statuses_send_the_last_in_at_most_two_requests() {
    let mock = MockGitHub::start().await;
    let path = status_path(&described("x").git_commit);
    mock.on(Method::POST, &path, vec![MockResponse::new(201, "{}")]).await;
    let forge = forge(&mock);
    for i in 1..=5 {
        forge.post_status(described(&format!("step {i}")));
    }
    forge.flush().await;
    let requests = mock.requests();
    assert!((1..=2).contains(&requests.len()), "{} requests", requests.len());
    assert_eq!(requests.last().expect("one").body["description"], "step 5");
}

#[tokio::test]
async fn statuses_queued_while_one_is_in_flight_coalesce_into_one_request() {
    let mock = MockGitHub::start().await;
    let path = status_path(&described("x").git_commit);
    mock.on(Method::POST, &path, vec![MockResponse::new(201, "{}")]).await;
    let forge = forge(&mock);
    forge.post_status(described("step 1"));
    // The first one is on the wire; this current-thread test then posts
    // the other four without yielding, so the sender cannot interleave.
    mock.wait_for_requests(1).await;
    for i in 2..=5 {
        forge.post_status(described(&format!("step {i}")));
    }
    assert_eq!(forge.queued(), 1);
    forge.flush().await;
    let descriptions: Vec<_> =
        mock.requests().iter().map(|r| r.body["description"].clone()).collect();
    assert_eq!(descriptions, ["step 1", "step 5"]);
}

#[tokio::test]
async fn different_commits_are_all_sent_in_order() {
    let mock = MockGitHub::start().await;
    let forge = forge(&mock);
    for n in 1..=3 {
        mock.on(Method::POST, &status_path(&commit(n)), vec![MockResponse::new(201, "{}")]).await;
        forge.post_status(CommitStatus { git_commit: commit(n), ..described("x") });
    }
    forge.flush().await;
    let paths: Vec<_> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, [status_path(&commit(1)), status_path(&commit(2)), status_path(&commit(3))]);
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest() {
    let mock = MockGitHub::start().await;
    let client = GitHubClient::new(config(&mock.url)).expect("client");
    let forge = GitHubForge::with_capacity(client, 2);
    for n in 1..=3 {
        mock.on(Method::POST, &status_path(&commit(n)), vec![MockResponse::new(201, "{}")]).await;
        forge.post_status(CommitStatus { git_commit: commit(n), ..described("x") });
    }
    forge.flush().await;
    let paths: Vec<_> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, [status_path(&commit(2)), status_path(&commit(3))]);
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_logged_with_the_response_and_do_not_stop_the_forge() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    // Current-thread runtime: the sender task runs on this thread too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockGitHub::start().await;
    mock.on(
        Method::POST,
        &status_path(&commit(1)),
        vec![MockResponse::new(422, r#"{"message":"Validation Failed: target_url"}"#)],
    )
    .await;
    mock.on(Method::POST, &status_path(&commit(2)), vec![MockResponse::new(201, "{}")]).await;
    let client = GitHubClient::new(runboat_github::ClientConfig {
        retry: RetryPolicy { max_retries: 0, ..RetryPolicy::default() },
        ..config(&mock.url)
    })
    .expect("client");
    let forge = GitHubForge::new(client);
    forge.post_status(CommitStatus { git_commit: commit(1), ..described("x") });
    forge.post_status(CommitStatus { git_commit: commit(2), ..described("y") });
    forge.flush().await;

    assert_eq!(mock.requests().len(), 2, "the failure did not stop the next status");
    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8 logs");
    assert!(text.contains("could not post commit status"), "{text}");
    assert!(text.contains("422"), "{text}");
    assert!(text.contains("Validation Failed: target_url"), "{text}");
    assert!(text.contains(&commit(1)), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn dropping_the_forge_still_sends_what_was_queued() {
    let mock = MockGitHub::start().await;
    mock.on(Method::POST, &status_path(&commit(1)), vec![MockResponse::new(201, "{}")]).await;
    let forge = forge(&mock);
    forge.post_status(CommitStatus { git_commit: commit(1), ..described("last words") });
    drop(forge);
    mock.wait_for_requests(1).await;
    assert_eq!(mock.requests()[0].body["description"], "last words");
}

#[tokio::test]
async fn post_status_returns_at_once_even_when_github_hangs() {
    let mock = MockGitHub::start().await;
    mock.on(
        Method::POST,
        &status_path(&commit(1)),
        vec![MockResponse::new(201, "{}").delay(Duration::from_secs(30))],
    )
    .await;
    let forge = forge(&mock);
    forge.post_status(CommitStatus { git_commit: commit(1), ..described("a") });
    mock.wait_for_requests(1).await;
    // The sender is stuck on the wire; posting more never blocks.
    for i in 0..100 {
        forge.post_status(CommitStatus { git_commit: commit(2), ..described(&format!("{i}")) });
    }
    assert_eq!(forge.queued(), 1);
}
