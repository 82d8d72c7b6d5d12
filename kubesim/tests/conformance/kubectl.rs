//! kubectl against kubesim: get, describe, delete and apply --server-side.
//! Runs only when `kubectl` is on PATH (CI has it).

use std::process::Command;

use crate::{WAIT, sim};

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("joined")
        .expect("kubectl runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {runboat/build: b1}
spec:
  replicas: 1
  selector: {matchLabels: {runboat/build: b1}}
  template:
    metadata: {labels: {runboat/build: b1}}
    spec:
      containers: [{name: odoo, image: "odoo:17"}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: init, labels: {runboat/build: b1}}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {runboat/build: b1, runboat/job-kind: initialize}}
    spec:
      restartPolicy: Never
      containers: [{name: init, image: "odoo:17"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_describe_delete_and_server_side_apply() {
    if !kubectl_available() {
        return;
    }
    let sim = sim().await;
    let dir = std::env::temp_dir().join(format!("kubesim-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig("ns")).expect("kubeconfig written");
    let manifest = dir.join("build.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest written");
    let manifest_path = manifest.to_string_lossy().to_string();

    let (ok, out) =
        kubectl(&kubeconfig, &["apply", "--server-side", "-f", &manifest_path, "-n", "ns"]).await;
    assert!(ok, "apply: {out}");
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    // Applying again is idempotent.
    let (ok, out) =
        kubectl(&kubeconfig, &["apply", "--server-side", "-f", &manifest_path, "-n", "ns"]).await;
    assert!(ok, "re-apply: {out}");
    assert!(
        sim.wait_until(WAIT, |h| h.list("pods", Some("ns")).map(|p| p.len()).unwrap_or(0) == 2)
            .await
    );

    let (ok, out) = kubectl(&kubeconfig, &["get", "deployments,jobs,pods", "-n", "ns"]).await;
    assert!(ok, "get: {out}");
    assert!(
        out.contains("deployment.apps/web")
            && out.contains("job.batch/init")
            && out.contains("pod/web-"),
        "{out}"
    );

    let (ok, out) = kubectl(&kubeconfig, &["get", "all", "-n", "ns"]).await;
    assert!(ok && out.contains("replicaset.apps/web-"), "get all: {out}");
    let (ok, out) =
        kubectl(&kubeconfig, &["rollout", "status", "deployment/web", "-n", "ns", "--timeout=10s"])
            .await;
    assert!(ok && out.contains("successfully rolled out"), "rollout status: {out}");
    let (ok, out) = kubectl(&kubeconfig, &["logs", "job/init", "-n", "ns"]).await;
    assert!(ok && out.contains("kubesim: job init"), "logs: {out}");

    let (ok, out) = kubectl(&kubeconfig, &["describe", "deployment", "web", "-n", "ns"]).await;
    assert!(ok, "describe: {out}");
    assert!(out.contains("Name:") && out.contains("web") && out.contains("Replicas:"), "{out}");
    let (ok, out) =
        kubectl(&kubeconfig, &["describe", "pods", "-n", "ns", "-l", "runboat/build=b1"]).await;
    assert!(ok, "describe pods: {out}");

    let (ok, out) = kubectl(&kubeconfig, &["delete", "deployment", "web", "-n", "ns"]).await;
    assert!(ok, "delete: {out}");
    assert!(out.contains("deleted"), "{out}");
    let (ok, out) = kubectl(&kubeconfig, &["get", "deployment", "web", "-n", "ns"]).await;
    assert!(!ok && out.contains("NotFound"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
