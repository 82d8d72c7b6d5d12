//! kubectl against kubesim: get, describe, delete and apply --server-side;
//! with `RUNBOAT_SLOW_TESTS=1`, the generators (`create`, `run`, which send
//! protobuf), client-side and server-side apply, the three patch types,
//! annotate, label, scale, logs, `get -w`, deletes with finalizers and
//! selectors, and `wait --for=delete`. Runs only when `kubectl` is on PATH;
//! in CI (`CI` set) a missing kubectl fails the slow tests.

use std::process::Command;

use serde_json::json;

use crate::{WAIT, sim};

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    kubectl_stdin(kubeconfig, args, "").await
}

async fn kubectl_stdin(kubeconfig: &std::path::Path, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let input = input.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })
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
      containers: [{name: odoo, image: "odoo:17", ports: [{containerPort: 8069}]}]
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
    // Applying again is idempotent (container ports merge by containerPort).
    let (ok, out) =
        kubectl(&kubeconfig, &["apply", "--server-side", "-f", &manifest_path, "-n", "ns"]).await;
    assert!(ok, "re-apply: {out}");
    let web = sim.handle().get("deployments", "ns", "web").ok().flatten().expect("deployment");
    assert_eq!(
        web.pointer("/spec/template/spec/containers/0/ports"),
        Some(&serde_json::json!([{"containerPort": 8069, "protocol": "TCP"}])),
        "{web}"
    );
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

/// A kubeconfig for a fresh kubesim, when kubectl is there and the slow
/// tests run.
struct Kubectl {
    sim: kubesim::KubeSim,
    dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    async fn start(name: &str) -> Option<Kubectl> {
        if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() != Ok("1") {
            return None;
        }
        if !kubectl_available() {
            crate::python::missing_tool("kubectl is not on PATH");
            return None;
        }
        let sim = sim().await;
        let dir = std::env::temp_dir().join(format!("kubesim-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig("ns")).expect("kubeconfig written");
        Some(Kubectl { sim, dir, kubeconfig })
    }

    /// Runs kubectl and returns its output; fails the test if it fails.
    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = kubectl(&self.kubeconfig, args).await;
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }

    async fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let (ok, out) = kubectl_stdin(&self.kubeconfig, args, input).await;
        assert!(ok, "kubectl {} <<<{input}: {out}", args.join(" "));
        out
    }

    async fn fails(&self, args: &[&str]) -> String {
        let (ok, out) = kubectl(&self.kubeconfig, args).await;
        assert!(!ok, "kubectl {} should fail: {out}", args.join(" "));
        out
    }

    fn get(&self, res: &str, name: &str) -> Option<serde_json::Value> {
        self.sim.handle().get(res, "ns", name).ok().flatten()
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// kubectl's generators send built-in kinds as protobuf
/// (`application/vnd.kubernetes.protobuf`); kube-apiserver reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_and_run() {
    let Some(k) = Kubectl::start("generators").await else { return };
    let out = k.ok(&["create", "namespace", "made-by-kubectl"]).await;
    assert!(out.contains("namespace/made-by-kubectl created"), "{out}");
    let out = k.ok(&["create", "configmap", "cm", "--from-literal=a=b", "-n", "ns"]).await;
    assert!(out.contains("configmap/cm created"), "{out}");
    let out = k.ok(&["create", "secret", "generic", "sec", "--from-literal=p=q", "-n", "ns"]).await;
    assert!(out.contains("secret/sec created"), "{out}");
    let out =
        k.ok(&["create", "job", "j", "--image=busybox", "-n", "ns", "--", "echo", "hi"]).await;
    assert!(out.contains("job.batch/j created"), "{out}");
    let out = k
        .ok(&[
            "run",
            "p",
            "--image=nginx",
            "--port=80",
            "--env=A=1",
            "--labels=app=web",
            "-n",
            "ns",
        ])
        .await;
    assert!(out.contains("pod/p created"), "{out}");
    let out =
        k.ok(&["create", "deployment", "d", "--image=nginx", "--replicas=0", "-n", "ns"]).await;
    assert!(out.contains("deployment.apps/d created"), "{out}");
    let out = k
        .ok(&[
            "create",
            "ingress",
            "ing",
            "--rule=b1.example.com/=svc:8069",
            "--class=nginx",
            "-n",
            "ns",
        ])
        .await;
    assert!(out.contains("ingress.networking.k8s.io/ing created"), "{out}");

    // What the server stored is what was sent.
    let h = k.sim.handle();
    assert!(h.get("namespaces", "", "made-by-kubectl").ok().flatten().is_some());
    assert_eq!(k.get("configmaps", "cm").expect("configmap")["data"], json!({"a": "b"}));
    assert_eq!(k.get("secrets", "sec").expect("secret")["data"], json!({"p": "cQ=="}));
    let job = k.get("jobs", "j").expect("job");
    assert_eq!(
        job.pointer("/spec/template/spec/containers/0/command"),
        Some(&json!(["echo", "hi"])),
        "{job}"
    );
    assert_eq!(job.pointer("/spec/template/spec/restartPolicy"), Some(&json!("Never")));
    let pod = k.get("pods", "p").expect("pod");
    assert_eq!(pod.pointer("/metadata/labels"), Some(&json!({"app": "web"})));
    assert_eq!(
        pod.pointer("/spec/containers/0"),
        Some(&json!({
            "name": "p", "image": "nginx", "env": [{"name": "A", "value": "1"}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
            "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File"
        })),
        "{pod}"
    );
    let deployment = k.get("deployments", "d").expect("deployment");
    assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(0)), "an explicit 0 is kept");
    // IngressRule embeds IngressRuleValue inline: `http` is the rule's field.
    let ingress = k.get("ingresses", "ing").expect("ingress");
    assert_eq!(
        ingress.pointer("/spec/rules/0"),
        Some(&json!({"host": "b1.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Exact",
            "backend": {"service": {"name": "svc", "port": {"number": 8069}}}
        }]}})),
        "{ingress}"
    );
}

const CM_V1: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: applied, labels: {a: '1'}}
data: {keep: '1', drop: '2'}
";
const CM_V2: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: applied, labels: {a: '1'}}
data: {keep: '1', added: '3'}
";

/// Client-side apply: the last-applied annotation and the three-way merge
/// (a field dropped from the file is removed, a field set by someone else
/// is kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply() {
    let Some(k) = Kubectl::start("csa").await else { return };
    let out = k.ok_stdin(&["apply", "-n", "ns", "-f", "-"], CM_V1).await;
    assert!(out.contains("configmap/applied created"), "{out}");
    let out = k.ok_stdin(&["apply", "-n", "ns", "-f", "-"], CM_V1).await;
    assert!(out.contains("configmap/applied unchanged"), "{out}");
    let cm = k.get("configmaps", "applied").expect("configmap");
    let last = cm
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(serde_json::Value::as_str)
        .expect("last-applied annotation");
    assert!(last.contains("\"drop\":\"2\""), "{last}");
    k.ok(&["label", "configmap", "applied", "other=x", "-n", "ns"]).await;
    let out = k.ok_stdin(&["apply", "-n", "ns", "-f", "-"], CM_V2).await;
    assert!(out.contains("configmap/applied configured"), "{out}");
    let cm = k.get("configmaps", "applied").expect("configmap");
    assert_eq!(cm["data"], json!({"keep": "1", "added": "3"}), "three-way merge: {cm}");
    assert_eq!(cm["metadata"]["labels"], json!({"a": "1", "other": "x"}), "{cm}");
}

/// JSON, merge and strategic merge patches, annotate, label and scale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_patch_annotate_label_scale_logs() {
    let Some(k) = Kubectl::start("patch").await else { return };
    let manifest = k.dir.join("build.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest written");
    k.ok(&["apply", "-f", &manifest.to_string_lossy(), "-n", "ns"]).await;

    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "ns",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/metadata/annotations/runboat~1last-scaled","value":"t1"}]"#,
    ])
    .await;
    let d = k.get("deployments", "web").expect("deployment");
    assert_eq!(d.pointer("/metadata/annotations/runboat~1last-scaled"), Some(&json!("t1")));
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "ns",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
    ])
    .await;
    // Strategic: the container list merges by name (a merge patch would replace it).
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "ns",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"mail","image":"mailhog"}]}}}}"#,
    ])
    .await;
    let d = k.get("deployments", "web").expect("deployment");
    assert_eq!(d.pointer("/metadata/labels/merged"), Some(&json!("yes")));
    let names: Vec<&str> = d
        .pointer("/spec/template/spec/containers")
        .and_then(serde_json::Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["odoo", "mail"], "{d}");

    k.ok(&["annotate", "deployment", "web", "runboat/init-status=todo", "-n", "ns"]).await;
    k.ok(&["label", "deployment", "web", "runboat/extra=1", "-n", "ns"]).await;
    let out =
        k.fails(&["annotate", "deployment", "web", "runboat/init-status=again", "-n", "ns"]).await;
    assert!(
        out.contains("--overwrite"),
        "annotate refuses to overwrite without --overwrite: {out}"
    );
    k.ok(&["annotate", "deployment", "web", "runboat/init-status-", "-n", "ns"]).await;
    let d = k.get("deployments", "web").expect("deployment");
    assert!(d.pointer("/metadata/annotations/runboat~1init-status").is_none(), "{d}");
    assert_eq!(d.pointer("/metadata/labels/runboat~1extra"), Some(&json!("1")));

    let out = k.ok(&["scale", "deployment", "web", "--replicas=2", "-n", "ns"]).await;
    assert!(out.contains("scaled"), "{out}");
    let out = k.ok(&["rollout", "status", "deployment/web", "-n", "ns", "--timeout=10s"]).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(
        k.sim
            .wait_until(WAIT, |h| h
                .list("pods", Some("ns"))
                .map(|p| p
                    .iter()
                    .filter(|p| p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("web-")))
                    .count())
                .unwrap_or(0)
                == 2)
            .await,
        "two pods after scale"
    );
    assert!(
        k.sim
            .wait_until(WAIT, |h| h
                .get("jobs", "ns", "init")
                .ok()
                .flatten()
                .is_some_and(|j| j["status"]["succeeded"] == 1))
            .await
    );
    let out = k.ok(&["logs", "job/init", "-n", "ns"]).await;
    assert!(out.contains("kubesim: job init"), "{out}");
}

/// `get -w` prints a change; delete with and without finalizers, by label,
/// and `wait --for=delete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_delete_and_wait() {
    use std::io::BufRead;
    let Some(k) = Kubectl::start("watch").await else { return };
    k.ok(&["create", "configmap", "w", "--from-literal=k=v1", "-n", "ns"]).await;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["get", "configmap", "w", "-n", "ns", "-w", "-o", "jsonpath={.data.k}{\"\\n\"}"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(WAIT);
    assert_eq!(first.as_deref(), Ok("v1"), "get -w prints the object first");
    k.ok(&["patch", "configmap", "w", "-n", "ns", "--type=merge", "-p", r#"{"data":{"k":"v2"}}"#])
        .await;
    let second = rx.recv_timeout(WAIT);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(second.as_deref(), Ok("v2"), "get -w prints the change");

    // Without finalizers: gone at once.
    let out = k.ok(&["delete", "configmap", "w", "-n", "ns"]).await;
    assert!(out.contains("configmap \"w\" deleted"), "{out}");
    assert!(k.get("configmaps", "w").is_none());

    // With a finalizer: kept with a deletionTimestamp until it is removed;
    // `wait --for=delete` returns when it goes.
    k.ok_stdin(
        &["create", "-n", "ns", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [runboat/cleanup]}\n",
    )
    .await;
    let out = k.ok(&["delete", "configmap", "held", "-n", "ns", "--wait=false"]).await;
    assert!(out.contains("deleted"), "{out}");
    let held = k.get("configmaps", "held").expect("held by its finalizer");
    assert!(held.pointer("/metadata/deletionTimestamp").is_some(), "{held}");
    let kubeconfig = k.kubeconfig.clone();
    let waiter = tokio::spawn(async move {
        kubectl(
            &kubeconfig,
            &["wait", "--for=delete", "configmap/held", "-n", "ns", "--timeout=20s"],
        )
        .await
    });
    // Removing the finalizer before the waiter starts watching is fine: it then finds nothing.
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "ns",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let (ok, out) = waiter.await.expect("joined");
    assert!(ok, "wait --for=delete: {out}");
    assert!(k.get("configmaps", "held").is_none());

    // By label selector.
    for (name, sel) in [("a", "yes"), ("b", "yes"), ("c", "no")] {
        k.ok(&["create", "configmap", name, "-n", "ns"]).await;
        k.ok(&["label", "configmap", name, &format!("sel={sel}"), "-n", "ns"]).await;
    }
    let out = k.ok(&["delete", "configmap", "-l", "sel=yes", "-n", "ns"]).await;
    assert!(out.contains("\"a\" deleted") && out.contains("\"b\" deleted"), "{out}");
    assert!(k.get("configmaps", "a").is_none() && k.get("configmaps", "b").is_none());
    assert!(k.get("configmaps", "c").is_some());
}

const SSA_CM: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: owned}
data: {k: '1', shared: 'same'}
";

/// Server-side apply with field ownership: managedFields as the API server
/// records them, a conflict between two field managers (409, kubectl's
/// conflict message) and `--force-conflicts` moving the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_conflicts() {
    let Some(k) = Kubectl::start("ssa").await else { return };
    let apply = |manager: &'static str, force: bool, config: String| {
        let kubeconfig = k.kubeconfig.clone();
        async move {
            let mut args =
                vec!["apply", "--server-side", "--field-manager", manager, "-n", "ns", "-f", "-"];
            if force {
                args.push("--force-conflicts");
            }
            kubectl_stdin(&kubeconfig, &args, &config).await
        }
    };
    let (ok, out) = apply("alice", false, SSA_CM.into()).await;
    assert!(ok && out.contains("configmap/owned serverside-applied"), "{out}");
    let (ok, out) = apply("alice", false, SSA_CM.into()).await;
    assert!(ok, "applying again is idempotent: {out}");
    let cm = k.get("configmaps", "owned").expect("configmap");
    let rv = cm["metadata"]["resourceVersion"].clone();
    let managed = &cm["metadata"]["managedFields"];
    assert_eq!(managed[0]["manager"], "alice", "{cm}");
    assert_eq!(managed[0]["operation"], "Apply");
    assert_eq!(managed[0]["fieldsType"], "FieldsV1");
    assert_eq!(managed[0]["fieldsV1"], json!({"f:data": {"f:k": {}, "f:shared": {}}}));

    // bob changes k: a conflict with alice; the same value of `shared` is not one.
    let bob = SSA_CM.replace("k: '1'", "k: '2'");
    let (ok, out) = apply("bob", false, bob.clone()).await;
    assert!(!ok, "a conflicting apply fails: {out}");
    assert!(
        out.contains(r#"Apply failed with 1 conflict: conflict with "alice": .data.k"#),
        "kube-apiserver's conflict message: {out}"
    );
    let cm = k.get("configmaps", "owned").expect("configmap");
    assert_eq!(cm["data"]["k"], "1");
    assert_eq!(cm["metadata"]["resourceVersion"], rv, "a no-op re-apply does not write");

    let (ok, out) = apply("bob", true, bob).await;
    assert!(ok, "--force-conflicts: {out}");
    let cm = k.get("configmaps", "owned").expect("configmap");
    assert_eq!(cm["data"]["k"], "2");
    let fields_of = |manager: &str| {
        cm["metadata"]["managedFields"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["manager"] == manager))
            .map(|e| e["fieldsV1"].clone())
    };
    assert_eq!(fields_of("alice"), Some(json!({"f:data": {"f:shared": {}}})), "{cm}");
    assert_eq!(fields_of("bob"), Some(json!({"f:data": {"f:k": {}, "f:shared": {}}})), "{cm}");

    // An update (kubectl patch) takes the field; a later apply of another
    // value conflicts with the updater, named with its apiVersion and time.
    k.ok(&[
        "patch",
        "configmap",
        "owned",
        "-n",
        "ns",
        "--type=merge",
        "-p",
        r#"{"data":{"k":"3"}}"#,
    ])
    .await;
    let (ok, out) = apply("bob", false, SSA_CM.into()).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"conflict with "kubectl-patch" using v1 at "#) && out.contains(".data.k"),
        "{out}"
    );
    let out = k
        .ok(&["get", "configmap", "owned", "-n", "ns", "-o", "json", "--show-managed-fields"])
        .await;
    assert!(out.contains("\"manager\": \"kubectl-patch\""), "get shows managedFields: {out}");
}
