//! A fake GitHub for the trigger endpoints. (The controller is the real
//! one, on core's simulated cluster: see `support::Harness`.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use runboat_github::{ClientError, PullRequestInfo};
use runboat_server::GitHubLookup;

/// GitHub answers by (repo, branch) and (repo, pr); anything else is
/// not found; `down` makes every call fail like an outage, `hang` never
/// answer.
#[derive(Default)]
pub(crate) struct FakeGitHub {
    pub(crate) branches: Mutex<HashMap<(String, String), String>>,
    pub(crate) prs: Mutex<HashMap<(String, u64), PullRequestInfo>>,
    pub(crate) down: AtomicBool,
    /// Every call waits forever (GitHub accepts the connection and never
    /// answers).
    pub(crate) hang: AtomicBool,
}

fn outage(path: String) -> ClientError {
    ClientError::Status {
        method: http::Method::GET,
        path,
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        body: "unicorn".into(),
    }
}

#[async_trait]
impl GitHubLookup for FakeGitHub {
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, ClientError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(outage(format!("/repos/{repo}/branches/{branch}")));
        }
        self.branches
            .lock()
            .expect("lock")
            .get(&(repo.to_owned(), branch.to_owned()))
            .cloned()
            .ok_or_else(|| ClientError::NotFound { what: format!("{repo} branch {branch}") })
    }

    async fn pull_request(&self, repo: &str, pr: u64) -> Result<PullRequestInfo, ClientError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(outage(format!("/repos/{repo}/pulls/{pr}")));
        }
        self.prs
            .lock()
            .expect("lock")
            .get(&(repo.to_owned(), pr))
            .cloned()
            .ok_or_else(|| ClientError::NotFound { what: format!("{repo} pull request {pr}") })
    }
}
