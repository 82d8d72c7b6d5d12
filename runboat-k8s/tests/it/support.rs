//! Shared fixtures: render contexts, kubefiles paths, golden files, kubectl detection.

use std::collections::BTreeMap;
use std::path::PathBuf;

use runboat_core::{CommitInfo, KubefilesMode};
use runboat_k8s::{Kubefiles, RenderContext};
use serde_json::{Value, json};

pub(crate) fn kubefiles_dir(format: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("kubefiles").join(format)
}

pub(crate) fn native() -> Kubefiles {
    Kubefiles::embedded().expect("the embedded kubefiles load")
}

pub(crate) fn kustomize() -> Kubefiles {
    Kubefiles::load(kubefiles_dir("kustomize")).expect("the kustomize kubefiles load")
}

/// A branch build with nothing optional.
pub(crate) fn minimal(mode: KubefilesMode) -> RenderContext {
    RenderContext {
        namespace: "runboat-builds".into(),
        mode,
        build_name: "b5f2c1e0a9d8c7b6a".into(),
        build_slug: "oca-mis-builder-16-0-0123456789ab".into(),
        build_domain: "runboat.example.com".into(),
        commit_info: CommitInfo::new(
            "oca/mis-builder",
            "16.0",
            None,
            "0123456789abcdef0123456789abcdef01234567",
        )
        .expect("valid commit"),
        image_name: "ghcr.io/oca/oca-ci/py3.10-odoo16.0".into(),
        image_tag: "latest".into(),
        build_env: BTreeMap::new(),
        build_secret_env: BTreeMap::new(),
        build_template_vars: BTreeMap::new(),
    }
}

/// A pull request build with every option of the default kubefiles set.
pub(crate) fn full(mode: KubefilesMode) -> RenderContext {
    let mut ctx = minimal(mode);
    ctx.build_slug = "oca-mis-builder-16-0-pr42-0123456789ab".into();
    ctx.commit_info =
        CommitInfo::new("oca/mis-builder", "16.0", Some(42), ctx.commit_info.git_commit())
            .expect("valid commit");
    ctx.build_env = BTreeMap::from([
        ("PGHOST".into(), "postgres.runboat".into()),
        ("PGUSER".into(), "odoo".into()),
        ("INCLUDE".into(), "mis_builder,mis_builder_budget".into()),
        // Cannot override what the kubefiles set.
        ("PGDATABASE".into(), "not-this-one".into()),
    ]);
    ctx.build_secret_env = BTreeMap::from([
        ("PGPASSWORD".into(), "s3cr3t-pg-password".into()),
        ("RUNBOAT_GITHUB_TOKEN".into(), "ghp_s3cr3tT0ken".into()),
    ]);
    let vars = json!({
        "storageClassName": "fast-ssd",
        "storageRequest": "1Gi",
        "storageLimit": "2Gi",
        "odooCpuLimit": "2",
        "odooMemoryLimit": "3Gi",
        "ingressClassName": "nginx",
        "ingressAnnotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "100m"},
        "tlsSecretName": "runboat-wildcard-tls",
        "mailImage": "axllent/mailpit:latest",
        "cleanupImage": "postgres:17",
        "automountServiceAccountToken": false,
        "podSecurityContext": {"runAsNonRoot": false, "seccompProfile": {"type": "RuntimeDefault"}},
    });
    ctx.build_template_vars =
        vars.as_object().expect("object").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    ctx
}

/// The branch build of the original runboat's fixtures (`tests/original`): nothing
/// optional, as `minimal`.
pub(crate) fn original_branch(mode: KubefilesMode) -> RenderContext {
    minimal(mode)
}

/// The pull request build of the original runboat's fixtures (`tests/original`):
/// environment, a secret and the original's one template var, no opt-in of ours.
pub(crate) fn original_pr(mode: KubefilesMode) -> RenderContext {
    let mut ctx = minimal(mode);
    ctx.build_slug = "oca-mis-builder-16-0-pr42-0123456789ab".into();
    ctx.commit_info =
        CommitInfo::new("oca/mis-builder", "16.0", Some(42), ctx.commit_info.git_commit())
            .expect("valid commit");
    ctx.build_env = BTreeMap::from([
        ("PGHOST".into(), "postgres.runboat".into()),
        ("PGUSER".into(), "odoo".into()),
        ("INCLUDE".into(), "mis_builder".into()),
    ]);
    ctx.build_secret_env = BTreeMap::from([("PGPASSWORD".into(), "s3cr3t-pg-password".into())]);
    ctx.build_template_vars = BTreeMap::from([("storageClassName".into(), json!("fast-ssd"))]);
    ctx
}

/// Whether kubectl can run here; prints why kustomize tests are skipped otherwise.
pub(crate) async fn kubectl_available(test: &str) -> bool {
    match runboat_k8s::check_kustomize_available().await {
        Ok(_) => true,
        Err(err) => {
            eprintln!("NOTICE: {test} skipped, kubectl is not available: {err}");
            false
        }
    }
}

/// The object of `kind` whose name ends with `suffix`.
pub(crate) fn find<'a>(objects: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"].as_str().is_some_and(|name| name.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} named *{suffix} in {}", names(objects).join(", ")))
}

/// `Kind/name` of every object, in order.
pub(crate) fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Compares rendered objects with a golden file, or rewrites it when
/// `UPDATE_GOLDEN=1`.
pub(crate) fn check_golden(name: &str, objects: &[Value]) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.yaml"));
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(&canonical(object)).expect("serialises"));
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (run with UPDATE_GOLDEN=1)", path.display()));
    let expected: Vec<Value> = serde_saphyr::from_multiple(&golden).expect("golden parses");
    assert!(
        expected == objects,
        "{name}: rendered objects differ from {} (run with UPDATE_GOLDEN=1 and review the diff)\n\
         --- rendered:\n{text}",
        path.display()
    );
}

/// The value with its mappings' keys sorted, whatever serde_json's map is.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}
