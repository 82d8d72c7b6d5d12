//! A build: one deployment of one commit, as observed in the cluster, with
//! the links SPEC derives from it, and its wire view (runboat-api's
//! [`runboat_api::Build`], the one definition the server and the CLI share).

use std::fmt;

use jiff::Timestamp;

use crate::commit::CommitInfo;
use crate::contract::{
    ANNOTATION_GIT_COMMIT, ANNOTATION_INIT_STATUS, ANNOTATION_LAST_SCALED, ANNOTATION_PINNED,
    ANNOTATION_PR, ANNOTATION_REPO, ANNOTATION_ROUTE, ANNOTATION_TARGET_BRANCH, LABEL_BUILD,
};
use crate::error::{Error, Result};
use crate::status::{BuildStatus, DeploymentFacts, InitStatus};

/// Reads `runboat/last-scaled`: an RFC 3339 time (what runboat writes,
/// `…Z`), or a time without offset, taken as UTC (Python's naive
/// `isoformat()`).
fn parse_last_scaled(value: &str) -> Option<Timestamp> {
    value.parse::<Timestamp>().ok().or_else(|| {
        let civil: jiff::civil::DateTime = value.parse().ok()?;
        civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
    })
}

/// One build as the controller knows it.
///
/// Plain data: the index compares whole values to decide whether an upsert
/// changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The build name (`runboat/build` label).
    pub name: String,
    /// The Deployment's name (normally equal to `name`).
    pub deployment_name: String,
    /// What the build is a build of.
    pub commit_info: CommitInfo,
    /// Derived status.
    pub status: BuildStatus,
    /// Init status from the annotation.
    pub init_status: InitStatus,
    /// `spec.replicas` (0 when absent).
    pub desired_replicas: i32,
    /// The Deployment's creation time.
    pub created: Timestamp,
    /// The `runboat/last-scaled` annotation, `None` when absent or empty.
    pub last_scaled: Option<Timestamp>,
    /// The `runboat/pinned` annotation is `"true"`: the limits and idle
    /// stop never stop or undeploy this build (other policies, such as a
    /// supersede, must check it too).
    pub pinned: bool,
    /// The `runboat/route` annotation: where runboat last pointed the
    /// build's Ingress (`None`: never, or an unknown value).
    pub route: Option<Route>,
}

/// Where a build's Ingress backends point (with `wake_service` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The build's own Services (it is started and ready).
    Build,
    /// The wake Service: runboat-server answers with the waiting page.
    Wake,
}

impl Route {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Build => "build",
            Route::Wake => "wake",
        }
    }

    /// Parses an annotation value (`None` when unknown).
    pub fn parse(value: &str) -> Option<Route> {
        match value {
            "build" => Some(Route::Build),
            "wake" => Some(Route::Wake),
            _ => None,
        }
    }

    /// Where a build of `status` must be routed: to itself only when
    /// started (its pod ready), else to the wake Service.
    pub fn wanted(status: BuildStatus) -> Route {
        if status == BuildStatus::Started { Route::Build } else { Route::Wake }
    }
}

fn annotation<'a>(facts: &'a DeploymentFacts, key: &'static str) -> Result<&'a str> {
    facts.annotations.get(key).map(String::as_str).ok_or(Error::MissingAnnotation { key })
}

impl Build {
    /// Reads a build from its observed Deployment, deriving the status by
    /// SPEC's rules ([`BuildStatus::derive`]).
    ///
    /// Errors (wrapped in [`Error::InvalidDeployment`] naming the Deployment)
    /// when the `runboat/build` label or a runboat annotation (`repo`,
    /// `target-branch`, `git-commit`, `init-status`) is missing, when a value
    /// is invalid (unknown init status, bad sha, bad pr, unparsable
    /// last-scaled) or when the creation timestamp is missing. A missing
    /// `runboat/pr` annotation means a branch build, as in the original.
    pub fn from_deployment_facts(facts: &DeploymentFacts) -> Result<Build> {
        Build::read(facts).map_err(|source| Error::InvalidDeployment {
            deployment: facts.name.clone(),
            source: Box::new(source),
        })
    }

    fn read(facts: &DeploymentFacts) -> Result<Build> {
        let name = facts.labels.get(LABEL_BUILD).ok_or(Error::MissingLabel { key: LABEL_BUILD })?;
        let commit_info = CommitInfo::from_annotation_pr(
            annotation(facts, ANNOTATION_REPO)?,
            annotation(facts, ANNOTATION_TARGET_BRANCH)?,
            facts.annotations.get(ANNOTATION_PR).map(String::as_str).unwrap_or(""),
            annotation(facts, ANNOTATION_GIT_COMMIT)?,
        )?;
        let init_status: InitStatus = annotation(facts, ANNOTATION_INIT_STATUS)?.parse()?;
        let last_scaled = match facts.annotations.get(ANNOTATION_LAST_SCALED) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => parse_last_scaled(v).or_else(|| {
                // A hand-edited or foreign value must not hide the whole
                // build (it would escape the limits and the API): the
                // ordering falls back to the creation time.
                tracing::warn!(
                    deployment = facts.name,
                    value = v.as_str(),
                    "ignoring an unreadable {ANNOTATION_LAST_SCALED} annotation"
                );
                None
            }),
        };
        let created = facts.creation_timestamp.ok_or(Error::MissingCreationTimestamp)?;
        let status = BuildStatus::derive(
            init_status,
            facts.deletion_timestamp.is_some(),
            facts.spec_replicas,
            facts.status_replicas,
            facts.available_replicas,
        );
        Ok(Build {
            name: name.clone(),
            deployment_name: facts.name.clone(),
            commit_info,
            status,
            init_status,
            desired_replicas: facts.spec_replicas.unwrap_or(0),
            created,
            last_scaled,
            pinned: facts.annotations.get(ANNOTATION_PINNED).is_some_and(|v| v == "true"),
            route: facts.annotations.get(ANNOTATION_ROUTE).and_then(|v| Route::parse(v)),
        })
    }

    /// The build slug (see [`CommitInfo::slug`]).
    pub fn slug(&self) -> String {
        self.commit_info.slug()
    }

    /// When the build was last scaled, falling back to its creation time
    /// when it never was (as the original does). The limits policies order
    /// builds by this.
    pub fn last_scaled_or_created(&self) -> Timestamp {
        self.last_scaled.unwrap_or(self.created)
    }

    /// True for a branch build (no pull request).
    pub fn is_branch(&self) -> bool {
        self.commit_info.is_branch()
    }

    /// Whether an admin pinned the build (`runboat/pinned`): the limits,
    /// idle stop and supersede leave it alone.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// `http://<slug>.<build_domain>`: where the running instance is served.
    pub fn deploy_link(&self, build_domain: &str) -> String {
        format!("http://{}.{}", self.slug(), build_domain)
    }

    /// `http://<slug>.mail.<build_domain>`: the mail catcher.
    pub fn deploy_link_mailhog(&self, build_domain: &str) -> String {
        format!("http://{}.mail.{}", self.slug(), build_domain)
    }

    /// `https://github.com/<repo>/tree/<target_branch>`.
    pub fn repo_target_branch_link(&self) -> String {
        format!(
            "https://github.com/{}/tree/{}",
            self.commit_info.repo(),
            self.commit_info.target_branch()
        )
    }

    /// `https://github.com/<repo>/pull/<pr>`, `None` for a branch build.
    pub fn repo_pr_link(&self) -> Option<String> {
        self.commit_info
            .pr()
            .map(|pr| format!("https://github.com/{}/pull/{}", self.commit_info.repo(), pr))
    }

    /// The commit on GitHub: `https://github.com/<repo>/commit/<sha>` for a
    /// branch build, `https://github.com/<repo>/pull/<pr>/commits/<sha>` for
    /// a pull request build (as the original links it).
    pub fn repo_commit_link(&self) -> String {
        let c = &self.commit_info;
        match c.pr() {
            Some(pr) => {
                format!("https://github.com/{}/pull/{}/commits/{}", c.repo(), pr, c.git_commit())
            }
            None => format!("https://github.com/{}/commit/{}", c.repo(), c.git_commit()),
        }
    }

    /// `<base_url>/builds/<name>`: the build's page in the web UI.
    pub fn webui_link(&self, base_url: &str) -> String {
        format!("{}/builds/{}", base_url.trim_end_matches('/'), self.name)
    }

    /// `<base_url>/builds/<name>?live`: redirects to the instance once
    /// started (the commit status links here).
    pub fn live_link(&self, base_url: &str) -> String {
        format!("{}?live", self.webui_link(base_url))
    }

    /// The build as the REST API and the event stream show it (SPEC's
    /// fields; `last_scaled` falls back to `created`, as the original's API
    /// does, so it is never null).
    pub fn view(&self, build_domain: &str, base_url: &str) -> runboat_api::Build {
        let c = &self.commit_info;
        runboat_api::Build {
            name: self.name.clone(),
            commit_info: runboat_api::CommitInfo {
                repo: c.repo().to_owned(),
                target_branch: c.target_branch().to_owned(),
                pr: c.pr(),
                git_commit: c.git_commit().to_owned(),
            },
            status: wire_status(self.status),
            created: self.created.to_string(),
            last_scaled: self.last_scaled_or_created().to_string(),
            deploy_link: self.deploy_link(build_domain),
            deploy_link_mailhog: self.deploy_link_mailhog(build_domain),
            repo_target_branch_link: self.repo_target_branch_link(),
            repo_pr_link: self.repo_pr_link(),
            repo_commit_link: self.repo_commit_link(),
            webui_link: self.webui_link(base_url),
            pinned: self.pinned,
            eta_seconds: None,
            superseded_by: None,
            timeline: None,
        }
    }

    /// [`Build::view`] as a JSON value.
    pub fn to_json(&self, build_domain: &str, base_url: &str) -> serde_json::Value {
        serde_json::to_value(self.view(build_domain, base_url)).unwrap_or(serde_json::Value::Null)
    }
}

/// A status as the API names it.
pub fn wire_status(status: BuildStatus) -> runboat_api::BuildStatus {
    match status {
        BuildStatus::Initializing => runboat_api::BuildStatus::Initializing,
        BuildStatus::Failed => runboat_api::BuildStatus::Failed,
        BuildStatus::Stopped => runboat_api::BuildStatus::Stopped,
        BuildStatus::Stopping => runboat_api::BuildStatus::Stopping,
        BuildStatus::Starting => runboat_api::BuildStatus::Starting,
        BuildStatus::Started => runboat_api::BuildStatus::Started,
        BuildStatus::Undeploying => runboat_api::BuildStatus::Undeploying,
    }
}

impl fmt::Display for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.slug(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn facts() -> DeploymentFacts {
        let annotations: BTreeMap<String, String> = [
            (ANNOTATION_REPO, "oca/mis-builder"),
            (ANNOTATION_TARGET_BRANCH, "16.0"),
            (ANNOTATION_PR, "12"),
            (ANNOTATION_GIT_COMMIT, SHA),
            (ANNOTATION_INIT_STATUS, "succeeded"),
            (ANNOTATION_LAST_SCALED, "2024-05-01T10:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        DeploymentFacts {
            name: "bdeadbeef".to_owned(),
            annotations,
            labels: [(LABEL_BUILD.to_owned(), "bdeadbeef".to_owned())].into_iter().collect(),
            spec_replicas: Some(1),
            status_replicas: Some(1),
            available_replicas: Some(1),
            deletion_timestamp: None,
            creation_timestamp: Some("2024-05-01T09:00:00Z".parse().expect("ts")),
            available_since: None,
        }
    }

    #[test]
    fn reads_a_deployment() {
        let b = Build::from_deployment_facts(&facts()).expect("valid");
        assert_eq!(b.name, "bdeadbeef");
        assert_eq!(b.commit_info.repo(), "oca/mis-builder");
        assert_eq!(b.commit_info.pr(), Some(12));
        assert_eq!(b.status, BuildStatus::Started);
        assert_eq!(b.init_status, InitStatus::Succeeded);
        assert_eq!(b.desired_replicas, 1);
        assert_eq!(b.last_scaled, Some("2024-05-01T10:00:00Z".parse().expect("ts")));
    }

    #[test]
    fn empty_or_missing_pr_and_last_scaled_are_none() {
        let mut f = facts();
        f.annotations.insert(ANNOTATION_PR.to_owned(), String::new());
        f.annotations.remove(ANNOTATION_LAST_SCALED);
        let b = Build::from_deployment_facts(&f).expect("valid");
        assert_eq!(b.commit_info.pr(), None);
        assert_eq!(b.last_scaled, None);
        assert_eq!(b.last_scaled_or_created(), b.created);
        f.annotations.remove(ANNOTATION_PR);
        assert_eq!(Build::from_deployment_facts(&f).expect("valid").commit_info.pr(), None);
    }

    fn inner(err: Error) -> Error {
        match err {
            Error::InvalidDeployment { deployment, source } => {
                assert_eq!(deployment, "bdeadbeef");
                *source
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn missing_annotations_and_bad_values_are_errors() {
        for key in [
            ANNOTATION_REPO,
            ANNOTATION_TARGET_BRANCH,
            ANNOTATION_GIT_COMMIT,
            ANNOTATION_INIT_STATUS,
        ] {
            let mut f = facts();
            f.annotations.remove(key);
            let err = inner(Build::from_deployment_facts(&f).expect_err(key));
            assert!(matches!(err, Error::MissingAnnotation { key: k } if k == key));
        }
        let mut f = facts();
        f.labels.clear();
        assert!(matches!(
            inner(Build::from_deployment_facts(&f).expect_err("label")),
            Error::MissingLabel { .. }
        ));
        let mut f = facts();
        f.annotations.insert(ANNOTATION_INIT_STATUS.to_owned(), "running".to_owned());
        assert!(matches!(
            inner(Build::from_deployment_facts(&f).expect_err("init")),
            Error::UnknownInitStatus { value } if value == "running"
        ));
        // An unreadable last-scaled does not hide the build: it is ignored.
        let mut f = facts();
        f.annotations.insert(ANNOTATION_LAST_SCALED.to_owned(), "yesterday".to_owned());
        let b = Build::from_deployment_facts(&f).expect("still a build");
        assert_eq!(b.last_scaled, None);
        assert_eq!(b.last_scaled_or_created(), b.created);
        // A naive time (no offset) is UTC.
        f.annotations
            .insert(ANNOTATION_LAST_SCALED.to_owned(), "2024-05-01T10:30:00.250000".to_owned());
        let b = Build::from_deployment_facts(&f).expect("naive time");
        assert_eq!(b.last_scaled, Some("2024-05-01T10:30:00.25Z".parse().expect("ts")));
        let mut f = facts();
        f.creation_timestamp = None;
        assert!(matches!(
            inner(Build::from_deployment_facts(&f).expect_err("created")),
            Error::MissingCreationTimestamp
        ));
        let mut f = facts();
        f.annotations.insert(ANNOTATION_PR.to_owned(), "x".to_owned());
        assert!(matches!(
            inner(Build::from_deployment_facts(&f).expect_err("pr")),
            Error::InvalidPr { .. }
        ));
    }

    #[test]
    fn every_status_has_its_wire_name() {
        for status in BuildStatus::ALL {
            assert_eq!(wire_status(status).as_str(), status.as_str());
        }
    }

    #[test]
    fn status_comes_from_the_rules() {
        let mut f = facts();
        f.deletion_timestamp = Some("2024-05-02T00:00:00Z".parse().expect("ts"));
        assert_eq!(Build::from_deployment_facts(&f).expect("ok").status, BuildStatus::Undeploying);
        let mut f = facts();
        f.available_replicas = Some(0);
        assert_eq!(Build::from_deployment_facts(&f).expect("ok").status, BuildStatus::Starting);
    }

    #[test]
    fn json_view_has_exactly_spec_fields() {
        let b = Build::from_deployment_facts(&facts()).expect("valid");
        let v = b.to_json("runboat.example.com", "https://runboat.example.com/");
        let expected = serde_json::json!({
            "name": "bdeadbeef",
            "commit_info": {"repo": "oca/mis-builder", "target_branch": "16.0", "pr": 12, "git_commit": SHA},
            "status": "started",
            "created": "2024-05-01T09:00:00Z",
            "last_scaled": "2024-05-01T10:00:00Z",
            "deploy_link": "http://oca-mis-builder-16-0-pr12-0123456789ab.runboat.example.com",
            "deploy_link_mailhog": "http://oca-mis-builder-16-0-pr12-0123456789ab.mail.runboat.example.com",
            "repo_target_branch_link": "https://github.com/oca/mis-builder/tree/16.0",
            "repo_pr_link": "https://github.com/oca/mis-builder/pull/12",
            "repo_commit_link": format!("https://github.com/oca/mis-builder/pull/12/commits/{SHA}"),
            "webui_link": "https://runboat.example.com/builds/bdeadbeef",
        });
        assert_eq!(v, expected);
    }

    #[test]
    fn json_view_bytes_are_the_original_order() {
        let b = Build::from_deployment_facts(&facts()).expect("valid");
        let bytes = serde_json::to_string(&b.view("d", "http://x")).expect("json");
        let expected = format!(
            "{{\"name\":\"bdeadbeef\",\"commit_info\":{{\"repo\":\"oca/mis-builder\",\
             \"target_branch\":\"16.0\",\"pr\":12,\"git_commit\":\"{SHA}\"}},\
             \"status\":\"started\",\"created\":\"2024-05-01T09:00:00Z\",\
             \"last_scaled\":\"2024-05-01T10:00:00Z\",\
             \"deploy_link\":\"http://oca-mis-builder-16-0-pr12-0123456789ab.d\",\
             \"deploy_link_mailhog\":\"http://oca-mis-builder-16-0-pr12-0123456789ab.mail.d\",\
             \"repo_target_branch_link\":\"https://github.com/oca/mis-builder/tree/16.0\",\
             \"repo_pr_link\":\"https://github.com/oca/mis-builder/pull/12\",\
             \"repo_commit_link\":\"https://github.com/oca/mis-builder/pull/12/commits/{SHA}\",\
             \"webui_link\":\"http://x/builds/bdeadbeef\"}}"
        );
        assert_eq!(bytes, expected);
    }

    #[test]
    fn branch_build_links() {
        let mut f = facts();
        f.annotations.remove(ANNOTATION_PR);
        f.annotations.remove(ANNOTATION_LAST_SCALED);
        let b = Build::from_deployment_facts(&f).expect("valid");
        assert_eq!(b.repo_pr_link(), None);
        assert_eq!(
            b.repo_commit_link(),
            format!("https://github.com/oca/mis-builder/commit/{SHA}")
        );
        assert_eq!(
            b.live_link("http://localhost:8000"),
            "http://localhost:8000/builds/bdeadbeef?live"
        );
        let v = b.to_json("d", "http://localhost:8000");
        assert_eq!(v["repo_pr_link"], serde_json::Value::Null);
        assert_eq!(v["last_scaled"], "2024-05-01T09:00:00Z");
        assert_eq!(v["commit_info"]["pr"], serde_json::Value::Null);
    }
}
