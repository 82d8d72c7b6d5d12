//! The wire types of runboat's REST API (`/api/v1`) and its server-sent
//! events: what the server sends and the CLI reads, with their OpenAPI
//! schemas (utoipa).
//!
//! One definition for both sides: the server serialises these, the CLI
//! deserialises them, and the OpenAPI document is generated from them, so
//! the three cannot drift apart. The JSON is SPEC's (the original runboat's):
//! field names, order and `null`s are part of the contract.
//!
//! What this crate must not do: I/O, or depend on anything but serde and
//! utoipa. Domain rules (what a valid repo or sha is, how a status is
//! derived) live in runboat-core; these are plain data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The largest pull request number the API takes: the largest integer a
/// JSON number holds exactly (GitHub's are far below).
pub const MAX_PR: u64 = 9_007_199_254_740_991;

/// A build's status, derived by the controller from its Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// To initialize, or initializing.
    Initializing,
    /// Initialization failed.
    Failed,
    /// Initialized, not running.
    Stopped,
    /// Being stopped.
    Stopping,
    /// Being started.
    Starting,
    /// Running: the deploy link answers.
    Started,
    /// Being removed.
    Undeploying,
}

impl BuildStatus {
    /// Every status, in the order above.
    pub const ALL: [BuildStatus; 7] = [
        BuildStatus::Initializing,
        BuildStatus::Failed,
        BuildStatus::Stopped,
        BuildStatus::Stopping,
        BuildStatus::Starting,
        BuildStatus::Started,
        BuildStatus::Undeploying,
    ];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Initializing => "initializing",
            BuildStatus::Failed => "failed",
            BuildStatus::Stopped => "stopped",
            BuildStatus::Stopping => "stopping",
            BuildStatus::Starting => "starting",
            BuildStatus::Started => "started",
            BuildStatus::Undeploying => "undeploying",
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown status {:?}", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

impl FromStr for BuildStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuildStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What a build is a build of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct CommitInfo {
    /// `owner/name`, lower case.
    #[schema(example = "oca/web")]
    pub repo: String,
    /// The branch, or the pull request's base branch.
    #[schema(example = "16.0")]
    pub target_branch: String,
    /// The pull request number, null for a branch build.
    #[schema(example = 1234, minimum = 1)]
    pub pr: Option<u64>,
    /// 40 lower-case hexadecimal digits.
    #[schema(example = "0123456789abcdef0123456789abcdef01234567")]
    pub git_commit: String,
}

/// A build as the REST API and the event stream show it: exactly SPEC's
/// fields. Timestamps are RFC 3339 UTC (`2024-05-01T12:34:56Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Build {
    /// Build name.
    #[schema(example = "b1a2b3c4d5e6f7a8b9c0")]
    pub name: String,
    pub commit_info: CommitInfo,
    pub status: BuildStatus,
    /// Creation time.
    #[schema(example = "2024-05-01T12:34:56Z")]
    pub created: String,
    /// Last time the build was started or stopped; its creation time when
    /// it never was (never null).
    #[schema(example = "2024-05-01T12:34:56Z")]
    pub last_scaled: String,
    /// `http://<slug>.<build_domain>`: the running instance.
    pub deploy_link: String,
    /// `http://<slug>.mail.<build_domain>`: the mail catcher.
    pub deploy_link_mailhog: String,
    /// The branch on GitHub.
    pub repo_target_branch_link: String,
    /// The pull request on GitHub, null for a branch build.
    pub repo_pr_link: Option<String>,
    /// The commit on GitHub.
    pub repo_commit_link: String,
    /// The build's page in the web UI.
    pub webui_link: String,
    /// An admin pinned the build: the limits and idle stop never stop or
    /// undeploy it. Omitted when false (the original's clients see
    /// exactly SPEC's fields).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// Estimated seconds until the build is ready (initialized, or started
    /// when it is starting), for queued, initializing and starting builds;
    /// omitted when unknown (no history yet for its repo and branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 240, minimum = 0)]
    pub eta_seconds: Option<u64>,
    /// The name of the newer build of the same pull request (or branch)
    /// that supersedes this one (see the `supersede_keep` setting); omitted
    /// when not superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "b0123456789abcdef0123")]
    pub superseded_by: Option<String>,
    /// When the build reached each stage, as the cluster shows it: in
    /// `GET /builds/{name}` only (lists and events leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// When a build reached each stage, as far as the cluster shows it (RFC
/// 3339 UTC times; a stage not reached, or not known, is omitted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    /// The Deployment's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2024-05-01T12:34:56Z")]
    pub created: Option<String>,
    /// The init Job's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2024-05-01T12:35:10Z")]
    pub init_started: Option<String>,
    /// The init Job's end (success or failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2024-05-01T12:39:02Z")]
    pub init_finished: Option<String>,
    /// The last start (scale to 1) of a started or starting build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2024-05-01T12:40:00Z")]
    pub started: Option<String>,
    /// The last stop (scale to 0) of an initialized build that was scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2024-05-01T13:40:00Z")]
    pub stopped: Option<String>,
}

/// A [`Build`] as `GET /builds` lists it: the same fields in the same
/// order, but those that are `null` (`commit_info.pr` and `repo_pr_link` of
/// a branch build) are left out, as the original's list answer (FastAPI's
/// `response_model_exclude_none`) does. `GET /builds/{name}` and the events
/// keep them as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListedBuild<'a> {
    name: &'a str,
    commit_info: ListedCommitInfo<'a>,
    status: BuildStatus,
    created: &'a str,
    last_scaled: &'a str,
    deploy_link: &'a str,
    deploy_link_mailhog: &'a str,
    repo_target_branch_link: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    repo_pr_link: Option<&'a str>,
    repo_commit_link: &'a str,
    webui_link: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pinned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    superseded_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<&'a Timeline>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct ListedCommitInfo<'a> {
    repo: &'a str,
    target_branch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pr: Option<u64>,
    git_commit: &'a str,
}

impl<'a> From<&'a Build> for ListedBuild<'a> {
    fn from(b: &'a Build) -> Self {
        let c = &b.commit_info;
        ListedBuild {
            name: &b.name,
            commit_info: ListedCommitInfo {
                repo: &c.repo,
                target_branch: &c.target_branch,
                pr: c.pr,
                git_commit: &c.git_commit,
            },
            status: b.status,
            created: &b.created,
            last_scaled: &b.last_scaled,
            deploy_link: &b.deploy_link,
            deploy_link_mailhog: &b.deploy_link_mailhog,
            repo_target_branch_link: &b.repo_target_branch_link,
            repo_pr_link: b.repo_pr_link.as_deref(),
            repo_commit_link: &b.repo_commit_link,
            webui_link: &b.webui_link,
            pinned: b.pinned,
            eta_seconds: b.eta_seconds,
            superseded_by: b.superseded_by.as_deref(),
            timeline: b.timeline.as_ref(),
        }
    }
}

/// The counters of `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusCounts {
    /// Builds not undeploying.
    pub deployed: u64,
    /// The `max_deployed` limit.
    pub max_deployed: u64,
    /// Builds whose initialization failed.
    pub failed: u64,
    /// Stopped builds.
    pub stopped: u64,
    /// Started builds.
    pub started: u64,
    /// The `max_started` limit.
    pub max_started: u64,
    /// Builds waiting for initialization.
    pub to_initialize: u64,
    /// Builds whose initialization job runs.
    pub initializing: u64,
    /// The `max_initializing` limit.
    pub max_initializing: u64,
    /// Builds being undeployed.
    pub undeploying: u64,
    /// Pinned builds (they count in the other counters too).
    #[serde(default)]
    pub pinned: u64,
    /// The `max_pinned` limit.
    #[serde(default)]
    pub max_pinned: u64,
    /// Leader election, when it is on (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership: Option<LeaderStatus>,
}

/// Which replica leads, as the answering replica knows it (in
/// `GET /status` when leader election is on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaderStatus {
    /// The answering replica's identity (its pod name, or hostname).
    #[schema(example = "runboat-7d9f8c6b5-x2x9q")]
    pub identity: String,
    /// Whether the answering replica leads (makes the scheduling
    /// decisions); every replica serves the whole API either way.
    pub leader: bool,
    /// The replica holding the lease, as the answering one last read it
    /// (at most one retry period old); absent when the lease is free or
    /// not read yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// A repository having builds (`GET /repos`). Fields in the order the
/// answer always had (`link` first): the bytes stay the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Repo {
    /// The repository on GitHub.
    #[schema(example = "https://github.com/oca/web")]
    pub link: String,
    /// `owner/name`, lower case.
    #[schema(example = "oca/web")]
    pub name: String,
}

/// The kind of a build event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The build is new or changed (or, first, is there).
    Upd,
    /// The build is gone, or stopped matching the filters.
    Del,
}

impl EventKind {
    /// The wire name (also the SSE event name).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Upd => "upd",
            EventKind::Del => "del",
        }
    }
}

/// The data of a build event of `GET /build-events`:
/// `{"event": "upd"|"del", "build": {...}}`. Generic in the build so the
/// server can serialise a borrowed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildEvent<B = Build> {
    pub event: EventKind,
    pub build: B,
}

/// The data of a `resync` event: the client fell behind and changes were
/// dropped; forget what you have, the whole matching set follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resync {
    /// Always `resync`.
    #[schema(example = "resync")]
    pub event: String,
    /// Why.
    pub reason: String,
}

/// The body of every error answer, and of action answers: what was wrong,
/// or what was asked of the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Detail {
    #[schema(example = "build \"bnope\" not found")]
    pub detail: String,
}

/// The answer of an action on one build, or of a deploy (`POST
/// /builds/{name}/start`, `/trigger/branch`…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildAction {
    /// What was done, or why nothing was.
    #[schema(example = "start requested")]
    pub detail: String,
    /// The build.
    pub name: String,
    /// True when the action does not apply to the build in its current
    /// state and nothing was done (`detail` says why). The answer is still
    /// 200, as the original runboat's; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
}

/// The answer of `DELETE /builds`. Fields in the order the answer always
/// had (`count` first): the bytes stay the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Undeployed {
    /// How many builds were asked to undeploy.
    pub count: u64,
    #[schema(example = "undeploying 2 build(s)")]
    pub detail: String,
}

/// The build filters of `GET /builds` and `GET /build-events` (empty values
/// mean "any").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct Filters {
    /// Repository `owner/name` (case-insensitive).
    pub repo: Option<String>,
    /// Target branch, of branch and pull request builds alike.
    pub target_branch: Option<String>,
    /// Branch builds of this branch only.
    pub branch: Option<String>,
    /// Pull request number.
    #[param(minimum = 1, maximum = 9007199254740991.0)]
    pub pr: Option<u64>,
    pub status: Option<BuildStatus>,
    /// One build.
    pub build_name: Option<String>,
}

impl Filters {
    /// The query string (without `?`, values percent-encoded), empty
    /// without filters.
    pub fn query(&self) -> String {
        let pr = self.pr.map(|p| p.to_string());
        let pairs = [
            ("repo", self.repo.as_deref()),
            ("target_branch", self.target_branch.as_deref()),
            ("branch", self.branch.as_deref()),
            ("pr", pr.as_deref()),
            ("status", self.status.map(BuildStatus::as_str)),
            ("build_name", self.build_name.as_deref()),
        ];
        query_string(&pairs)
    }

    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }
}

/// The query of `POST /builds/trigger/branch`: deploy the head of a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TriggerBranch {
    /// Repository `owner/name`.
    #[param(
        pattern = r"^\s*[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\s*$",
        max_length = 200,
        example = "oca/web"
    )]
    pub repo: String,
    /// The branch.
    #[param(pattern = r"\S", example = "16.0")]
    pub branch: String,
}

/// The query of `POST /builds/trigger/pr`: deploy the head of a pull
/// request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TriggerPr {
    /// Repository `owner/name`.
    #[param(
        pattern = r"^\s*[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\s*$",
        max_length = 200,
        example = "oca/web"
    )]
    pub repo: String,
    /// Pull request number.
    #[param(minimum = 1, maximum = 9007199254740991.0, example = 1234)]
    pub pr: u64,
}

/// The query of the log endpoints (`GET /builds/{name}/init-log`, `/log`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogOptions {
    /// Present (any value but `0`, `false` or `no`): keep the answer open
    /// and send what the log gains while the build runs.
    pub follow: Option<String>,
    /// With `Accept: text/plain`: keep the ANSI colour sequences unless
    /// `0`, `false` or `no` (terminal clients such as `runboat logs`).
    pub ansi: Option<String>,
    /// Without `follow`: how many bytes of the log's end to send (default
    /// 1 MiB, at most 16 MiB); a first line says what was left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u64>, minimum = 1, maximum = 16777216)]
    pub tail_bytes: Option<String>,
}

/// The filters of `DELETE /builds`: those of [`Filters`], without empty
/// values, and at least one of them (a rule OpenAPI cannot express: the
/// server answers 400 without any, so that undeploying every build is
/// never one forgotten parameter away).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UndeployFilters {
    /// Repository `owner/name` (case-insensitive).
    #[param(pattern = r"\S")]
    pub repo: Option<String>,
    /// Target branch, of branch and pull request builds alike.
    #[param(pattern = r"\S")]
    pub target_branch: Option<String>,
    /// Branch builds of this branch only.
    #[param(pattern = r"\S")]
    pub branch: Option<String>,
    /// Pull request number.
    #[param(minimum = 1, maximum = 9007199254740991.0)]
    pub pr: Option<u64>,
    pub status: Option<BuildStatus>,
    /// One build.
    #[param(pattern = r"\S")]
    pub build_name: Option<String>,
}

/// `k=v&…` of the pairs that have a value, values percent-encoded.
pub fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_by_name() {
        for status in BuildStatus::ALL {
            assert_eq!(status.as_str().parse::<BuildStatus>(), Ok(status));
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!("running".parse::<BuildStatus>(), Err(UnknownStatus("running".into())));
    }

    #[test]
    fn filters_make_a_query_string() {
        let f = Filters {
            repo: Some("oca/web".into()),
            pr: Some(12),
            status: Some(BuildStatus::Started),
            ..Filters::default()
        };
        assert_eq!(f.query(), "repo=oca%2Fweb&pr=12&status=started");
        assert!(Filters::default().is_empty());
        assert_eq!(Filters::default().query(), "");
    }

    fn build(pr: Option<u64>) -> Build {
        Build {
            name: "b1".into(),
            commit_info: CommitInfo {
                repo: "oca/web".into(),
                target_branch: "16.0".into(),
                pr,
                git_commit: "0123456789abcdef0123456789abcdef01234567".into(),
            },
            status: BuildStatus::Started,
            created: "2024-05-01T12:34:56Z".into(),
            last_scaled: "2024-05-01T12:34:56Z".into(),
            deploy_link: "d".into(),
            deploy_link_mailhog: "m".into(),
            repo_target_branch_link: "t".into(),
            repo_pr_link: pr.map(|n| format!("p{n}")),
            repo_commit_link: "c".into(),
            webui_link: "w".into(),
            pinned: false,
            eta_seconds: None,
            superseded_by: None,
            timeline: None,
        }
    }

    #[test]
    fn the_new_fields_are_omitted_when_absent_and_listed_alike() {
        let mut b = build(Some(7));
        let plain = serde_json::to_string(&b).expect("json");
        assert!(!plain.contains("eta_seconds") && !plain.contains("superseded_by"));
        assert!(!plain.contains("timeline"));
        b.eta_seconds = Some(240);
        b.superseded_by = Some("b2".into());
        b.timeline =
            Some(Timeline { created: Some("2024-05-01T12:34:56Z".into()), ..Timeline::default() });
        let full = serde_json::to_string(&b).expect("json");
        assert!(full.ends_with(
            r#""eta_seconds":240,"superseded_by":"b2","timeline":{"created":"2024-05-01T12:34:56Z"}}"#
        ), "{full}");
        assert_eq!(serde_json::to_string(&ListedBuild::from(&b)).expect("json"), full);
        let back: Build = serde_json::from_str(&full).expect("read back");
        assert_eq!(back, b);
    }

    /// A listed build is the build, field for field and in order, less its
    /// nulls: a field added to `Build` and forgotten here fails this.
    #[test]
    fn a_listed_build_is_the_build_without_its_nulls() {
        let pr = build(Some(7));
        assert_eq!(
            serde_json::to_string(&ListedBuild::from(&pr)).expect("json"),
            serde_json::to_string(&pr).expect("json")
        );
        let branch = build(None);
        let full = serde_json::to_string(&branch).expect("json");
        assert!(full.contains(r#""pr":null"#) && full.contains(r#""repo_pr_link":null"#));
        let listed = serde_json::to_string(&ListedBuild::from(&branch)).expect("json");
        assert_eq!(
            listed,
            full.replace(r#""pr":null,"#, "").replace(r#""repo_pr_link":null,"#, "")
        );
        let back: Build = serde_json::from_str(&listed).expect("a client reads it back");
        assert_eq!(back, branch);
    }

    /// `pinned` is omitted when false (the original's exact fields), and
    /// the last field when true, in both shapes.
    #[test]
    fn pinned_is_omitted_unless_true() {
        let mut b = build(Some(7));
        let plain = serde_json::to_string(&b).expect("json");
        assert!(!plain.contains("pinned"), "{plain}");
        b.pinned = true;
        let full = serde_json::to_string(&b).expect("json");
        assert!(full.ends_with(r#","pinned":true}"#), "{full}");
        assert_eq!(serde_json::to_string(&ListedBuild::from(&b)).expect("json"), full);
        let back: Build = serde_json::from_str(&full).expect("read back");
        assert!(back.pinned);
    }

    #[test]
    fn an_event_is_the_original_shape() {
        let event = BuildEvent { event: EventKind::Del, build: serde_json::json!({"name": "b1"}) };
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            r#"{"event":"del","build":{"name":"b1"}}"#
        );
    }
}
