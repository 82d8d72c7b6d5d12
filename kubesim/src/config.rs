//! Configuration of a simulated API server and of its controllers, and the
//! fault and control actions accepted from Rust and from `/kubesim/faults`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a simulated server is set up.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Number of events retained for watches; older versions answer 410.
    pub history_window: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Namespaces that exist from the start.
    pub namespaces: Vec<String>,
    pub controllers: ControllerConfig,
    /// Authenticate requests by bearer token and authorize them with RBAC
    /// (Roles, ClusterRoles and their bindings); off: every request is
    /// allowed. See `src/auth.rs`.
    pub rbac: bool,
    /// With `rbac`: a request without credentials is an admin
    /// (`system:unsecured`, as on kube-apiserver's former insecure port)
    /// instead of `system:anonymous`. For kubectl, which never sends
    /// credentials to a plain-HTTP server such as kubesim.
    pub unauthenticated_as_admin: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_window: 200_000,
            bookmark_interval: Duration::from_secs(5),
            namespaces: vec!["default".into(), "kube-system".into(), "kube-public".into()],
            controllers: ControllerConfig::default(),
            rbac: false,
            unauthenticated_as_admin: false,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("history_window", &self.history_window)
            .field("bookmark_interval", &self.bookmark_interval)
            .field("namespaces", &self.namespaces)
            .field("controllers", &self.controllers)
            .field("rbac", &self.rbac)
            .field("unauthenticated_as_admin", &self.unauthenticated_as_admin)
            .finish()
    }
}

/// The simulated controllers, each switchable, and their timing.
#[derive(Clone)]
pub struct ControllerConfig {
    /// Deployments get a ReplicaSet and pods; their status follows.
    pub deployments: bool,
    /// Jobs get a pod, then succeed or fail as scripted.
    pub jobs: bool,
    /// Owned objects are deleted with their owner.
    pub garbage_collector: bool,
    /// The controllers record core/v1 Events (shown by `kubectl describe`).
    pub events: bool,
    /// Time from a pod's creation to it being Running and Ready.
    pub pod_ready_delay: Duration,
    /// Time a deleted pod stays Terminating (capped by its grace period);
    /// zero deletes pods at once.
    pub pod_termination_delay: Duration,
    /// Default time a job pod runs before its outcome.
    pub job_duration: Duration,
    /// Scripted job outcomes, first match wins; unmatched jobs succeed.
    pub job_rules: Vec<JobRule>,
    /// A test hook consulted before the rules.
    pub job_hook: Option<JobHook>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            deployments: true,
            jobs: true,
            garbage_collector: true,
            events: true,
            pod_ready_delay: Duration::from_secs(1),
            pod_termination_delay: Duration::ZERO,
            job_duration: Duration::from_secs(1),
            job_rules: Vec::new(),
            job_hook: None,
        }
    }
}

impl ControllerConfig {
    /// All controllers on, with no delays: what most tests want.
    pub fn instant() -> Self {
        ControllerConfig {
            pod_ready_delay: Duration::ZERO,
            job_duration: Duration::ZERO,
            ..Self::default()
        }
    }

    /// All controllers off: objects stay exactly as written.
    pub fn none() -> Self {
        ControllerConfig {
            deployments: false,
            jobs: false,
            garbage_collector: false,
            events: false,
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("deployments", &self.deployments)
            .field("jobs", &self.jobs)
            .field("garbage_collector", &self.garbage_collector)
            .field("events", &self.events)
            .field("pod_ready_delay", &self.pod_ready_delay)
            .field("pod_termination_delay", &self.pod_termination_delay)
            .field("job_duration", &self.job_duration)
            .field("job_rules", &self.job_rules)
            .field("job_hook", &self.job_hook.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// A test hook deciding a job's script from the Job object; `None` falls
/// through to the rules.
pub type JobHook = Arc<dyn Fn(&Value) -> Option<JobScript> + Send + Sync>;

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    Succeed,
    Fail,
}

/// What a job's pod does: its outcome, how long it runs and what it logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobScript {
    pub outcome: JobOutcome,
    /// Run time; `None` uses [`ControllerConfig::job_duration`].
    pub duration: Option<Duration>,
    /// Log text of every container of the pod; `None` logs a few default lines.
    pub log: Option<String>,
}

impl JobScript {
    pub fn succeed() -> Self {
        JobScript { outcome: JobOutcome::Succeed, duration: None, log: None }
    }

    pub fn fail() -> Self {
        JobScript { outcome: JobOutcome::Fail, duration: None, log: None }
    }

    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = Some(log.into());
        self
    }

    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }
}

/// A rule scripting the jobs it matches: every given label must be equal
/// and the name must match the regular expression, when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRule {
    #[serde(default)]
    pub name_pattern: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub outcome: JobOutcome,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub log: Option<String>,
}

impl JobRule {
    /// A rule matching jobs carrying `key=value`.
    pub fn by_label(key: &str, value: &str, script: JobScript) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert(key.to_string(), value.to_string());
        JobRule::from_script(None, labels, script)
    }

    /// A rule matching job names against a regular expression.
    pub fn by_name(pattern: &str, script: JobScript) -> Self {
        JobRule::from_script(Some(pattern.to_string()), BTreeMap::new(), script)
    }

    fn from_script(
        name_pattern: Option<String>,
        labels: BTreeMap<String, String>,
        script: JobScript,
    ) -> Self {
        JobRule {
            name_pattern,
            labels,
            outcome: script.outcome,
            duration_ms: script.duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            log: script.log,
        }
    }

    pub fn script(&self) -> JobScript {
        JobScript {
            outcome: self.outcome,
            duration: self.duration_ms.map(Duration::from_millis),
            log: self.log.clone(),
        }
    }

    /// Whether the rule applies to a job with this name and these labels.
    pub fn matches(&self, name: &str, labels: &[(String, String)]) -> bool {
        let labels_ok =
            self.labels.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v));
        let name_ok = match &self.name_pattern {
            None => true,
            Some(p) => regex::Regex::new(p).is_ok_and(|re| re.is_match(name)),
        };
        labels_ok && name_ok
    }
}

/// Answer the next `count` matching requests with an error status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailRule {
    pub count: u32,
    /// 500, 503 or 429 (any 4xx/5xx is accepted).
    pub status: u16,
    /// Only requests of this verb: get, list, watch, create, update, patch,
    /// delete, deletecollection.
    #[serde(default)]
    pub verb: Option<String>,
    /// Only requests for this resource (plural name, e.g. `deployments`).
    #[serde(default)]
    pub resource: Option<String>,
    /// Sent as `Retry-After` (and `details.retryAfterSeconds`).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
}

impl FailRule {
    pub fn new(count: u32, status: u16) -> Self {
        FailRule { count, status, verb: None, resource: None, retry_after_seconds: None }
    }

    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }

    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }
}

/// A control action, as posted to `/kubesim/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ControlAction {
    /// End every open watch now.
    CloseWatches,
    /// Fail the next matching requests.
    FailNext(FailRule),
    /// Delay every API request by this many milliseconds (0 to stop).
    Latency {
        millis: u64,
    },
    /// Forget the event history: resuming watches get 410 Gone.
    CompactHistory,
    PauseControllers,
    ResumeControllers,
    /// Add a job rule (checked before the configured ones).
    AddJobRule(JobRule),
    /// Remove pending failures and latency.
    ClearFaults,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_actions_parse_from_json() {
        let a: ControlAction = serde_json::from_str(
            r#"{"action":"failNext","count":2,"status":429,"verb":"list","retryAfterSeconds":1}"#,
        )
        .expect("parses");
        assert_eq!(a, ControlAction::FailNext(FailRule::new(2, 429).verb("list").retry_after(1)));
        let a: ControlAction =
            serde_json::from_str(r#"{"action":"latency","millis":5}"#).expect("parses");
        assert_eq!(a, ControlAction::Latency { millis: 5 });
        let a: ControlAction = serde_json::from_str(
            r#"{"action":"addJobRule","namePattern":"^init-","outcome":"fail","log":"boom"}"#,
        )
        .expect("parses");
        assert!(matches!(a, ControlAction::AddJobRule(ref r) if r.outcome == JobOutcome::Fail));
        assert!(serde_json::from_str::<ControlAction>(r#"{"action":"explode"}"#).is_err());
    }

    #[test]
    fn job_rules_match_labels_and_names() {
        let rule = JobRule::by_label("runboat/job-kind", "initialize", JobScript::fail());
        let labels = vec![("runboat/job-kind".to_string(), "initialize".to_string())];
        assert!(rule.matches("x", &labels));
        assert!(!rule.matches("x", &[]));
        let rule = JobRule::by_name("^b1-", JobScript::succeed());
        assert!(rule.matches("b1-init", &[]));
        assert!(!rule.matches("b2-init", &[]));
    }
}
