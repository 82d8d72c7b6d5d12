//! Drop-in both ways (issue 16): a namespace exactly as the original runboat
//! leaves it is adopted by runboat-rs, and what runboat-rs creates is what the
//! original can manage.
//!
//! The original's objects are its packaged kubefiles rendered for a build
//! (`tests/original/branch-*.yaml`, see its README), applied with the real
//! `kubectl apply` (so they carry `kubectl.kubernetes.io/last-applied-configuration`),
//! under build names of the original's form (`b` + a UUID4 with hyphens), then
//! moved into each state by the original's own JSON patches.

use std::process::Stdio;

use kubesim::{ControllerConfig, KubeSim};
use runboat_core::{BuildStatus, CommandOutcome, CommitInfo};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::cluster::{BUILD_RESOURCES, NS, WAIT, labelled, leftovers, sim_with};
use crate::lifecycle::{controller, wait_build, wait_status};
use crate::support::kubectl_available;

/// The build name and commit of the fixtures.
const FIXTURE_BUILD: &str = "b5f2c1e0a9d8c7b6a";
const FIXTURE_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Runs kubectl against `sim`, with `stdin` if given; panics with its
/// output when it fails.
async fn kubectl(sim: &KubeSim, args: &[&str], stdin: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, sim.kubeconfig(NS)).expect("kubeconfig");
    let mut child = tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &config)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
    }
    let out = child.wait_with_output().await.expect("kubectl ends");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The original's objects of `mode` for a build named `name` at commit `sha`.
fn original_objects(mode: &str, name: &str, sha: &str) -> String {
    let path = format!("{}/tests/original/branch-{mode}.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .expect("fixture")
        .replace(FIXTURE_BUILD, name)
        .replace(FIXTURE_SHA, sha)
        .replace(&FIXTURE_SHA[..12], &sha[..12])
}

/// A build the original created: its name, commit and Deployment name.
struct OriginalBuild {
    name: String,
    sha: String,
}

impl OriginalBuild {
    fn new(n: u32) -> OriginalBuild {
        OriginalBuild {
            name: format!("b{n:08x}-5f2c-4e0a-9d8c-7b6a5f2c1e0{n:x}"),
            // A letter first: the fixtures write the sha as a plain YAML scalar.
            sha: format!("a{n:039x}"),
        }
    }

    fn deployment(&self) -> String {
        format!("{}-odoo", self.name)
    }

    fn commit(&self) -> CommitInfo {
        CommitInfo::new("oca/mis-builder", "16.0", None, &self.sha).expect("commit")
    }
}

/// `Kind/name` of every object labelled with `build`.
fn objects_of(sim: &kubesim::Handle, build: &str) -> Vec<String> {
    let mut out: Vec<String> = BUILD_RESOURCES
        .iter()
        .filter(|r| !matches!(**r, "pods" | "replicasets" | "jobs"))
        .flat_map(|r| {
            labelled(sim, r, build).into_iter().map(move |o| {
                format!("{r}/{}", o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""))
            })
        })
        .collect();
    out.sort();
    out
}

/// The original's JSON patch of one annotation (`replace`, as it writes
/// them, also when the annotation does not exist yet).
fn patch_annotation(key: &str, value: &str) -> String {
    let path = format!("/metadata/annotations/{}", key.replace('/', "~1"));
    json!([{"op": "replace", "path": path, "value": value}]).to_string()
}

#[tokio::test]
async fn a_namespace_left_by_the_original_is_adopted_and_managed() {
    if !kubectl_available("a_namespace_left_by_the_original_is_adopted_and_managed").await {
        return;
    }
    let sim = sim_with(ControllerConfig {
        // Long enough to see the adopted statuses before the controller
        // moves the builds on.
        job_duration: std::time::Duration::from_millis(800),
        pod_ready_delay: std::time::Duration::ZERO,
        ..ControllerConfig::default()
    })
    .await;
    let h = sim.handle();
    let [todo, stopped, started, failed, undeploying] = [1, 2, 3, 4, 5].map(OriginalBuild::new);
    for b in [&todo, &stopped, &started, &failed, &undeploying] {
        let objects = original_objects("deployment", &b.name, &b.sha);
        kubectl(&sim, &["apply", "-f", "-"], Some(&objects)).await;
    }
    let expected_objects = objects_of(&h, &stopped.name);
    let annotated = |b: &OriginalBuild| {
        h.get("deployments", NS, &b.deployment()).expect("get").and_then(|d| {
            d.pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
                .cloned()
        })
    };
    assert!(annotated(&stopped).is_some(), "applied by kubectl as the original does");
    // The original's JSON patches: init-status, then scaling with last-scaled.
    for (b, init) in [(&stopped, "succeeded"), (&started, "succeeded"), (&failed, "failed")] {
        let patch = patch_annotation("runboat/init-status", init);
        kubectl(&sim, &["patch", "deployment", &b.deployment(), "--type=json", "-p", &patch], None)
            .await;
    }
    let scale = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/metadata/annotations/runboat~1last-scaled", "value": "2026-12-01T10:00:00Z"},
    ])
    .to_string();
    kubectl(
        &sim,
        &["patch", "deployment", &started.deployment(), "--type=json", "-p", &scale],
        None,
    )
    .await;
    kubectl(&sim, &["delete", "deployment", &undeploying.deployment(), "--wait=false"], None).await;

    // Adopted with the original's statuses (initialization paused: a limit
    // of 0, as admins of the original do).
    let handle = controller(&sim, "max_initializing = 0").await;
    wait_status(&handle, &started.name, BuildStatus::Started).await;
    let status = |b: &OriginalBuild| handle.get(&b.name).map(|x| x.status);
    assert_eq!(status(&todo), Some(BuildStatus::Initializing));
    assert_eq!(status(&stopped), Some(BuildStatus::Stopped));
    assert_eq!(status(&failed), Some(BuildStatus::Failed));
    assert!(
        matches!(status(&undeploying), Some(BuildStatus::Undeploying) | None),
        "{:?}",
        status(&undeploying)
    );
    assert_eq!(handle.get(&stopped.name).map(|b| b.commit_info), Some(stopped.commit()));

    // The undeploying build is cleaned up: nothing of it is left.
    wait_build(&handle, &undeploying.name, "gone", |s| s.is_none()).await;
    assert!(
        h.wait_until(WAIT, |h| leftovers(h, &undeploying.name).is_empty()).await,
        "{:?}",
        leftovers(&h, &undeploying.name)
    );

    // start, stop, reset and undeploy work on the original's builds.
    assert_eq!(handle.start(&stopped.name).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &stopped.name, BuildStatus::Started).await;
    assert_eq!(handle.stop(&started.name).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &started.name, BuildStatus::Stopped).await;
    assert_eq!(handle.reset(&failed.name).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &failed.name, BuildStatus::Initializing).await;
    // After start, stop and reset, each build has exactly the original's
    // objects: none renamed, none added twice.
    for b in [&stopped, &started, &failed] {
        assert_eq!(
            objects_of(&h, &b.name),
            expected_objects.iter().map(|o| o.replace(&stopped.name, &b.name)).collect::<Vec<_>>(),
            "{}",
            b.name
        );
    }
    for b in [&todo, &stopped, &started, &failed] {
        assert_eq!(handle.undeploy(&b.name).await, Ok(CommandOutcome::Done));
    }
    for b in [&todo, &stopped, &started, &failed] {
        wait_build(&handle, &b.name, "gone", |s| s.is_none()).await;
        assert!(
            h.wait_until(WAIT, |h| leftovers(h, &b.name).is_empty()).await,
            "{:?}",
            leftovers(&h, &b.name)
        );
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn what_runboat_creates_the_original_can_manage() {
    if !kubectl_available("what_runboat_creates_the_original_can_manage").await {
        return;
    }
    let sim = sim_with(ControllerConfig::instant()).await;
    let h = sim.handle();
    let handle = controller(&sim, "").await;
    let c = CommitInfo::new("oca/mis-builder", "16.0", Some(7), &format!("{:040x}", 77))
        .expect("commit");
    let name = c.build_name();
    assert_eq!(handle.deploy_commit(c).await, Ok(CommandOutcome::Done));
    wait_status(&handle, &name, BuildStatus::Stopped).await;
    // The controller steps aside: from here on, the original manages it.
    handle.shutdown().await;
    let deployment = labelled(&h, "deployments", &name)
        .into_iter()
        .next()
        .and_then(|d| d.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned))
        .expect("deployment");

    // The original's start: replace replicas and last-scaled (which does
    // not exist yet), then its init-status writes.
    let start = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/metadata/annotations/runboat~1last-scaled", "value": "2026-12-01T10:00:00Z"},
    ])
    .to_string();
    kubectl(&sim, &["patch", "deployment", &deployment, "--type=json", "-p", &start], None).await;
    let init = patch_annotation("runboat/init-status", "todo");
    kubectl(&sim, &["patch", "deployment", &deployment, "--type=json", "-p", &init], None).await;
    let d = h.get("deployments", NS, &deployment).expect("get").expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(d.pointer("/metadata/annotations/runboat~1init-status"), Some(&json!("todo")));

    // Its undeploy: delete, remove the finalizer, then `kubectl delete` of
    // its resource types by label removes everything of the build.
    kubectl(&sim, &["delete", "deployment", &deployment, "--wait=false"], None).await;
    let unfinalize = json!([{"op": "remove", "path": "/metadata/finalizers"}]).to_string();
    kubectl(&sim, &["patch", "deployment", &deployment, "--type=json", "-p", &unfinalize], None)
        .await;
    let selector = format!("runboat/build={name}");
    kubectl(
        &sim,
        &["delete", "deployment,service,ingress,configmap,secret,pvc,job", "-l", &selector],
        None,
    )
    .await;
    assert!(
        h.wait_until(WAIT, |h| leftovers(h, &name).is_empty()).await,
        "{:?}",
        leftovers(&h, &name)
    );
}
