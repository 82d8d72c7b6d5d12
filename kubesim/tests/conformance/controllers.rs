//! The simulated controllers: deployments become available, jobs succeed
//! or fail as scripted with their logs, the garbage collector follows
//! owner references.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kubesim::{ControllerConfig, JobRule, JobScript};
use serde_json::json;

use crate::{WAIT, deployment, job, sim, sim_with, status_of};

async fn pods_of(api: &Api<Pod>, build: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("runboat/build={build}")))
        .await
        .expect("pods")
        .items
}

#[tokio::test]
async fn deployments_become_available_and_follow_replicas() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    let d = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .expect("in time")
    .expect("condition")
    .expect("exists");
    let status = d.status.expect("status");
    assert_eq!(
        (status.replicas, status.ready_replicas, status.available_replicas),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(status.observed_generation, Some(1));
    let pods: Api<Pod> = Api::namespaced(sim.client(), "ns");
    let pod = pods_of(&pods, "b1").await.pop().expect("a pod");
    let owner = &pod.metadata.owner_references.expect("owned")[0];
    assert_eq!(owner.kind, "ReplicaSet");
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    // Scale to zero: pods go, status follows.
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .expect("scaled");
    let ok = sim
        .wait_until(WAIT, |h| {
            let d = h.get("deployments", "ns", "web").ok().flatten().unwrap_or_default();
            d.pointer("/status/observedGeneration") == Some(&json!(2))
                && d.pointer("/status/replicas").is_none()
        })
        .await;
    assert!(ok, "deployment scaled down");
    assert!(pods_of(&pods, "b1").await.is_empty());
}

#[tokio::test]
async fn metadata_only_changes_do_not_cost_a_deployment_reconcile() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    let completed = |name: &'static str| {
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), name, conditions::is_deployment_completed()),
        )
    };
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    completed("web").await.expect("in time").expect("condition");
    let before = sim.handle().deployment_reconciles();
    const PATCHES: u64 = 20;
    for i in 0..PATCHES {
        let patch = json!({"metadata": {"annotations": {"runboat/last-scaled": i.to_string()}}});
        api.patch("web", &PatchParams::default(), &Patch::Merge(patch)).await.expect("patched");
    }
    // The controllers handle events in order: once a Deployment created
    // after the patches is complete, the patches were all seen.
    api.create(&PostParams::default(), &deployment("marker", "b2")).await.expect("created");
    completed("marker").await.expect("in time").expect("condition");
    let reconciles = sim.handle().deployment_reconciles() - before;
    assert!(
        reconciles < PATCHES / 2,
        "{reconciles} reconciles for {PATCHES} annotation patches and one new Deployment"
    );
    // The status is still right.
    let d = api.get("web").await.expect("web");
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(1));
}

#[tokio::test]
async fn a_controller_switched_back_on_catches_up() {
    let sim = sim().await;
    // Jobs stay on, so the controller loop keeps running meanwhile.
    sim.handle().update_controllers(|c| c.deployments = false);
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    // A Job created after the Deployment completes once the controllers
    // have seen both.
    let jobs: Api<Job> = Api::namespaced(sim.client(), "ns");
    jobs.create(&PostParams::default(), &job("j", "b1", "initialize")).await.expect("job");
    tokio::time::timeout(WAIT, await_condition(jobs.clone(), "j", conditions::is_job_completed()))
        .await
        .expect("in time")
        .expect("condition");
    let d = api.get("web").await.expect("web");
    assert_eq!(d.status, None, "the deployment controller is off");
    sim.handle().update_controllers(|c| c.deployments = true);
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .expect("the Deployment completes once its controller is back")
    .expect("condition");
}

#[tokio::test]
async fn deployment_readiness_waits_for_the_configured_delay() {
    let sim = sim_with(ControllerConfig {
        pod_ready_delay: Duration::from_millis(400),
        ..ControllerConfig::instant()
    })
    .await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    let started = std::time::Instant::now();
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .expect("in time")
    .expect("condition");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn jobs_succeed_by_default_with_a_log() {
    let sim = sim().await;
    let api: Api<Job> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &job("init", "b1", "initialize")).await.expect("created");
    let j = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "init", conditions::is_job_completed()),
    )
    .await
    .expect("in time")
    .expect("condition")
    .expect("exists");
    let status = j.status.expect("status");
    assert_eq!(status.succeeded, Some(1));
    let types: Vec<String> =
        status.conditions.unwrap_or_default().into_iter().map(|c| c.type_).collect();
    assert_eq!(types, vec!["SuccessCriteriaMet", "Complete"]);
    let pods: Api<Pod> = Api::namespaced(sim.client(), "ns");
    let pod = pods
        .list(&ListParams::default().labels("runboat/job-kind=initialize"))
        .await
        .expect("pods")
        .items
        .pop()
        .expect("pod");
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Succeeded"));
    let name = pod.metadata.name.expect("name");
    let log = pods
        .logs(&name, &LogParams { container: Some("init".into()), ..LogParams::default() })
        .await
        .expect("log");
    assert!(log.contains("completed successfully"), "{log}");
    let tail = pods
        .logs(&name, &LogParams { tail_lines: Some(1), ..LogParams::default() })
        .await
        .expect("log");
    assert_eq!(tail.lines().count(), 1);
    let err = status_of(
        pods.logs(&name, &LogParams { container: Some("nope".into()), ..LogParams::default() })
            .await,
    );
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn scripted_jobs_fail_with_their_log() {
    let sim = sim().await;
    sim.add_job_rule(JobRule::by_label(
        "runboat/build",
        "bad",
        JobScript::fail().with_log("Traceback: boom\n"),
    ));
    let api: Api<Job> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &job("init", "bad", "initialize")).await.expect("created");
    let failed = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    };
    let j = tokio::time::timeout(WAIT, await_condition(api.clone(), "init", failed))
        .await
        .expect("in time")
        .expect("ok")
        .expect("job");
    let status = j.status.expect("status");
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.active, None);
    let pods: Api<Pod> = Api::namespaced(sim.client(), "ns");
    let pod = pods_of(&pods, "bad").await.pop().expect("pod");
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"));
    let log = pods
        .logs(pod.metadata.name.as_deref().expect("name"), &LogParams::default())
        .await
        .expect("log");
    assert_eq!(log, "Traceback: boom\n");

    // A hook decides before the rules.
    sim.set_job_hook(std::sync::Arc::new(|j: &serde_json::Value| {
        (j["metadata"]["name"] == "hooked").then(|| JobScript::succeed().with_log("from hook\n"))
    }));
    api.create(&PostParams::default(), &job("hooked", "bad", "initialize")).await.expect("created");
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "hooked", conditions::is_job_completed()),
    )
    .await
    .expect("in time")
    .expect("ok");
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_in_background_and_foreground() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    let pods: Api<Pod> = Api::namespaced(sim.client(), "ns");
    let rs: Api<ReplicaSet> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("bg", "b1")).await.expect("created");
    api.create(&PostParams::default(), &deployment("fg", "b2")).await.expect("created");
    assert!(
        sim.wait_until(WAIT, |h| h.list("pods", Some("ns")).map(|p| p.len()).unwrap_or(0) == 2)
            .await
    );

    api.delete("bg", &DeleteParams::background()).await.expect("deleted");
    assert!(
        sim.wait_until(WAIT, |h| h.list("pods", Some("ns")).map(|p| p.len()).unwrap_or(0) == 1)
            .await
    );
    assert!(pods_of(&pods, "b1").await.is_empty());

    let held = api
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("deleted")
        .left()
        .expect("held while dependents exist");
    assert!(
        held.metadata.finalizers.unwrap_or_default().contains(&"foregroundDeletion".to_string())
    );
    let uid = held.metadata.uid.expect("uid");
    tokio::time::timeout(WAIT, await_condition(api.clone(), "fg", conditions::is_deleted(&uid)))
        .await
        .expect("in time")
        .expect("ok");
    assert!(pods_of(&pods, "b2").await.is_empty());
    assert!(rs.list(&ListParams::default()).await.expect("rs").items.is_empty());
}

#[tokio::test]
async fn jobs_are_orphaned_by_default_like_batch_v1() {
    let sim = sim().await;
    let api: Api<Job> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &job("j", "b1", "cleanup")).await.expect("created");
    tokio::time::timeout(WAIT, await_condition(api.clone(), "j", conditions::is_job_completed()))
        .await
        .expect("in time")
        .expect("ok");
    api.delete("j", &DeleteParams::default()).await.expect("deleted");
    let pods: Api<Pod> = Api::namespaced(sim.client(), "ns");
    let left = pods_of(&pods, "b1").await;
    assert_eq!(left.len(), 1);
    assert!(left[0].metadata.owner_references.as_ref().is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn paused_controllers_do_nothing_until_resumed() {
    let sim = sim().await;
    sim.pause_controllers();
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    assert!(
        !sim.wait_until(Duration::from_millis(300), |h| h
            .list("pods", Some("ns"))
            .map(|p| !p.is_empty())
            .unwrap_or(false))
            .await
    );
    sim.resume_controllers();
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .expect("in time")
    .expect("ok");
}

#[tokio::test]
async fn pods_terminate_gracefully_when_configured() {
    let sim = sim_with(ControllerConfig {
        pod_termination_delay: Duration::from_millis(300),
        ..ControllerConfig::instant()
    })
    .await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .expect("in time")
    .expect("ok");
    let pods: Api<Pod> = Api::namespaced(sim.client(), "ns");
    let name = pods_of(&pods, "b1").await.pop().and_then(|p| p.metadata.name).expect("pod");
    let terminating = pods
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleted")
        .left()
        .expect("still there");
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert!(pods.get(&name).await.expect("terminating pod").metadata.deletion_timestamp.is_some());
    let uid = terminating.metadata.uid.expect("uid");
    tokio::time::timeout(WAIT, await_condition(pods.clone(), &name, conditions::is_deleted(&uid)))
        .await
        .expect("in time")
        .expect("ok");
    // The ReplicaSet replaced it; gracePeriodSeconds=0 deletes at once.
    assert!(
        sim.wait_until(WAIT, |h| h.list("pods", Some("ns")).map(|p| p.len()).unwrap_or(0) == 1)
            .await
    );
    let other =
        pods_of(&pods, "b1").await.pop().and_then(|p| p.metadata.name).expect("replacement pod");
    assert_ne!(other, name);
    pods.delete(&other, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .expect("deleted")
        .right()
        .expect("gone at once");
}

#[tokio::test]
async fn active_deadline_fails_a_job_that_runs_too_long() {
    let sim = sim().await;
    sim.add_job_rule(JobRule::by_name(
        "^slow$",
        JobScript::succeed().with_duration(Duration::from_secs(3600)),
    ));
    let api: Api<Job> = Api::namespaced(sim.client(), "ns");
    let mut j = job("slow", "b1", "initialize");
    j.spec.as_mut().expect("spec").active_deadline_seconds = Some(1);
    api.create(&PostParams::default(), &j).await.expect("created");
    let failed = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    };
    let j = tokio::time::timeout(WAIT, await_condition(api.clone(), "slow", failed))
        .await
        .expect("in time")
        .expect("ok")
        .expect("job");
    let reasons: Vec<String> = j
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.reason)
        .collect();
    assert_eq!(reasons, vec!["DeadlineExceeded", "DeadlineExceeded"]);
}

#[tokio::test]
async fn controllers_record_events_for_describe() {
    let sim = sim().await;
    let api: Api<Job> = Api::namespaced(sim.client(), "ns");
    let created = api
        .create(&PostParams::default(), &job("init", "b1", "initialize"))
        .await
        .expect("created");
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "init", conditions::is_job_completed()),
    )
    .await
    .expect("in time")
    .expect("ok");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sim.client(), "ns");
    let uid = created.metadata.uid.expect("uid");
    let selector =
        format!("involvedObject.name=init,involvedObject.uid={uid},involvedObject.kind=Job");
    let reasons: Vec<String> = events
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, vec!["SuccessfulCreate", "Completed"]);
}

#[tokio::test]
async fn the_job_history_records_each_jobs_life() {
    let sim = sim().await;
    let api: Api<Job> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &job("done", "b1", "initialize")).await.expect("created");
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "done", conditions::is_job_completed()),
    )
    .await
    .expect("in time")
    .expect("condition");
    // A job deleted while running ends at its deletion.
    sim.handle().add_job_rule(JobRule::by_label(
        "runboat/build",
        "b2",
        JobScript::succeed().with_duration(Duration::from_secs(600)),
    ));
    api.create(&PostParams::default(), &job("hung", "b2", "initialize")).await.expect("created");
    let h = sim.handle();
    let running =
        |h: &kubesim::Handle| h.job_history().iter().any(|r| r.name == "hung" && r.ended.is_none());
    assert!(h.wait_until(WAIT, running).await);
    api.delete("hung", &DeleteParams::background()).await.expect("deleted");
    let ended = |h: &kubesim::Handle| h.job_history().iter().all(|r| r.ended.is_some());
    assert!(h.wait_until(WAIT, ended).await, "{:?}", h.job_history());
    let history = h.job_history();
    let names: Vec<&str> = history.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["done", "hung"]);
    assert_eq!(history[0].labels.get("runboat/job-kind").map(String::as_str), Some("initialize"));
    assert_eq!(history[1].labels.get("runboat/build").map(String::as_str), Some("b2"));
    for r in &history {
        assert!(r.ended.expect("ended") >= r.created);
    }
}
