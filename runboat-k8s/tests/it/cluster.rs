//! `KubeCluster` against kubesim: every `Cluster` method, and the watch
//! mapping with and without faults.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kubesim::{ControllerConfig, FailRule, JobRule, JobScript, KubeSim};
use runboat_core::{
    Cluster, ClusterError, ClusterEvent, CommitInfo, DeploymentFacts, InitStatus, JobKind,
    JobPhase, KubefilesMode, LogSource, LogTail, Settings,
};
use runboat_k8s::{Error, KubeCluster};
use serde_json::{Value, json};

pub(crate) const NS: &str = "runboat-builds";
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn settings_toml(extra: &str, rule_extra: &str) -> String {
    format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "{NS}"
build_domain = "runboat.example.com"
{extra}

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" {rule_extra} }}]
"#
    )
}

pub(crate) fn settings(extra: &str) -> Arc<Settings> {
    Arc::new(Settings::from_toml_str(&settings_toml(extra, "")).expect("settings"))
}

pub(crate) async fn sim_with(controllers: ControllerConfig) -> KubeSim {
    let config = kubesim::Config {
        namespaces: vec!["default".into(), NS.into()],
        controllers,
        ..kubesim::Config::default()
    };
    KubeSim::start_with(config).await.expect("kubesim starts")
}

pub(crate) async fn cluster_on(sim: &KubeSim, settings: Arc<Settings>) -> KubeCluster {
    KubeCluster::new(sim.client(), settings).await.expect("cluster")
}

pub(crate) fn commit(n: u64) -> CommitInfo {
    CommitInfo::new("oca/mis-builder", "16.0", Some(n), &format!("{n:040x}")).expect("commit")
}

/// The objects of `resource` labelled with `build`.
pub(crate) fn labelled(sim: &kubesim::Handle, resource: &str, build: &str) -> Vec<Value> {
    sim.list(resource, Some(NS))
        .expect("list")
        .into_iter()
        .filter(|o| {
            o.pointer("/metadata/labels/runboat~1build").and_then(Value::as_str) == Some(build)
        })
        .collect()
}

/// Every resource kind a build can leave behind.
pub(crate) const BUILD_RESOURCES: [&str; 9] = [
    "deployments",
    "replicasets",
    "pods",
    "services",
    "ingresses",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "jobs",
];

pub(crate) fn leftovers(sim: &kubesim::Handle, build: &str) -> Vec<String> {
    BUILD_RESOURCES
        .iter()
        .flat_map(|r| {
            labelled(sim, r, build).into_iter().map(move |o| {
                format!("{r}/{}", o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""))
            })
        })
        .collect()
}

fn deployment_of(sim: &kubesim::Handle, build: &str) -> Option<Value> {
    labelled(sim, "deployments", build).into_iter().next()
}

fn annotation(object: &Value, key: &str) -> Option<String> {
    object
        .pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[tokio::test]
async fn kube_cluster_keeps_the_cluster_contract_for_derived_and_original_names() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let cluster = cluster_on(&sim, settings("")).await;
    let c = commit(41);
    runboat_core::sim::check_cluster_contract(&cluster, &c.build_name(), &c, WAIT)
        .await
        .expect("contract with the derived name");
    // A build created by the Python runboat is named `b` + a UUID: every
    // object rendered for it carries that name, never the derived one.
    let c = commit(42);
    let original = "b6d2f0a4c1e84b7f9a3e5c2d1b0a9f8e7";
    runboat_core::sim::check_cluster_contract(&cluster, original, &c, WAIT)
        .await
        .expect("contract with an original name");
    let handle = sim.handle();
    let deployments = handle.list("deployments", Some(NS)).expect("list");
    let jobs = handle.list("jobs", Some(NS)).expect("list");
    let leftovers: Vec<String> = deployments
        .iter()
        .chain(jobs.iter())
        .filter_map(|o| o["metadata"]["labels"]["runboat/build"].as_str().map(str::to_owned))
        .filter(|b| *b == c.build_name())
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "nothing under the derived name");
}

#[tokio::test]
async fn deploy_scale_annotate_and_read_a_build() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let cluster = cluster_on(&sim, settings("")).await;
    let c = commit(1);
    let name = c.build_name();
    assert_eq!(cluster.get_deployment(&name).await, Ok(None));

    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment).await.expect("deploy");
    // Idempotent.
    cluster
        .apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment)
        .await
        .expect("deploy again");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(0)));
    assert_eq!(annotation(&d, "runboat/init-status").as_deref(), Some("todo"));
    assert_eq!(d.pointer("/metadata/finalizers"), Some(&json!(["runboat/cleanup"])));
    for resource in ["services", "ingresses", "configmaps", "secrets", "persistentvolumeclaims"] {
        assert!(!labelled(&sim, resource, &name).is_empty(), "no {resource}");
    }

    let facts = cluster.get_deployment(&name).await.expect("get").expect("exists");
    assert_eq!(facts.spec_replicas, Some(0));
    assert_eq!(facts.labels.get("runboat/build"), Some(&name));
    assert_eq!(facts.annotations.get("runboat/repo").map(String::as_str), Some("oca/mis-builder"));

    cluster.set_init_status(&name, InitStatus::Succeeded).await.expect("init status");
    cluster.scale(&name, 1).await.expect("scale");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(annotation(&d, "runboat/init-status").as_deref(), Some("succeeded"));
    let scaled = annotation(&d, "runboat/last-scaled").expect("last-scaled");
    assert_eq!(scaled.len(), "2024-05-01T12:34:56Z".len(), "{scaled}");
    assert!(scaled.ends_with('Z') && scaled.parse::<jiff::Timestamp>().is_ok(), "{scaled}");

    // The pin: an annotation runboat writes, which no kubefiles apply
    // removes (checked after the reset below).
    cluster.set_pinned(&name, true).await.expect("pin");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(annotation(&d, "runboat/pinned").as_deref(), Some("true"));
    let facts = cluster.get_deployment(&name).await.expect("get").expect("exists");
    assert!(runboat_core::Build::from_deployment_facts(&facts).expect("build").pinned);

    // Modes that leave replicas and init status out must not remove them.
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Stop).await.expect("stop");
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Start).await.expect("start");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(annotation(&d, "runboat/init-status").as_deref(), Some("succeeded"));

    // The build log: the Deployment's pod, default container.
    let h = sim.handle();
    assert!(
        h.wait_until(WAIT, |h| labelled(h, "pods", &name)
            .iter()
            .any(|p| { p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") }))
            .await
    );
    let pod = labelled(&h, "pods", &name).into_iter().next().expect("pod");
    let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).expect("name");
    let container = annotation(&pod, "kubectl.kubernetes.io/default-container").expect("default");
    h.set_pod_log(NS, pod_name, &container, "odoo is up\n");
    assert_eq!(cluster.log(&name).await.expect("log").as_deref(), Some("odoo is up\n"));

    // The end of a long log: no more than asked for, from a line start.
    let long: String = (0..5000).map(|i| format!("line {i:05}\n")).collect();
    h.set_pod_log(NS, pod_name, &container, &long);
    let tail = cluster.log_tail(&name, LogSource::Run, 1000).await.expect("tail").expect("a log");
    assert!(tail.truncated);
    assert!(tail.text.len() <= 1000 && tail.text.len() >= 500, "{}", tail.text.len());
    assert!(tail.text.starts_with("line ") && tail.text.ends_with("line 04999\n"));
    let whole = cluster.log_tail(&name, LogSource::Run, 1 << 20).await.expect("tail");
    assert_eq!(whole, Some(LogTail { text: long.clone(), truncated: false }));
    // Following: what the log holds, then what it gains, on one request.
    let (_, follows) = h.log_requests();
    let mut follow = cluster.follow_log(&name, LogSource::Run).await.expect("follow").expect("pod");
    assert_eq!(follow.pod, pod_name);
    let mut got = Vec::new();
    while got.len() < long.len() {
        let chunk = tokio::time::timeout(WAIT, follow.chunks.next()).await.expect("in time");
        got.extend(chunk.expect("more").expect("a chunk"));
    }
    assert_eq!(got, long.as_bytes());
    h.set_pod_log(NS, pod_name, &container, &format!("{long}more\n"));
    let chunk = tokio::time::timeout(WAIT, follow.chunks.next()).await.expect("in time");
    assert_eq!(chunk.expect("more").expect("a chunk"), b"more\n");
    assert_eq!(h.log_requests().1, follows + 1);

    // Reset: mode deployment again puts replicas and init status back.
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment).await.expect("reset");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(0)));
    assert_eq!(annotation(&d, "runboat/init-status").as_deref(), Some("todo"));
    assert_eq!(annotation(&d, "runboat/pinned").as_deref(), Some("true"), "a reset unpinned");
    cluster.set_pinned(&name, false).await.expect("unpin");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(annotation(&d, "runboat/pinned"), None);
    assert!(cluster.set_pinned("bnothere", true).await.is_err_and(|e| e.is_not_found()));

    // Unknown builds.
    assert!(cluster.scale("bnothere", 1).await.is_err_and(|e| e.is_not_found()));
    assert!(
        cluster
            .set_init_status("bnothere", InitStatus::Todo)
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert_eq!(cluster.log("bnothere").await, Ok(None));
    assert_eq!(cluster.init_log("bnothere").await, Ok(None));
    assert!(matches!(cluster.scale("Bad Name", 1).await, Err(ClusterError::Invalid(_))));
}

#[tokio::test]
async fn jobs_logs_kill_and_undeploy() {
    let sim = sim_with(ControllerConfig::none()).await;
    let h = sim.handle();
    let cluster = cluster_on(&sim, settings("")).await;
    let c = commit(2);
    let name = c.build_name();
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment).await.expect("deploy");

    // With controllers off the job stays running; then the job controller
    // finishes it and its log is the init log.
    h.update_controllers(|c| c.jobs = true);
    h.add_job_rule(JobRule::by_label(
        "runboat/job-kind",
        "initialize",
        JobScript::succeed()
            .with_log("installing addons\n")
            .with_duration(Duration::from_secs(600)),
    ));
    cluster
        .apply_kubefiles(&c.build_name(), &c, KubefilesMode::Initialize)
        .await
        .expect("initialize");
    let jobs = labelled(&h, "jobs", &name);
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].pointer("/metadata/labels/runboat~1job-kind").and_then(Value::as_str),
        Some("initialize")
    );
    assert!(h.wait_until(WAIT, |h| !labelled(h, "pods", &name).is_empty()).await);
    assert!(
        h.wait_until(WAIT, |h| labelled(h, "pods", &name)
            .iter()
            .any(|p| { p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") }))
            .await
    );
    assert_eq!(
        cluster.init_log(&name).await.expect("init log").as_deref(),
        Some("installing addons\n")
    );

    // Kill: the job and its pod go at once.
    cluster.kill_jobs(&name, JobKind::Initialize).await.expect("kill");
    assert!(labelled(&h, "jobs", &name).is_empty());
    assert!(h.wait_until(WAIT, |h| labelled(h, "pods", &name).is_empty()).await);
    // Nothing to kill is fine.
    cluster.kill_jobs(&name, JobKind::Cleanup).await.expect("kill nothing");

    // Undeploy: the finalizer keeps the deployment until removed.
    cluster.delete_deployment(&name).await.expect("delete");
    let facts = cluster.get_deployment(&name).await.expect("get").expect("kept");
    assert!(facts.deletion_timestamp.is_some());
    cluster.delete_deployment(&name).await.expect("delete again");
    cluster.delete_build_resources(&name).await.expect("delete resources");
    cluster.remove_finalizer(&name).await.expect("remove finalizer");
    cluster.remove_finalizer(&name).await.expect("remove finalizer again");
    assert!(
        h.wait_until(WAIT, |h| leftovers(h, &name).is_empty()).await,
        "{:?}",
        leftovers(&h, &name)
    );
    assert_eq!(cluster.get_deployment(&name).await, Ok(None));
    cluster.delete_deployment(&name).await.expect("delete what is gone");
    cluster.delete_build_resources(&name).await.expect("delete resources again");
}

#[tokio::test]
async fn finalizer_removal_keeps_other_finalizers_and_survives_conflicts() {
    let sim = sim_with(ControllerConfig::none()).await;
    let cluster = cluster_on(&sim, settings("")).await;
    let c = commit(3);
    let name = c.build_name();
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment).await.expect("deploy");
    let d = deployment_of(&sim, &name).expect("deployment");
    let dname = d.pointer("/metadata/name").and_then(Value::as_str).expect("name").to_owned();
    let api: Api<Deployment> = Api::namespaced(sim.client(), NS);
    let other = json!({"metadata": {"finalizers": ["runboat/cleanup", "example.com/keep"]}});
    api.patch(&dname, &PatchParams::default(), &Patch::Merge(&other)).await.expect("add");
    // Conflicting writers while the finalizer is removed.
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let api = api.clone();
            let dname = dname.clone();
            tokio::spawn(async move {
                let p = json!({"metadata": {"annotations": {"x": format!("{i}")}}});
                api.patch(&dname, &PatchParams::default(), &Patch::Merge(&p)).await.is_ok()
            })
        })
        .collect();
    cluster.remove_finalizer(&name).await.expect("remove");
    for w in writers {
        assert!(w.await.expect("writer"));
    }
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/metadata/finalizers"), Some(&json!(["example.com/keep"])));
}

#[tokio::test]
async fn a_rejected_object_creates_nothing_and_unsupported_repos_are_invalid() {
    let sim = sim_with(ControllerConfig::none()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_kubefiles(dir.path(), "not a label!");
    let toml = settings_toml(
        &format!("build_default_kubefiles_path = {:?}", dir.path().display().to_string()),
        "",
    );
    let cluster =
        cluster_on(&sim, Arc::new(Settings::from_toml_str(&toml).expect("settings"))).await;
    let c = commit(4);
    let err = cluster
        .apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment)
        .await
        .expect_err("rejected");
    assert!(matches!(&err, ClusterError::Invalid(m) if m.contains("dry run")), "{err:?}");
    assert!(leftovers(&sim.handle(), &c.build_name()).is_empty());

    let other = CommitInfo::new("acme/app", "16.0", None, &"a".repeat(40)).expect("commit");
    let err = cluster
        .apply_kubefiles(&other.build_name(), &other, KubefilesMode::Deployment)
        .await
        .expect_err("no rule");
    assert!(matches!(err, ClusterError::Invalid(_)), "{err:?}");
}

/// Native kubefiles with a ConfigMap and a Deployment present in modes
/// deployment, start and stop, its `app` label as given.
fn write_kubefiles(dir: &Path, app: &str) {
    std::fs::write(
        dir.join("configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: b\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("deployment.yaml"),
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: odoo
  annotations:
    runboat/modes: deployment start stop
spec:
  replicas: 1
  selector:
    matchLabels: {{app: "{app}"}}
  template:
    metadata:
      labels: {{app: "{app}"}}
    spec:
      containers:
        - name: odoo
          image: {{{{ image_name ~ ":" ~ image_tag }}}}
"#
        ),
    )
    .expect("write");
}

#[tokio::test]
async fn stop_and_start_modes_with_a_deployment_keep_the_controller_fields() {
    let sim = sim_with(ControllerConfig::none()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_kubefiles(dir.path(), "odoo");
    let rule = format!(", kubefiles_path = {:?}", dir.path().display().to_string());
    let toml = settings_toml("", &rule);
    let cluster =
        cluster_on(&sim, Arc::new(Settings::from_toml_str(&toml).expect("settings"))).await;
    let c = commit(5);
    let name = c.build_name();
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment).await.expect("deploy");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(0)));
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Stop).await.expect("stop");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(0)), "stop must not scale up");
    assert_eq!(annotation(&d, "runboat/init-status").as_deref(), Some("todo"));
    cluster.set_init_status(&name, InitStatus::Succeeded).await.expect("init");
    cluster.scale(&name, 1).await.expect("scale");
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Start).await.expect("start");
    cluster.scale(&name, 0).await.expect("scale");
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Stop).await.expect("stop");
    let d = deployment_of(&sim, &name).expect("deployment");
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(0)));
    assert_eq!(annotation(&d, "runboat/init-status").as_deref(), Some("succeeded"));
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let sim = sim_with(ControllerConfig::none()).await;
    let err = KubeCluster::new(
        sim.client(),
        settings("deployment_resource_types = \"deployment,wid get\""),
    )
    .await
    .expect_err("not a resource name");
    assert!(matches!(&err, Error::UnknownResourceType { name, .. } if name == "wid get"), "{err}");
    let err = KubeCluster::new(
        sim.client(),
        settings("build_default_kubefiles_path = \"/nonexistent/kubefiles\""),
    )
    .await
    .expect_err("missing kubefiles");
    assert!(
        matches!(&err, Error::KubefilesSetting { setting, source, .. }
            if setting.starts_with("build_default_kubefiles_path")
                && matches!(**source, Error::ReadKubefiles { .. })),
        "{err}"
    );
}

/// A 190-character repository name and a long branch still deploy: the
/// slug is cut to a DNS label, so the API server (kubesim validates Ingress
/// hosts as the real one does) accepts the Ingresses.
#[tokio::test]
async fn long_repo_and_branch_names_deploy_with_valid_hosts() {
    let sim = sim_with(ControllerConfig::none()).await;
    let cluster = cluster_on(&sim, settings("")).await;
    let repo = format!("oca/{}", "m".repeat(190));
    let branch = format!("16.0-{}", "b".repeat(80));
    let c = CommitInfo::new(&repo, &branch, Some(4242), &format!("{:040x}", 7)).expect("commit");
    let name = c.build_name();
    cluster.apply_kubefiles(&name, &c, KubefilesMode::Deployment).await.expect("deploy");
    let ingresses = labelled(&sim.handle(), "ingresses", &name);
    assert!(!ingresses.is_empty());
    for ingress in ingresses {
        for rule in ingress.pointer("/spec/rules").and_then(Value::as_array).expect("rules") {
            let host = rule.get("host").and_then(Value::as_str).expect("host");
            assert!(host.split('.').all(|label| label.len() <= 63), "{host}");
            assert!(host.starts_with(&c.slug()), "{host}");
        }
    }
}

/// Any type in `deployment_resource_types` works, as `kubectl delete <types>`
/// did for the original: names that are not built-in types are resolved
/// through API discovery (plural, kind, or `plural.group`); a name the
/// cluster does not serve fails the undeploy with an error naming the
/// setting.
#[tokio::test]
async fn deployment_resource_types_resolve_through_discovery() {
    let sim = sim_with(ControllerConfig::none()).await;
    let h = sim.handle();
    let types = "deployment_resource_types = \"deployment,ReplicaSet,leases.coordination.k8s.io\"";
    let cluster = cluster_on(&sim, settings(types)).await;
    let labels = json!({"runboat/build": "b1"});
    h.create(
        "replicasets",
        NS,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "b1-rs", "labels": labels},
               "spec": {"selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    )
    .expect("replicaset");
    for (name, build) in [("b1-lease", "b1"), ("b2-lease", "b2")] {
        h.create(
            "leases",
            NS,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": name, "labels": {"runboat/build": build}}}),
        )
        .expect("lease");
    }
    cluster.delete_build_resources("b1").await.expect("delete resources");
    let names = |resource: &str| -> Vec<String> {
        h.list(resource, Some(NS))
            .expect("list")
            .iter()
            .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    assert!(
        h.wait_until(WAIT, |h| h.list("replicasets", Some(NS)).expect("list").is_empty()).await,
        "{:?}",
        names("replicasets")
    );
    assert_eq!(names("leases"), ["b2-lease"]);

    let cluster =
        cluster_on(&sim, settings("deployment_resource_types = \"deployment,widgets\"")).await;
    let err = cluster.delete_build_resources("b1").await.expect_err("no such type");
    let text = err.to_string();
    assert!(matches!(err, runboat_core::ClusterError::Invalid(_)), "{text}");
    assert!(text.contains("deployment_resource_types") && text.contains("\"widgets\""), "{text}");
}

/// Every kubefiles directory that cannot be used is refused at startup with
/// the setting that names it, the path, and why (once).
#[tokio::test]
async fn unusable_kubefiles_name_their_setting_and_path() {
    let sim = sim_with(ControllerConfig::none()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let missing = dir.path().join("missing");
    for path in [&missing, &file, &empty] {
        let rule = format!(", kubefiles_path = {:?}", path.display().to_string());
        let settings = Settings::from_toml_str(&settings_toml("", &rule)).expect("settings");
        let err = KubeCluster::new(sim.client(), Arc::new(settings)).await.expect_err("refused");
        let text = runboat_core::error::chain(&err).to_string();
        assert!(text.starts_with("repos[0].kubefiles_path (repo \"oca/.*\""), "{text}");
        assert_eq!(text.matches(&path.display().to_string()).count(), 1, "{text}");
    }
}

// ---- watching ----

/// What a consumer knows: name → (annotations, spec replicas).
type View = BTreeMap<String, (BTreeMap<String, String>, Option<i32>)>;

fn fold(view: &mut View, event: ClusterEvent<DeploymentFacts>) {
    let entry = |f: DeploymentFacts| (f.name, (f.annotations, f.spec_replicas));
    match event {
        ClusterEvent::Relisted(all) => *view = all.into_iter().map(entry).collect(),
        ClusterEvent::Applied(f) => {
            let (k, v) = entry(f);
            view.insert(k, v);
        }
        ClusterEvent::Deleted(f) => {
            view.remove(&f.name);
        }
    }
}

/// kubesim's runboat Deployments as a consumer should see them.
fn truth(sim: &kubesim::Handle) -> View {
    sim.list("deployments", Some(NS))
        .expect("list")
        .into_iter()
        .filter(|o| o.pointer("/metadata/labels/runboat~1build").is_some())
        .map(|o| {
            let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
            let annotations = o
                .pointer("/metadata/annotations")
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default();
            let replicas = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .and_then(|r| i32::try_from(r).ok());
            (name, (annotations, replicas))
        })
        .collect()
}

pub(crate) async fn next<T>(stream: &mut BoxStream<'static, ClusterEvent<T>>) -> ClusterEvent<T> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream does not end")
}

/// Folds events until the view equals kubesim's state; returns how many
/// `Relisted` were seen.
async fn converge(
    stream: &mut BoxStream<'static, ClusterEvent<DeploymentFacts>>,
    view: &mut View,
    sim: &kubesim::Handle,
) -> usize {
    let mut relisted = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while *view != truth(sim) {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("view never converged: {view:?} vs {:?}", truth(sim)))
            .expect("stream");
        relisted += usize::from(matches!(event, ClusterEvent::Relisted(_)));
        fold(view, event);
    }
    relisted
}

fn raw_deployment(i: usize, labelled: bool) -> Value {
    let labels = if labelled {
        json!({"runboat/build": format!("b{i}"), "app": "x"})
    } else {
        json!({"app": "x"})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("d{i}"), "labels": labels,
                      "annotations": {"runboat/init-status": "todo"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    })
}

async fn annotate(api: &Api<Deployment>, name: &str, value: &str) {
    let p = json!({"metadata": {"annotations": {"runboat/init-status": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&p)).await.expect("patch");
}

#[tokio::test]
async fn watch_maps_listing_changes_and_restarts() {
    let sim = sim_with(ControllerConfig::none()).await;
    let h = sim.handle();
    for i in 0..3 {
        h.create("deployments", NS, raw_deployment(i, true)).expect("create");
    }
    h.create("deployments", NS, raw_deployment(99, false)).expect("create");
    let cluster = cluster_on(&sim, settings("")).await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), NS);
    let mut stream = cluster.deployment_events();

    let ClusterEvent::Relisted(all) = next(&mut stream).await else { panic!("first is a listing") };
    let mut names: Vec<_> = all.iter().map(|f| f.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["d0", "d1", "d2"], "unlabelled objects are not runboat's");
    let mut view = View::new();
    fold(&mut view, ClusterEvent::Relisted(all));

    h.create("deployments", NS, raw_deployment(3, true)).expect("create");
    let event = next(&mut stream).await;
    assert!(matches!(&event, ClusterEvent::Applied(f) if f.name == "d3"), "{event:?}");
    fold(&mut view, event);
    api.delete("d0", &DeleteParams::default()).await.expect("delete");
    let event = next(&mut stream).await;
    assert!(matches!(&event, ClusterEvent::Deleted(f) if f.name == "d0"), "{event:?}");
    fold(&mut view, event);
    assert_eq!(converge(&mut stream, &mut view, &h).await, 0);

    // A closed watch resumes where it was: nothing lost, no listing.
    h.close_watches();
    annotate(&api, "d1", "started").await;
    assert_eq!(converge(&mut stream, &mut view, &h).await, 0);

    // A compaction: the stream is not polled, so the watcher resumes (when
    // polled again) from a version older than the compacted history: 410,
    // and a fresh complete listing replaces the view, including what
    // happened while away.
    h.close_watches();
    annotate(&api, "d2", "failed").await;
    api.delete("d3", &DeleteParams::default()).await.expect("delete");
    h.create("deployments", NS, raw_deployment(4, true)).expect("create");
    h.compact_history();
    let deadline = tokio::time::Instant::now() + WAIT;
    let all = loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a listing in time")
            .expect("stream");
        match event {
            ClusterEvent::Relisted(all) => break all,
            other => fold(&mut view, other),
        }
    };
    let mut names: Vec<_> = all.iter().map(|f| f.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["d1", "d2", "d4"]);
    fold(&mut view, ClusterEvent::Relisted(all));
    assert_eq!(view, truth(&h));
}

#[tokio::test]
async fn job_events_carry_kind_and_phase() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let h = sim.handle();
    h.add_job_rule(JobRule::by_label("runboat/job-kind", "initialize", JobScript::fail()));
    let cluster = cluster_on(&sim, settings("")).await;
    let mut jobs = cluster.job_events();
    assert_eq!(next(&mut jobs).await, ClusterEvent::Relisted(vec![]));
    let c = commit(6);
    cluster.apply_kubefiles(&c.build_name(), &c, KubefilesMode::Deployment).await.expect("deploy");
    cluster
        .apply_kubefiles(&c.build_name(), &c, KubefilesMode::Initialize)
        .await
        .expect("initialize");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event =
            tokio::time::timeout_at(deadline, jobs.next()).await.expect("in time").expect("event");
        let ClusterEvent::Applied(job) = event else { continue };
        assert_eq!(job.build_name, c.build_name());
        assert_eq!(job.kind, JobKind::Initialize);
        if job.phase == JobPhase::Failed {
            break;
        }
    }
}

#[tokio::test]
async fn watch_survives_error_bursts() {
    let sim = sim_with(ControllerConfig::none()).await;
    let h = sim.handle();
    for i in 0..20 {
        h.create("deployments", NS, raw_deployment(i, true)).expect("create");
    }
    let cluster = cluster_on(&sim, settings("")).await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), NS);
    // The first listing fails (kube's client does not retry a 500).
    h.fail_next(FailRule::new(2, 500).verb("list").resource("deployments"));
    let mut stream = cluster.deployment_events();
    let mut view = View::new();
    assert!(converge(&mut stream, &mut view, &h).await >= 1);
    // Each round waits for the watcher's backoff: one round by default.
    let rounds = if crate::cluster::slow() { 3 } else { 1 };
    for round in 0..rounds {
        h.fail_next(FailRule::new(2, 500).verb("list").resource("deployments"));
        h.fail_next(FailRule::new(2, 500).verb("watch").resource("deployments"));
        h.compact_history();
        h.close_watches();
        for i in 0..5 {
            annotate(&api, &format!("d{}", round * 5 + i), "started").await;
        }
        api.delete(&format!("d{}", 15 + round), &DeleteParams::default()).await.expect("delete");
        converge(&mut stream, &mut view, &h).await;
    }
    assert_eq!(view.len(), 20 - rounds);
    if slow() {
        // More than kube's client retries of 503s, and throttling.
        h.fail_next(FailRule::new(6, 503).verb("list").resource("deployments"));
        h.fail_next(FailRule::new(3, 429).verb("watch").resource("deployments").retry_after(1));
        h.compact_history();
        h.close_watches();
        annotate(&api, "d0", "failed").await;
        converge(&mut stream, &mut view, &h).await;
    }
}

/// Heavier fault suites run only with `RUNBOAT_SLOW_TESTS=1`.
pub(crate) fn slow() -> bool {
    std::env::var("RUNBOAT_SLOW_TESTS").is_ok_and(|v| v == "1")
}

#[tokio::test]
async fn get_deployment_never_returns_a_deployment_of_another_build() {
    let sim = sim_with(ControllerConfig::instant()).await;
    let cluster = cluster_on(&sim, settings("")).await;
    let c = commit(1);
    let name = c.build_name();
    cluster.apply_kubefiles(&name, &c, KubefilesMode::Deployment).await.expect("deploy");
    let first = cluster.get_deployment(&name).await.expect("get").expect("exists");

    // The Deployment read by its (cached) name now belongs to another build:
    // it must not be taken for this one.
    let api: Api<Deployment> = Api::namespaced(sim.client(), NS);
    let relabel = json!({"metadata": {"labels": {"runboat/build": "bother"}}});
    api.patch(&first.name, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel");
    assert_eq!(cluster.get_deployment(&name).await, Ok(None));

    // A Deployment of this build under another name is found by its label.
    let mut moved: Deployment = api.get(&first.name).await.expect("get");
    moved.metadata = kube::api::ObjectMeta {
        name: Some(format!("{name}-moved")),
        labels: Some(BTreeMap::from([("runboat/build".to_owned(), name.clone())])),
        annotations: moved.metadata.annotations.clone(),
        ..Default::default()
    };
    moved.spec.as_mut().expect("spec").selector.match_labels =
        Some(BTreeMap::from([("runboat/build".to_owned(), name.clone())]));
    if let Some(meta) = moved.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        meta.labels = Some(BTreeMap::from([("runboat/build".to_owned(), name.clone())]));
    }
    moved.status = None;
    api.create(&kube::api::PostParams::default(), &moved).await.expect("create moved");
    let found = cluster.get_deployment(&name).await.expect("get").expect("found by label");
    assert_eq!(found.name, format!("{name}-moved"));
}
