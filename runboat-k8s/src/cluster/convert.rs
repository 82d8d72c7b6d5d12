//! Kubernetes objects → the plain facts runboat-core reasons about.
//!
//! Objects that do not carry runboat's labels are not runboat's: they are
//! skipped (`None`), never a panic.

use runboat_core::contract::{LABEL_BUILD, LABEL_JOB_KIND};
use runboat_core::{DeploymentFacts, JobFacts, JobKind, JobPhase};

use super::slim::{SlimDeployment, SlimJob};

/// The facts of a runboat Deployment; `None` when it has no `runboat/build`
/// label (or no name).
pub(crate) fn deployment_facts(deployment: &SlimDeployment) -> Option<DeploymentFacts> {
    let meta = &deployment.metadata;
    let name = meta.name.clone()?;
    let labels = meta.labels.clone().unwrap_or_default();
    if !labels.contains_key(LABEL_BUILD) {
        tracing::debug!(deployment = name, "skipping a Deployment without the runboat/build label");
        return None;
    }
    let status = deployment.status.as_ref();
    Some(DeploymentFacts {
        name,
        annotations: meta.annotations.clone().unwrap_or_default(),
        labels,
        spec_replicas: deployment.spec.as_ref().and_then(|s| s.replicas),
        status_replicas: status.and_then(|s| s.replicas),
        available_replicas: status.and_then(|s| s.available_replicas),
        deletion_timestamp: meta.deletion_timestamp.as_ref().map(|t| t.0),
        creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0),
        available_since: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Available" && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0),
    })
}

/// The facts of a runboat Job; `None` when it lacks the `runboat/build` or a
/// valid `runboat/job-kind` label.
pub(crate) fn job_facts(job: &SlimJob) -> Option<JobFacts> {
    let meta = &job.metadata;
    let name = meta.name.clone()?;
    let labels = meta.labels.as_ref();
    let build_name = labels.and_then(|l| l.get(LABEL_BUILD)).cloned();
    let kind = labels.and_then(|l| l.get(LABEL_JOB_KIND)).and_then(|k| JobKind::from_label(k));
    let (Some(build_name), Some(kind)) = (build_name, kind) else {
        tracing::debug!(job = name, "skipping a Job without runboat/build and runboat/job-kind");
        return None;
    };
    let phase = job_phase(job);
    let status = job.status.as_ref();
    Some(JobFacts {
        name,
        build_name,
        kind,
        phase,
        deleting: meta.deletion_timestamp.is_some(),
        started: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        finished: match phase {
            JobPhase::Succeeded => status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
            JobPhase::Failed => status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| {
                    c.status == "True" && ["Failed", "FailureTarget"].contains(&c.type_.as_str())
                })
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            _ => None,
        },
    })
}

/// A terminal condition wins (`Complete`/`SuccessCriteriaMet` → succeeded,
/// `Failed`/`FailureTarget` → failed); otherwise the counters in the
/// original's order: active, succeeded, failed.
pub(crate) fn job_phase(job: &SlimJob) -> JobPhase {
    let Some(status) = job.status.as_ref() else { return JobPhase::Pending };
    let condition = |types: &[&str]| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.status == "True" && types.contains(&c.type_.as_str()))
    };
    if condition(&["Complete", "SuccessCriteriaMet"]) {
        return JobPhase::Succeeded;
    }
    if condition(&["Failed", "FailureTarget"]) {
        return JobPhase::Failed;
    }
    if status.active.unwrap_or(0) > 0 {
        JobPhase::Running
    } else if status.succeeded.unwrap_or(0) > 0 {
        JobPhase::Succeeded
    } else if status.failed.unwrap_or(0) > 0 {
        JobPhase::Failed
    } else {
        JobPhase::Pending
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(labels: serde_json::Value, status: serde_json::Value) -> SlimJob {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "b1-initialize", "labels": labels},
            "status": status,
        }))
        .expect("job")
    }

    fn labels() -> serde_json::Value {
        json!({"runboat/build": "b1", "runboat/job-kind": "initialize"})
    }

    #[test]
    fn job_phase_from_counters_and_conditions() {
        let cases = [
            (json!({}), JobPhase::Pending),
            (json!({"active": 1}), JobPhase::Running),
            (json!({"active": 1, "failed": 1}), JobPhase::Running),
            (json!({"succeeded": 1}), JobPhase::Succeeded),
            (json!({"failed": 1}), JobPhase::Failed),
            (
                json!({"active": 1, "conditions": [{"type": "FailureTarget", "status": "True"}]}),
                JobPhase::Failed,
            ),
            (json!({"conditions": [{"type": "Complete", "status": "True"}]}), JobPhase::Succeeded),
            (
                json!({"active": 1, "conditions": [{"type": "Failed", "status": "False"}]}),
                JobPhase::Running,
            ),
        ];
        for (status, phase) in cases {
            let facts = job_facts(&job(labels(), status.clone())).expect("runboat job");
            assert_eq!(facts.phase, phase, "{status}");
            assert_eq!(facts.build_name, "b1");
            assert_eq!(facts.kind, JobKind::Initialize);
            assert!(!facts.deleting);
        }
    }

    /// The run's times: the start, and the end of a succeeded (completion
    /// time) or failed (the terminal condition's transition) Job; none of
    /// a running one's end.
    #[test]
    fn job_facts_carry_the_run_times() {
        let at = |s: &str| Some(s.parse::<jiff::Timestamp>().expect("time"));
        let started = "2026-11-28T09:14:03Z";
        let ended = "2026-11-28T09:19:55Z";
        let cases = [
            (json!({"active": 1, "startTime": started}), at(started), None),
            (
                json!({"succeeded": 1, "startTime": started, "completionTime": ended,
                    "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": ended}]}),
                at(started),
                at(ended),
            ),
            (
                json!({"failed": 1, "startTime": started,
                    "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": ended}]}),
                at(started),
                at(ended),
            ),
            (json!({}), None, None),
        ];
        for (status, start, end) in cases {
            let facts = job_facts(&job(labels(), status.clone())).expect("runboat job");
            assert_eq!((facts.started, facts.finished), (start, end), "{status}");
        }
    }

    #[test]
    fn objects_without_runboat_labels_are_skipped() {
        assert!(job_facts(&job(json!({"runboat/build": "b1"}), json!({}))).is_none());
        assert!(
            job_facts(&job(json!({"runboat/build": "b1", "runboat/job-kind": "x"}), json!({})))
                .is_none()
        );
        assert!(job_facts(&job(json!({"runboat/job-kind": "cleanup"}), json!({}))).is_none());
        let deployment: SlimDeployment =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("deployment");
        assert!(deployment_facts(&deployment).is_none());
    }

    #[test]
    fn deployment_facts_carry_what_the_status_rules_need() {
        let deployment: SlimDeployment = serde_json::from_value(json!({
            "metadata": {
                "name": "b1-odoo",
                "labels": {"runboat/build": "b1"},
                "annotations": {"runboat/init-status": "succeeded"},
                "creationTimestamp": "2024-05-01T12:00:00Z",
                "deletionTimestamp": "2024-05-02T12:00:00Z",
            },
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"replicas": 1, "availableReplicas": 1},
        }))
        .expect("deployment");
        let facts = deployment_facts(&deployment).expect("runboat deployment");
        assert_eq!(facts.name, "b1-odoo");
        assert_eq!(facts.spec_replicas, Some(1));
        assert_eq!(facts.status_replicas, Some(1));
        assert_eq!(facts.available_replicas, Some(1));
        assert_eq!(
            facts.annotations.get("runboat/init-status").map(String::as_str),
            Some("succeeded")
        );
        assert_eq!(
            facts.deletion_timestamp,
            Some("2024-05-02T12:00:00Z".parse().expect("timestamp"))
        );
        assert!(facts.creation_timestamp.is_some());
        assert_eq!(facts.available_since, None, "no conditions");
    }

    /// A start's end: when `Available` last turned true; none while false.
    #[test]
    fn deployment_facts_say_since_when_it_is_available() {
        let with = |status: &str| {
            let deployment: SlimDeployment = serde_json::from_value(json!({
                "metadata": {"name": "b1-odoo", "labels": {"runboat/build": "b1"}},
                "status": {"conditions": [
                    {"type": "Progressing", "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z"},
                    {"type": "Available", "status": status, "lastTransitionTime": "2024-05-01T12:00:42Z"},
                ]},
            }))
            .expect("deployment");
            deployment_facts(&deployment).expect("runboat deployment").available_since
        };
        assert_eq!(with("True"), Some("2024-05-01T12:00:42Z".parse().expect("timestamp")));
        assert_eq!(with("False"), None);
    }
}
