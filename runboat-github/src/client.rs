//! A small GitHub REST client: the three calls runboat needs (head of a
//! branch, head and base of a pull request, post a commit status).
//!
//! Built on hyper-util's client with hyper-rustls (ring provider, the
//! system's root certificates): the same HTTP and TLS crates kube already
//! brings into the build, so this client adds no new TLS stack and no
//! aws-lc-rs/cmake build.
//!
//! Every attempt has a timeout; 5xx answers, timeouts and connection errors
//! are retried with capped exponential backoff; rate limiting (429, or 403
//! with `Retry-After` or `X-RateLimit-Remaining: 0`) waits as GitHub asks,
//! unless that is longer than the configured cap. A 404 is
//! [`ClientError::NotFound`]. The token is only ever put in a header marked
//! sensitive; it is never in an error or a `Debug` output.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use runboat_core::forge::{CommitStatus, DeploymentUpdate};
use serde::Deserialize;

use crate::error::{ClientError, error_chain};

/// The public GitHub API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The context of every commit status runboat posts.
pub const STATUS_CONTEXT: &str = "runboat/build";
/// The REST API version this client is written against.
pub const API_VERSION: &str = "2022-11-28";
/// GitHub truncates nothing and rejects longer descriptions: keep under it.
const MAX_DESCRIPTION_CHARS: usize = 140;
/// Larger responses are refused (a pull request is a few tens of KB).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How much of an unexpected response body goes into an error.
const BODY_EXCERPT_CHARS: usize = 300;

/// A GitHub API token (personal access token or app installation token).
/// Its `Debug` never shows it, and it has no `Display`.
#[derive(Clone)]
pub struct GitHubToken(String);

impl GitHubToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token from configuration, where unset and empty both mean none.
    pub fn from_config(token: Option<&str>) -> Option<Self> {
        token.filter(|t| !t.is_empty()).map(Self::new)
    }
}

impl fmt::Debug for GitHubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GitHubToken(<redacted>)")
    }
}

/// When and how long to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts).
    pub max_retries: u32,
    /// Backoff before the first retry; doubled for each further retry.
    pub initial_backoff: Duration,
    /// Cap of the exponential backoff.
    pub max_backoff: Duration,
    /// The longest rate-limit wait honoured; a longer one fails the call at
    /// once with [`ClientError::RateLimited`] instead of holding the queue.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// What the client needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.github.com`, or `https://<host>/api/v3` for GitHub
    /// Enterprise, or a test server.
    pub api_url: String,
    pub token: Option<GitHubToken>,
    pub user_agent: String,
    /// Timeout of each attempt (connect, send, read the whole response).
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            token: None,
            user_agent: concat!("runboat-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
        }
    }
}

/// The head and base of a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestInfo {
    /// The branch the PR targets (`base.ref`).
    pub base_branch: String,
    /// The PR's head commit, lower-case hex.
    pub head_sha: String,
    /// `state == "open"`.
    pub open: bool,
}

/// A GitHub REST API client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct GitHubClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The API URL without a trailing slash.
    base: Arc<str>,
    authorization: Option<HeaderValue>,
    user_agent: HeaderValue,
    timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("base", &self.base)
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GitHubClient {
    /// Build a client. Fails on a bad API URL, a token or user agent that
    /// is not a valid header value, or (for an `https` URL) when the
    /// system has no trusted root certificates.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let base = config.api_url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| ClientError::Config { reason: format!("API URL {base:?}: {e}") })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError::Config {
                    reason: format!("API URL {base:?} must start with https:// or http://"),
                });
            }
        };
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(ClientError::Config {
                reason: format!("API URL {base:?} must be scheme://host[:port][/path]"),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = if https {
            HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .map_err(|source| ClientError::RootCertificates { source })?
        } else {
            // Plain HTTP (tests, a local proxy): no roots needed.
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Config { reason: format!("TLS: {e}") })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            HttpsConnectorBuilder::new().with_tls_config(tls)
        };
        let connector = builder.https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let authorization = match &config.token {
            Some(token) => {
                let mut value =
                    HeaderValue::try_from(format!("Bearer {}", token.0)).map_err(|_| {
                        ClientError::Config {
                            reason: "the token is not a valid header value".into(),
                        }
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let user_agent = HeaderValue::try_from(config.user_agent.as_str()).map_err(|_| {
            ClientError::Config { reason: format!("invalid user agent {:?}", config.user_agent) }
        })?;
        Ok(Self {
            http,
            base: base.into(),
            authorization,
            user_agent,
            timeout: config.timeout,
            retry: config.retry,
        })
    }

    /// The sha of the head commit of `branch` in `repo` (`owner/name`).
    pub async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Branch {
            commit: Commit,
        }
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        let (owner, name) = split_repo(repo)?;
        if branch.is_empty() {
            return Err(ClientError::NotFound { what: format!("empty branch name in {repo}") });
        }
        let path = format!("/repos/{owner}/{name}/branches/{}", encode_path(branch, true));
        let branch_json: Branch =
            self.get_json(&path, || format!("branch {branch} of {repo}")).await?;
        Ok(branch_json.commit.sha.to_ascii_lowercase())
    }

    /// The base branch and head commit of pull request `pr` of `repo`.
    pub async fn pull_request(&self, repo: &str, pr: u64) -> Result<PullRequestInfo, ClientError> {
        #[derive(Deserialize)]
        struct Pull {
            state: String,
            head: Head,
            base: Base,
        }
        #[derive(Deserialize)]
        struct Head {
            sha: String,
        }
        #[derive(Deserialize)]
        struct Base {
            #[serde(rename = "ref")]
            git_ref: String,
        }
        let (owner, name) = split_repo(repo)?;
        let path = format!("/repos/{owner}/{name}/pulls/{pr}");
        let pull: Pull = self.get_json(&path, || format!("pull request #{pr} of {repo}")).await?;
        Ok(PullRequestInfo {
            base_branch: pull.base.git_ref,
            head_sha: pull.head.sha.to_ascii_lowercase(),
            open: pull.state == "open",
        })
    }

    /// Post `status` on its commit, with context [`STATUS_CONTEXT`].
    pub async fn create_status(&self, status: &CommitStatus) -> Result<(), ClientError> {
        let (owner, name) = split_repo(&status.repo)?;
        let path =
            format!("/repos/{owner}/{name}/statuses/{}", encode_path(&status.git_commit, false));
        let mut body = serde_json::json!({
            "state": status.state.as_str(),
            "description": truncate_chars(&status.description, MAX_DESCRIPTION_CHARS),
            "context": STATUS_CONTEXT,
        });
        if !status.target_url.is_empty() {
            body["target_url"] = status.target_url.clone().into();
        }
        let (code, bytes) =
            self.request(Method::POST, &path, Some(Bytes::from(body.to_string()))).await?;
        if code == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what: format!("commit {} of {}", status.git_commit, status.repo),
            });
        }
        if !code.is_success() {
            return Err(status_error(Method::POST, &path, code, &bytes));
        }
        Ok(())
    }

    /// Create the GitHub deployment of `update`'s build on its commit (in
    /// its environment, transient for a pull request's); its id.
    pub async fn create_deployment(&self, update: &DeploymentUpdate) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        let (owner, name) = split_repo(&update.repo)?;
        let path = format!("/repos/{owner}/{name}/deployments");
        let body = serde_json::json!({
            "ref": update.git_commit,
            "environment": update.environment,
            "transient_environment": update.transient,
            "production_environment": false,
            // A preview of a commit: no merge of the base, no wait on the
            // commit's other statuses.
            "auto_merge": false,
            "required_contexts": [],
            "description": truncate_chars(&update.description, MAX_DESCRIPTION_CHARS),
            "payload": {"build": update.build_name},
        });
        let (code, bytes) =
            self.request(Method::POST, &path, Some(Bytes::from(body.to_string()))).await?;
        if code == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what: format!("commit {} of {}", update.git_commit, update.repo),
            });
        }
        if !code.is_success() {
            return Err(status_error(Method::POST, &path, code, &bytes));
        }
        let created: Created = serde_json::from_slice(&bytes).map_err(|source| {
            ClientError::Decode { method: Method::POST, path: path.clone(), source }
        })?;
        Ok(created.id)
    }

    /// The id of the GitHub deployment runboat made earlier for
    /// `update`'s build (same commit, environment and build), if any: what
    /// a restarted runboat finds its deployments by.
    pub async fn find_deployment(
        &self,
        update: &DeploymentUpdate,
    ) -> Result<Option<u64>, ClientError> {
        #[derive(Deserialize)]
        struct Listed {
            id: u64,
            #[serde(default)]
            payload: serde_json::Value,
        }
        let (owner, name) = split_repo(&update.repo)?;
        let path = format!(
            "/repos/{owner}/{name}/deployments?sha={}&environment={}&per_page=100",
            encode_path(&update.git_commit, false),
            encode_path(&update.environment, false)
        );
        let listed: Vec<Listed> = match self.get_json(&path, || "deployments".into()).await {
            Ok(listed) => listed,
            Err(ClientError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(listed
            .into_iter()
            .find(|d| d.payload.get("build").and_then(|b| b.as_str()) == Some(&update.build_name))
            .map(|d| d.id))
    }

    /// Post `update`'s state on deployment `id`.
    pub async fn create_deployment_status(
        &self,
        id: u64,
        update: &DeploymentUpdate,
    ) -> Result<(), ClientError> {
        let (owner, name) = split_repo(&update.repo)?;
        let path = format!("/repos/{owner}/{name}/deployments/{id}/statuses");
        let mut body = serde_json::json!({
            "state": update.state.as_str(),
            "description": truncate_chars(&update.description, MAX_DESCRIPTION_CHARS),
            // runboat says itself when a deployment goes inactive.
            "auto_inactive": false,
        });
        if !update.environment_url.is_empty() {
            body["environment_url"] = update.environment_url.clone().into();
        }
        if !update.log_url.is_empty() {
            body["log_url"] = update.log_url.clone().into();
        }
        let (code, bytes) =
            self.request(Method::POST, &path, Some(Bytes::from(body.to_string()))).await?;
        if code == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what: format!("deployment {id} of {}", update.repo),
            });
        }
        if !code.is_success() {
            return Err(status_error(Method::POST, &path, code, &bytes));
        }
        Ok(())
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        what: impl FnOnce() -> String,
    ) -> Result<T, ClientError> {
        let (code, bytes) = self.request(Method::GET, path, None).await?;
        if code == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound { what: what() });
        }
        if !code.is_success() {
            return Err(status_error(Method::GET, path, code, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            method: Method::GET,
            path: path.to_owned(),
            source,
        })
    }

    /// Send with retries; returns the final status and body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let uri: Uri = format!("{}{path}", self.base).parse().map_err(|e| ClientError::Config {
            reason: format!("cannot build a URL for {path:?}: {e}"),
        })?;
        let mut attempt = 0;
        loop {
            let outcome = match tokio::time::timeout(
                self.timeout,
                self.attempt(&method, &uri, body.clone()),
            )
            .await
            {
                Ok(Ok((status, headers, bytes))) => {
                    match decide(&self.retry, status, &headers, attempt, unix_now()) {
                        Decision::Done => return Ok((status, bytes)),
                        Decision::Retry(wait) => {
                            tracing::debug!(%method, path, %status, attempt, ?wait, "retrying GitHub call");
                            wait
                        }
                        Decision::RateLimited(wait) => {
                            return Err(ClientError::RateLimited {
                                method,
                                path: path.to_owned(),
                                wait,
                            });
                        }
                    }
                }
                Ok(Err(error)) => {
                    let error = match error {
                        AttemptError::Transport(source) => ClientError::Transport {
                            method: method.clone(),
                            path: path.to_owned(),
                            source,
                        },
                        AttemptError::Body(source) => ClientError::Body {
                            method: method.clone(),
                            path: path.to_owned(),
                            source,
                        },
                    };
                    if attempt >= self.retry.max_retries {
                        return Err(error);
                    }
                    tracing::debug!(error = %error_chain(&error), attempt, "retrying GitHub call");
                    backoff(&self.retry, attempt)
                }
                Err(_elapsed) => {
                    let error = ClientError::Timeout {
                        method: method.clone(),
                        path: path.to_owned(),
                        after: self.timeout,
                    };
                    if attempt >= self.retry.max_retries {
                        return Err(error);
                    }
                    tracing::debug!(%error, attempt, "retrying GitHub call");
                    backoff(&self.retry, attempt)
                }
            };
            tokio::time::sleep(outcome).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        uri: &Uri,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), AttemptError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(USER_AGENT, self.user_agent.clone());
        if let Some(authorization) = &self.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = match builder.body(Full::new(body.unwrap_or_default())) {
            Ok(request) => request,
            // Every part above was validated when the client was built.
            Err(_) => unreachable!("request parts are pre-validated"),
        };
        let response = self.http.request(request).await.map_err(AttemptError::Transport)?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(AttemptError::Body)?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

enum AttemptError {
    Transport(hyper_util::client::legacy::Error),
    Body(Box<dyn std::error::Error + Send + Sync>),
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Hand the response to the caller.
    Done,
    /// Sleep this long, then try again.
    Retry(Duration),
    /// Rate limited and we will not wait (over the cap, or out of retries).
    RateLimited(Option<Duration>),
}

/// The retry policy, pure: `attempt` counts from 0, `now` is Unix seconds
/// (compared with `X-RateLimit-Reset`).
pub(crate) fn decide(
    policy: &RetryPolicy,
    status: StatusCode,
    headers: &HeaderMap,
    attempt: u32,
    now: u64,
) -> Decision {
    let retry_after = header_u64(headers, "retry-after").map(Duration::from_secs);
    let remaining_zero = header_u64(headers, "x-ratelimit-remaining") == Some(0);
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (retry_after.is_some() || remaining_zero));
    if rate_limited {
        let wait = retry_after.or_else(|| {
            if remaining_zero {
                // Wait until the reset, at least a second (clock skew).
                header_u64(headers, "x-ratelimit-reset")
                    .map(|reset| Duration::from_secs(reset.saturating_sub(now).max(1)))
            } else {
                None
            }
        });
        let wait = wait.unwrap_or_else(|| backoff(policy, attempt));
        if wait > policy.max_wait {
            return Decision::RateLimited(Some(wait));
        }
        if attempt >= policy.max_retries {
            return Decision::RateLimited(None);
        }
        return Decision::Retry(wait);
    }
    if status.is_server_error() && attempt < policy.max_retries {
        let wait = retry_after.map_or_else(|| backoff(policy, attempt), |w| w.min(policy.max_wait));
        return Decision::Retry(wait);
    }
    Decision::Done
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt);
    policy.initial_backoff.saturating_mul(factor).min(policy.max_backoff)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn status_error(method: Method, path: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(body);
    ClientError::Status {
        method,
        path: path.to_owned(),
        status,
        body: truncate_chars(text.trim(), BODY_EXCERPT_CHARS).to_owned(),
    }
}

/// `owner/name` checked with core's rules (so each part is safe as a path
/// segment) and lower-cased (GitHub names are case-insensitive).
fn split_repo(repo: &str) -> Result<(String, String), ClientError> {
    runboat_core::commit::normalize_repo(repo)
        .ok()
        .and_then(|repo| repo.split_once('/').map(|(o, n)| (o.to_owned(), n.to_owned())))
        .ok_or_else(|| ClientError::InvalidRepo { repo: truncate_chars(repo, 200).to_owned() })
}

/// Percent-encode everything but unreserved characters (and `/` when
/// `keep_slash`, as GitHub takes branch names with slashes as they are).
fn encode_path(segment: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    #[test]
    fn success_and_client_errors_are_done() {
        for status in [200, 201, 404, 422, 401] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(decide(&policy(), status, &HeaderMap::new(), 0, 0), Decision::Done);
        }
        // A 403 without rate-limit headers is a permission problem.
        let forbidden = headers(&[("x-ratelimit-remaining", "4999")]);
        assert_eq!(decide(&policy(), StatusCode::FORBIDDEN, &forbidden, 0, 0), Decision::Done);
    }

    #[test]
    fn server_errors_back_off_exponentially_then_give_up() {
        let h = HeaderMap::new();
        let s = StatusCode::BAD_GATEWAY;
        assert_eq!(decide(&policy(), s, &h, 0, 0), Decision::Retry(Duration::from_millis(100)));
        assert_eq!(decide(&policy(), s, &h, 1, 0), Decision::Retry(Duration::from_millis(200)));
        assert_eq!(decide(&policy(), s, &h, 2, 0), Decision::Retry(Duration::from_millis(400)));
        assert_eq!(decide(&policy(), s, &h, 3, 0), Decision::Done);
        let long = RetryPolicy { max_retries: 50, ..policy() };
        assert_eq!(decide(&long, s, &h, 40, 0), Decision::Retry(Duration::from_secs(1)));
    }

    #[test]
    fn retry_after_is_honoured() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            decide(&policy(), StatusCode::TOO_MANY_REQUESTS, &h, 0, 0),
            Decision::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            decide(&policy(), StatusCode::FORBIDDEN, &h, 0, 0),
            Decision::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            decide(&policy(), StatusCode::SERVICE_UNAVAILABLE, &h, 0, 0),
            Decision::Retry(Duration::from_secs(7))
        );
    }

    #[test]
    fn primary_rate_limit_waits_until_reset() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1000")]);
        assert_eq!(
            decide(&policy(), StatusCode::FORBIDDEN, &h, 0, 990),
            Decision::Retry(Duration::from_secs(10))
        );
        // A reset already past still waits a second.
        assert_eq!(
            decide(&policy(), StatusCode::FORBIDDEN, &h, 0, 2000),
            Decision::Retry(Duration::from_secs(1))
        );
    }

    #[test]
    fn waits_over_the_cap_fail_at_once() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "5000")]);
        assert_eq!(
            decide(&policy(), StatusCode::FORBIDDEN, &h, 0, 1000),
            Decision::RateLimited(Some(Duration::from_secs(4000)))
        );
        let h = headers(&[("retry-after", "3600")]);
        assert_eq!(
            decide(&policy(), StatusCode::TOO_MANY_REQUESTS, &h, 0, 0),
            Decision::RateLimited(Some(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn rate_limit_out_of_retries_gives_up() {
        let h = headers(&[("retry-after", "1")]);
        assert_eq!(
            decide(&policy(), StatusCode::TOO_MANY_REQUESTS, &h, 3, 0),
            Decision::RateLimited(None)
        );
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_path("feature/a b#?", true), "feature/a%20b%23%3F");
        assert_eq!(encode_path("a/b", false), "a%2Fb");
        assert_eq!(encode_path("16.0-mig~x_y", true), "16.0-mig~x_y");
    }

    #[test]
    fn repos_that_could_escape_their_segment_are_refused() {
        for repo in ["oca", "oca/..", "../x", "oca/web/x", "oca/we?b", "/web", "oca/"] {
            assert!(matches!(split_repo(repo), Err(ClientError::InvalidRepo { .. })), "{repo}");
        }
        assert_eq!(
            split_repo("OCA/server-tools").expect("valid"),
            ("oca".to_owned(), "server-tools".to_owned())
        );
    }

    #[test]
    fn descriptions_are_truncated_on_chars() {
        let long = "é".repeat(200);
        assert_eq!(truncate_chars(&long, 140).chars().count(), 140);
        assert_eq!(truncate_chars("short", 140), "short");
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let config = ClientConfig {
            api_url: "http://127.0.0.1:1".into(),
            token: Some(GitHubToken::new("ghp_SECRET")),
            ..ClientConfig::default()
        };
        assert!(!format!("{config:?}").contains("ghp_SECRET"));
        let client = GitHubClient::new(config).expect("client");
        assert!(!format!("{client:?}").contains("ghp_SECRET"));
    }

    #[test]
    fn bad_api_urls_are_config_errors() {
        for url in ["", "ftp://x", "api.github.com", "http://", "https://x/?a=b"] {
            let config = ClientConfig { api_url: url.into(), ..ClientConfig::default() };
            assert!(matches!(GitHubClient::new(config), Err(ClientError::Config { .. })), "{url}");
        }
    }

    proptest! {
        #[test]
        fn waits_never_exceed_the_caps(
            status in 100u16..600,
            retry_after in proptest::option::of(0u64..100_000),
            remaining in proptest::option::of(0u64..3),
            reset in proptest::option::of(0u64..100_000),
            now in 0u64..100_000,
            attempt in 0u32..10,
        ) {
            let status = StatusCode::from_u16(status).expect("valid range");
            let mut h = HeaderMap::new();
            if let Some(v) = retry_after { h.insert("retry-after", v.into()); }
            if let Some(v) = remaining { h.insert("x-ratelimit-remaining", v.into()); }
            if let Some(v) = reset { h.insert("x-ratelimit-reset", v.into()); }
            match decide(&policy(), status, &h, attempt, now) {
                Decision::Retry(wait) => {
                    prop_assert!(wait <= policy().max_wait);
                    prop_assert!(attempt < policy().max_retries);
                }
                Decision::RateLimited(Some(wait)) => prop_assert!(wait > policy().max_wait),
                Decision::RateLimited(None) => prop_assert!(attempt >= policy().max_retries),
                Decision::Done => prop_assert!(
                    !status.is_server_error() || attempt >= policy().max_retries
                ),
            }
        }
    }
}
