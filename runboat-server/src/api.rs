//! The REST API under `/api/v1` (SPEC's HTTP interface).
//!
//! Answers:
//! - lists and builds are SPEC's JSON; actions answer 200 with
//!   `{"detail": "..."}` saying what was asked of the controller;
//! - an action that does not apply to the build's current state (start of
//!   an initializing build, stop of a stopped one, …) answers **409
//!   Conflict** with the reason: the original silently did nothing, which
//!   left users clicking a button that never worked;
//! - `DELETE /builds` without any filter answers 400: undeploying every
//!   build of the namespace must not be one forgotten parameter away;
//! - errors are `{"detail": "..."}` with the status of [`ApiError`].

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use runboat_api::{Build, BuildAction, Detail, Filters, Repo, StatusCounts, Undeployed};
use runboat_core::{BuildStatus, CommitInfo, SearchFilters};
use runboat_github::ClientError;
use serde::Deserialize;

use crate::AppState;
use crate::error::{Accepted, ApiError, Subject, chain, command};
use crate::limits::{PeerAddr, client_ip, rate_key};

/// The build filters of the query string, as received.
#[derive(Debug, Default, Deserialize)]
pub struct FilterParams {
    pub repo: Option<String>,
    pub target_branch: Option<String>,
    pub branch: Option<String>,
    pub pr: Option<String>,
    pub status: Option<String>,
    /// One build (the event stream of the build page uses it).
    pub build_name: Option<String>,
}

/// The filters of `DELETE /builds`, as received: unlike the other
/// endpoints (which ignore unknown parameters, as the original does), an
/// unknown one is refused, so that a misspelt filter
/// (`?status=failed&repoo=oca/web`) cannot widen an undeploy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndeployParams {
    pub repo: Option<String>,
    pub target_branch: Option<String>,
    pub branch: Option<String>,
    pub pr: Option<String>,
    pub status: Option<String>,
    pub build_name: Option<String>,
}

impl From<UndeployParams> for FilterParams {
    fn from(p: UndeployParams) -> Self {
        FilterParams {
            repo: p.repo,
            target_branch: p.target_branch,
            branch: p.branch,
            pr: p.pr,
            status: p.status,
            build_name: p.build_name,
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Parses a `pr` parameter: a positive integer up to
/// [`runboat_api::MAX_PR`], exactly (as the OpenAPI document says).
pub fn parse_pr_param(value: &str) -> Result<u64, ApiError> {
    match value.parse::<u64>() {
        Ok(pr) if (1..=runboat_api::MAX_PR).contains(&pr) => Ok(pr),
        _ => Err(ApiError::BadRequest(format!(
            "invalid pr {value:?}: expected a pull request number, a positive integer up to {}",
            runboat_api::MAX_PR
        ))),
    }
}

/// Parses a `status` parameter, exactly.
pub fn parse_status_param(value: &str) -> Result<BuildStatus, ApiError> {
    value.parse::<BuildStatus>().map_err(|_| {
        let known: Vec<&str> = BuildStatus::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::BadRequest(format!(
            "unknown status {value:?} (expected one of: {})",
            known.join(", ")
        ))
    })
}

/// An empty value is no value (the original's clients send `pr=`).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl FilterParams {
    /// The validated filters (empty values mean "any").
    pub fn into_filters(self) -> Result<SearchFilters, ApiError> {
        let pr = given(self.pr).map(|v| parse_pr_param(&v)).transpose()?;
        let status = given(self.status).map(|v| parse_status_param(&v)).transpose()?;
        Ok(SearchFilters {
            repo: non_empty(self.repo).map(|r| r.to_ascii_lowercase()),
            target_branch: non_empty(self.target_branch),
            branch: non_empty(self.branch),
            pr,
            name: non_empty(self.build_name),
            status,
        })
    }

    /// The filters of `DELETE /builds`: as [`FilterParams::into_filters`],
    /// but a parameter given must have a value (the OpenAPI document says
    /// so; an empty one is a mistake when undeploying). No filter at all
    /// means every build, as the original does (the route needs admin
    /// credentials).
    pub fn into_undeploy_filters(self) -> Result<SearchFilters, ApiError> {
        let params = [
            ("repo", &self.repo),
            ("target_branch", &self.target_branch),
            ("branch", &self.branch),
            ("pr", &self.pr),
            ("status", &self.status),
            ("build_name", &self.build_name),
        ];
        if let Some((name, _)) =
            params.iter().find(|(_, v)| v.as_deref().is_some_and(|v| v.trim().is_empty()))
        {
            return Err(ApiError::BadRequest(format!(
                "empty {name}: give it a value or leave it out"
            )));
        }
        self.into_filters()
    }
}

/// Query extraction with our 400 answer instead of axum's plain text.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// 404 for any unknown path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("not found".to_owned())
}

#[utoipa::path(get, path = "/api/v1/status", tag = "builds",
    responses((status = 200, description = "counters and limits; with leader election, which replica leads", body = StatusCounts),
        (status = 503, description = "not ready: waiting for the first cluster listing (see `Retry-After`)", body = Detail)))]
/// `GET /status`: the counters of the original (from the index, in O(1)).
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<StatusCounts>, ApiError> {
    ready(&state)?;
    let limits = state.settings().limits();
    let c = state.read(|index| index.status_counts(&limits));
    let n = |v: usize| v as u64;
    Ok(Json(StatusCounts {
        deployed: n(c.deployed),
        max_deployed: n(c.max_deployed),
        failed: n(c.failed),
        stopped: n(c.stopped),
        started: n(c.started),
        max_started: n(c.max_started),
        to_initialize: n(c.to_initialize),
        initializing: n(c.initializing),
        max_initializing: n(c.max_initializing),
        undeploying: n(c.undeploying),
        leadership: state.leadership().map(|l| runboat_api::LeaderStatus {
            identity: l.identity().to_owned(),
            leader: l.is_leader(),
            holder: l.holder(),
        }),
        pinned: n(c.pinned),
        max_pinned: n(c.max_pinned),
    }))
}

#[utoipa::path(get, path = "/api/v1/repos", tag = "builds",
    responses((status = 200, description = "the repositories having builds", body = Vec<Repo>),
        (status = 503, description = "not ready: waiting for the first cluster listing (see `Retry-After`)", body = Detail)))]
/// `GET /repos`: the repos having builds, `{name, link}` as the original.
pub(crate) async fn repos(State(state): State<AppState>) -> Result<Json<Vec<Repo>>, ApiError> {
    ready(&state)?;
    Ok(Json(state.read(|index| {
        index
            .repos()
            .into_iter()
            .map(|name| Repo { link: format!("https://github.com/{name}"), name: name.to_owned() })
            .collect()
    })))
}

/// 503 until the controller has its first full cluster listing: an empty
/// index then means "not known yet", not "no builds".
pub(crate) fn ready(state: &AppState) -> Result<(), ApiError> {
    if state.controller().is_ready() { Ok(()) } else { Err(ApiError::not_ready()) }
}

#[utoipa::path(get, path = "/api/v1/builds", tag = "builds", params(Filters),
    description = "The builds passing the filters, newest first; fields that are null are omitted.",
    responses(
        (status = 200, description = "the builds", body = Vec<Build>),
        (status = 400, description = "a parameter is invalid", body = Detail),
        (status = 503, description = "not ready: waiting for the first cluster listing (see `Retry-After`)", body = Detail),
    ))]
/// `GET /builds`: the builds passing the filters, newest first (the
/// original's order).
pub(crate) async fn list_builds(
    State(state): State<AppState>,
    q: Result<Query<FilterParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    ready(&state)?;
    let filters = query(q)?.into_filters()?;
    let body = state.read(|index| state.builds_answer(index, &filters));
    Ok(json_response(body))
}

/// A 200 answer with a body that is JSON already.
pub(crate) fn json_response(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

#[utoipa::path(delete, path = "/api/v1/builds", tag = "admin", params(runboat_api::UndeployFilters),
    description = "Undeploys every build passing the filters; without any filter, every build, \
        as the original runboat does (admin credentials are required). An unknown parameter is \
        a 400, so that a misspelt filter cannot widen an undeploy to everything.",
    security(("basic" = [])),
    responses(
        (status = 200, description = "undeploy requested", body = Undeployed),
        (status = 400, description = "an invalid or unknown filter", body = Detail),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 503, description = "the controller is stopping", body = Detail),
    ))]
/// `DELETE /builds` (admin): undeploy every build passing the filters (all
/// of them without a filter, as the original).
pub(crate) async fn undeploy_builds(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<UndeployParams>, QueryRejection>,
) -> Result<Json<Undeployed>, ApiError> {
    state.admin().check(&headers)?;
    let filters = FilterParams::from(query(q)?).into_undeploy_filters()?;
    let count = state.controller().undeploy_matching(filters).await?;
    Ok(Json(Undeployed { count: count as u64, detail: format!("undeploying {count} build(s)") }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TriggerBranch {
    repo: Option<String>,
    branch: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TriggerPr {
    repo: Option<String>,
    pr: Option<String>,
}

fn required(value: Option<String>, name: &str) -> Result<String, ApiError> {
    non_empty(value).ok_or_else(|| ApiError::BadRequest(format!("missing parameter {name}")))
}

fn lookup_error(e: ClientError) -> ApiError {
    match e {
        ClientError::NotFound { what } => {
            ApiError::NotFound(format!("not found on GitHub: {what}"))
        }
        ClientError::InvalidRepo { repo } => {
            ApiError::BadRequest(format!("invalid repo {repo:?}: expected owner/name"))
        }
        other => ApiError::BadGateway(chain(&other)),
    }
}

/// Deploys `commit`; the controller checks that the settings support it.
async fn deploy(state: &AppState, commit: CommitInfo) -> Result<Json<BuildAction>, ApiError> {
    let name = commit.build_name();
    let result = state.controller().deploy_commit(commit.clone()).await;
    let detail = match command(result, Subject::Commit(&commit))? {
        Accepted::Done => "deploying".to_owned(),
        Accepted::Ignored(reason) => reason.to_string(),
    };
    Ok(Json(BuildAction { detail, name, ignored: false }))
}

#[utoipa::path(post, path = "/api/v1/builds/trigger/branch", tag = "admin",
    params(runboat_api::TriggerBranch),
    description = "Deploys the head commit of a branch, looked up on GitHub. The branch must \
        be a valid git ref name (no whitespace or control characters, none of ~ ^ : ? * [ \\, \
        no '..', '@{' or '//', not starting or ending with '/', not ending with '.' or '.lock'): \
        otherwise the answer is 400, naming the rule.",
    security(("basic" = [])),
    responses(
        (status = 200, description = "deploying, or already deployed", body = BuildAction),
        (status = 400, description = "a parameter is invalid, or no settings rule supports the \
            repo/branch", body = Detail),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such repo or branch on GitHub", body = Detail),
        (status = 502, description = "GitHub answered an error", body = Detail),
        (status = 503, description = "this server has no GitHub client, or the controller is \
            stopping", body = Detail),
    ))]
/// `POST /builds/trigger/branch?repo=&branch=` (admin): deploy the head of
/// a branch, looked up on GitHub.
pub(crate) async fn trigger_branch(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<TriggerBranch>, QueryRejection>,
) -> Result<Json<BuildAction>, ApiError> {
    state.admin().check(&headers)?;
    let q = query(q)?;
    let repo = required(q.repo, "repo")?.to_ascii_lowercase();
    let branch = required(q.branch, "branch")?;
    let github = state.github().ok_or(ApiError::NoGitHubClient)?;
    let sha = github.branch_head(&repo, &branch).await.map_err(lookup_error)?;
    let commit = CommitInfo::new(&repo, &branch, None, &sha)
        .map_err(|e| ApiError::BadGateway(format!("unexpected answer from GitHub: {e}")))?;
    deploy(&state, commit).await
}

#[utoipa::path(post, path = "/api/v1/builds/trigger/pr", tag = "admin",
    params(runboat_api::TriggerPr),
    description = "Deploys the head commit of a pull request, looked up on GitHub.",
    security(("basic" = [])),
    responses(
        (status = 200, description = "deploying, or already deployed", body = BuildAction),
        (status = 400, description = "a parameter is invalid, or no settings rule supports the \
            repo and the pull request's base branch", body = Detail),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such repo or pull request on GitHub", body = Detail),
        (status = 502, description = "GitHub answered an error", body = Detail),
        (status = 503, description = "this server has no GitHub client, or the controller is \
            stopping", body = Detail),
    ))]
/// `POST /builds/trigger/pr?repo=&pr=` (admin): deploy the head of a pull
/// request, looked up on GitHub.
pub(crate) async fn trigger_pr(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<TriggerPr>, QueryRejection>,
) -> Result<Json<BuildAction>, ApiError> {
    state.admin().check(&headers)?;
    let q = query(q)?;
    let repo = required(q.repo, "repo")?.to_ascii_lowercase();
    let pr = given(q.pr).ok_or_else(|| ApiError::BadRequest("missing parameter pr".to_owned()))?;
    let pr = parse_pr_param(&pr)?;
    let github = state.github().ok_or(ApiError::NoGitHubClient)?;
    let info = github.pull_request(&repo, pr).await.map_err(lookup_error)?;
    let commit = CommitInfo::new(&repo, &info.base_branch, Some(pr), &info.head_sha)
        .map_err(|e| ApiError::BadGateway(format!("unexpected answer from GitHub: {e}")))?;
    deploy(&state, commit).await
}

#[utoipa::path(get, path = "/api/v1/builds/{name}", tag = "builds",
    params(("name" = String, Path, description = "build name")),
    description = "One build; fields that are null are kept as null.",
    responses(
        (status = 200, description = "the build", body = Build),
        (status = 404, description = "no such build", body = Detail),
        (status = 503, description = "not ready: waiting for the first cluster listing (see `Retry-After`)", body = Detail),
    ))]
/// `GET /builds/{name}`.
pub(crate) async fn get_build(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ready(&state)?;
    let body = state.read(|index| {
        let rev = index.revision(&name)?;
        Some(state.build_json_cached(index, index.get(&name)?, rev))
    });
    Ok(json_response(body.ok_or_else(|| ApiError::unknown_build(&name))?))
}

pub(crate) fn wants_plain_text(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        let accept = accept.to_ascii_lowercase();
        accept.contains("text/plain") && !accept.contains("text/html")
    })
}

/// Strips ANSI escape sequences (for `text/plain` answers).
pub fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // CSI: parameters and intermediates, then one final byte.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// A log as an HTML page with the ANSI colours rendered, or plain text
/// when the client asks for it with `Accept: text/plain` (without the ANSI
/// escape sequences, unless `keep_ansi`: a terminal client shows them as
/// colours).
pub fn render_log(title: &str, log: &str, plain: bool, keep_ansi: bool) -> Response {
    if plain {
        let text = if keep_ansi { log.to_owned() } else { strip_ansi(log) };
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let body = match ansi_to_html::convert(log) {
        Ok(html) => html,
        // Unparsable escapes: show the text, escaped, without colours.
        Err(_) => html_escape(&strip_ansi(log)),
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{background:#1e1e1e;color:#ddd;margin:0}}\
         pre{{font:13px/1.4 monospace;padding:1em;white-space:pre-wrap;word-break:break-all}}</style>\
         </head><body><pre>{}</pre></body></html>",
        html_escape(title),
        body
    ))
    .into_response()
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn action_answer(
    name: &str,
    verb: &str,
    result: runboat_core::CommandResult,
) -> Result<Response, ApiError> {
    // An action that does not apply to the build's state is ignored with a
    // 200, as the original answers: scripts using `curl -f` and its web UI
    // rely on it. `ignored` says so, and `detail` why.
    let answer = match command(result, Subject::Build(name))? {
        Accepted::Done => BuildAction {
            detail: format!("{verb} requested"),
            name: name.to_owned(),
            ignored: false,
        },
        Accepted::Ignored(reason) => BuildAction {
            detail: format!("{verb} ignored: {reason}"),
            name: name.to_owned(),
            ignored: true,
        },
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}

#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop,
    Reset,
}

async fn act(
    state: AppState,
    name: String,
    headers: HeaderMap,
    peer: Option<PeerAddr>,
    action: Action,
) -> Result<Response, ApiError> {
    if state.options().admin_for_actions {
        state.admin().check(&headers)?;
    } else if state.admin().check(&headers).is_err() {
        // Anonymous actions are rate-limited per client, then per build
        // (an admin is not).
        let client = client_ip(&state.options().limits, &headers, peer.as_ref());
        let key = client.map_or_else(|| "local".to_owned(), |ip| rate_key(ip).to_string());
        let too_many = |retry_after: u64, whom: &str| ApiError::TooManyRequests {
            detail: format!("too many start/stop/reset requests {whom}: retry later"),
            retry_after,
        };
        state.actions_by_client().hit(&key).map_err(|r| too_many(r, "from this client"))?;
        state.actions_by_build().hit(&name).map_err(|r| too_many(r, "for this build"))?;
    }
    let controller = state.controller();
    let (verb, result) = match action {
        Action::Start => ("start", controller.start(&name).await),
        Action::Stop => ("stop", controller.stop(&name).await),
        Action::Reset => ("reset", controller.reset(&name).await),
    };
    action_answer(&name, verb, result)
}

#[utoipa::path(post, path = "/api/v1/builds/{name}/start", tag = "builds",
    params(("name" = String, Path, description = "build name")),
    description = "Starts a stopped build. Open to anyone unless the server requires admin \
        credentials for actions.",
    responses(
        (status = 200, description = "start requested; or ignored (`ignored: true`, the reason in \
            `detail`) when the build is not stopped, as the original answers", body = BuildAction),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such build", body = Detail),
        (status = 429, description = "too many actions from this client or on this build \
            (anonymous requests are rate-limited; see `Retry-After`)", body = Detail),
        (status = 503, description = "the controller is stopping, or not ready (see `Retry-After`)", body = Detail),
    ))]
/// `POST /builds/{name}/start`.
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(state, name, headers, peer.map(|p| p.0), Action::Start).await
}

#[utoipa::path(post, path = "/api/v1/builds/{name}/stop", tag = "builds",
    params(("name" = String, Path, description = "build name")),
    description = "Stops a started build.",
    responses(
        (status = 200, description = "stop requested; or ignored (`ignored: true`) when the build \
            is not started", body = BuildAction),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such build", body = Detail),
        (status = 429, description = "too many actions from this client or on this build \
            (anonymous requests are rate-limited; see `Retry-After`)", body = Detail),
        (status = 503, description = "the controller is stopping, or not ready (see `Retry-After`)", body = Detail),
    ))]
/// `POST /builds/{name}/stop`.
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(state, name, headers, peer.map(|p| p.0), Action::Stop).await
}

#[utoipa::path(post, path = "/api/v1/builds/{name}/reset", tag = "builds",
    params(("name" = String, Path, description = "build name")),
    description = "Initializes a build again.",
    responses(
        (status = 200, description = "reset requested; or ignored (`ignored: true`) when the \
            build is undeploying", body = BuildAction),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such build", body = Detail),
        (status = 429, description = "too many actions from this client or on this build \
            (anonymous requests are rate-limited; see `Retry-After`)", body = Detail),
        (status = 503, description = "the controller is stopping, or not ready (see `Retry-After`)", body = Detail),
    ))]
/// `POST /builds/{name}/reset`.
pub(crate) async fn reset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(state, name, headers, peer.map(|p| p.0), Action::Reset).await
}

#[utoipa::path(delete, path = "/api/v1/builds/{name}", tag = "admin",
    params(("name" = String, Path, description = "build name")),
    security(("basic" = [])),
    responses(
        (status = 200, description = "undeploy requested; or ignored (`ignored: true`) when the \
            build is undeploying already", body = BuildAction),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such build", body = Detail),
        (status = 503, description = "the controller is stopping", body = Detail),
    ))]
/// `DELETE /builds/{name}` (admin).
pub(crate) async fn undeploy_build(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.admin().check(&headers)?;
    let result = state.controller().undeploy(&name).await;
    action_answer(&name, "undeploy", result)
}

#[utoipa::path(post, path = "/api/v1/builds/{name}/pin", tag = "admin",
    params(("name" = String, Path, description = "build name")),
    security(("basic" = [])),
    description = "Pins a build: the limits (`max_started`, `max_deployed`) and idle stop never \
        stop or undeploy it (it still counts against them). Stored as the `runboat/pinned` \
        annotation of its Deployment. Pinning a pinned build is done at once.",
    responses(
        (status = 200, description = "pin requested; or ignored (`ignored: true`) when the build \
            is undeploying", body = BuildAction),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such build", body = Detail),
        (status = 409, description = "`max_pinned` builds are pinned already", body = Detail),
        (status = 503, description = "the controller is stopping", body = Detail),
    ))]
/// `POST /builds/{name}/pin` (admin).
pub(crate) async fn pin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.admin().check(&headers)?;
    let result = state.controller().pin(&name).await;
    action_answer(&name, "pin", result)
}

#[utoipa::path(post, path = "/api/v1/builds/{name}/unpin", tag = "admin",
    params(("name" = String, Path, description = "build name")),
    security(("basic" = [])),
    description = "Unpins a build (done at once when it is not pinned).",
    responses(
        (status = 200, description = "unpin requested", body = BuildAction),
        (status = 401, description = "admin credentials required (HTTP Basic)", body = Detail),
        (status = 404, description = "no such build", body = Detail),
        (status = 503, description = "the controller is stopping", body = Detail),
    ))]
/// `POST /builds/{name}/unpin` (admin).
pub(crate) async fn unpin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.admin().check(&headers)?;
    let result = state.controller().unpin(&name).await;
    action_answer(&name, "unpin", result)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn filters_validate_pr_and_status() {
        let p = FilterParams {
            pr: Some("12".into()),
            status: Some("started".into()),
            repo: Some("OCA/Web".into()),
            ..FilterParams::default()
        };
        let f = p.into_filters().expect("valid");
        assert_eq!(f.pr, Some(12));
        assert_eq!(f.status, Some(BuildStatus::Started));
        assert_eq!(f.repo.as_deref(), Some("oca/web"));

        let err = FilterParams { pr: Some("x1".into()), ..FilterParams::default() }
            .into_filters()
            .expect_err("bad pr");
        assert!(err.to_string().contains("\"x1\""), "{err}");
        let err = FilterParams { status: Some("running".into()), ..FilterParams::default() }
            .into_filters()
            .expect_err("bad status");
        assert!(err.to_string().contains("\"running\""), "{err}");
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);

        let empty = FilterParams { repo: Some(String::new()), ..FilterParams::default() };
        assert_eq!(empty.into_filters().expect("empty"), SearchFilters::default());
    }

    #[test]
    fn strips_ansi_sequences() {
        assert_eq!(strip_ansi("\u{1b}[1;31mred\u{1b}[0m plain"), "red plain");
        assert_eq!(strip_ansi("no escapes"), "no escapes");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    proptest! {
        #[test]
        fn pr_parser_accepts_exactly_positive_integers(s in "\\PC{0,12}") {
            let parsed = parse_pr_param(&s);
            match s.parse::<u64>() {
                Ok(n) if n > 0 && n <= runboat_api::MAX_PR => prop_assert_eq!(parsed.ok(), Some(n)),
                _ => prop_assert!(parsed.is_err()),
            }
        }

        #[test]
        fn status_parser_accepts_exactly_the_status_names(s in "[a-z]{0,14}|\\PC{0,14}") {
            let known = BuildStatus::ALL.iter().find(|st| st.as_str() == s);
            match parse_status_param(&s) {
                Ok(st) => prop_assert_eq!(Some(&st), known),
                Err(e) => {
                    prop_assert!(known.is_none());
                    prop_assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
                }
            }
        }

        #[test]
        fn any_filter_values_validate_without_panic(
            repo in "\\PC{0,20}", pr in "\\PC{0,8}", status in "\\PC{0,12}"
        ) {
            let p = FilterParams {
                repo: Some(repo),
                pr: Some(pr),
                status: Some(status),
                ..FilterParams::default()
            };
            let _ = p.into_filters();
        }

        #[test]
        fn log_rendering_never_panics(s in "(\\PC|\u{1b}\\[[0-9;]{0,6}m){0,40}") {
            let _ = render_log("t", &s, false, false);
            let plain = strip_ansi(&s);
            prop_assert!(!plain.contains(char::from(27)));
        }
    }
}
