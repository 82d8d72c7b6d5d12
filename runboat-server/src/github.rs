//! GitHub lookups the trigger endpoints need, behind a trait so the router
//! can be tested without GitHub.

use async_trait::async_trait;
use runboat_github::{ClientError, GitHubClient, PullRequestInfo};

/// Head commits of branches and pull requests.
#[async_trait]
pub trait GitHubLookup: Send + Sync + 'static {
    /// The head sha of `branch` of `repo`.
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, ClientError>;
    /// Base branch and head sha of pull request `pr` of `repo`.
    async fn pull_request(&self, repo: &str, pr: u64) -> Result<PullRequestInfo, ClientError>;
}

#[async_trait]
impl GitHubLookup for GitHubClient {
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, ClientError> {
        GitHubClient::branch_head(self, repo, branch).await
    }

    async fn pull_request(&self, repo: &str, pr: u64) -> Result<PullRequestInfo, ClientError> {
        GitHubClient::pull_request(self, repo, pr).await
    }
}
