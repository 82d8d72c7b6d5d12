//! Kustomize kubefiles: the original runboat's directories still work.

use std::collections::BTreeMap;

use runboat_core::KubefilesMode;
use runboat_k8s::{Error, Format, Kubefiles};
use serde_json::json;

use crate::support::{find, kubectl_available, kustomize, minimal, names};

/// The shape of the original runboat's kustomization: plain Jinja2, unquoted values.
const ORIGINAL_KUSTOMIZATION: &str = r#"resources:
  {%- if mode == 'deployment' %}
  - deployment.yaml
  {%- elif mode == "initialize" %}
  - initialize.yaml
  {%- endif %}

namespace: {{ namespace }}

namePrefix: "{{ build_name }}-"

commonLabels:
  runboat/build: "{{ build_name }}"

commonAnnotations:
  runboat/repo: "{{ commit_info.repo }}"
  runboat/pr: "{{ commit_info.pr if commit_info.pr else '' }}"

images:
  - name: odoo
    newName: "{{ image_name }}"
    newTag: "{{ image_tag }}"

secretGenerator:
  - name: odoosecretenv
    literals:
      {%- for key, value in build_secret_env.items() %}
      - {{ key }}={{ value }}
      {%- endfor %}

configMapGenerator:
  - name: odooenv
    literals:
      - PGDATABASE={{ build_name }}

generatorOptions:
  disableNameSuffixHash: true
"#;

const ORIGINAL_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: odoo
  annotations:
    runboat/init-status: \"todo\"
  finalizers:
    - runboat/cleanup
spec:
  replicas: 0
  selector:
    matchLabels:
      app: odoo
  template:
    metadata:
      labels:
        app: odoo
    spec:
      containers:
        - name: odoo
          image: odoo
          envFrom:
            - secretRef:
                name: odoosecretenv
";

const ORIGINAL_INITIALIZE: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: initialize
  labels:
    runboat/job-kind: initialize
spec:
  template:
    spec:
      containers:
        - name: initialize
          image: odoo
      restartPolicy: Never
  backoffLimit: 0
";

fn original() -> Kubefiles {
    let files = BTreeMap::from([
        ("kustomization.yaml.jinja".to_owned(), ORIGINAL_KUSTOMIZATION.to_owned()),
        ("deployment.yaml".to_owned(), ORIGINAL_DEPLOYMENT.to_owned()),
        ("initialize.yaml".to_owned(), ORIGINAL_INITIALIZE.to_owned()),
    ]);
    Kubefiles::from_files("original", files).expect("compiles")
}

#[tokio::test]
async fn an_original_runboat_directory_renders() {
    if !kubectl_available("an_original_runboat_directory_renders").await {
        return;
    }
    let kubefiles = original();
    assert_eq!(kubefiles.format(), Format::Kustomize);
    let mut ctx = minimal(KubefilesMode::Deployment);
    ctx.build_secret_env.insert("PGPASSWORD".into(), "pw".into());
    let objects = kubefiles.render(&ctx).await.expect("renders");
    assert_eq!(
        names(&objects),
        [
            "ConfigMap/b5f2c1e0a9d8c7b6a-odooenv",
            "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv",
            "Deployment/b5f2c1e0a9d8c7b6a-odoo"
        ]
    );
    let deployment = find(&objects, "Deployment", "-odoo");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest");
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "b5f2c1e0a9d8c7b6a-odoosecretenv");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app": "odoo", "runboat/build": "b5f2c1e0a9d8c7b6a"})
    );
    assert_eq!(deployment["metadata"]["annotations"]["runboat/init-status"], "todo");
    assert_eq!(
        deployment["metadata"]["annotations"]["runboat/git-commit"],
        ctx.commit_info.git_commit()
    );

    let objects = kubefiles.render(&minimal(KubefilesMode::Initialize)).await.expect("renders");
    let job = find(&objects, "Job", "-initialize");
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["runboat/job-kind"], "initialize");
    // Start and stop: only the generators, as with the original.
    let objects = kubefiles.render(&minimal(KubefilesMode::Start)).await.expect("renders");
    assert_eq!(
        names(&objects),
        ["ConfigMap/b5f2c1e0a9d8c7b6a-odooenv", "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv"]
    );
}

#[tokio::test]
async fn the_startup_check_reports_versions() {
    if !kubectl_available("the_startup_check_reports_versions").await {
        return;
    }
    let versions = runboat_k8s::check_kustomize_available().await.expect("kubectl runs");
    assert!(versions.starts_with("kubectl v") && versions.contains(", kustomize v"), "{versions}");
}

#[tokio::test]
async fn a_missing_kubectl_is_a_clear_error() {
    let err = runboat_k8s::check_kubectl_at("/nonexistent/kubectl".as_ref())
        .await
        .expect_err("no kubectl");
    assert!(matches!(err, Error::KustomizeUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("kubectl"), "{err}");
    let err = kustomize()
        .with_kubectl("/nonexistent/kubectl")
        .render(&minimal(KubefilesMode::Deployment))
        .await
        .expect_err("no kubectl");
    assert!(matches!(err, Error::KustomizeUnavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_kustomize_failure_is_reported_without_secrets() {
    if !kubectl_available("a_kustomize_failure_is_reported_without_secrets").await {
        return;
    }
    let files = BTreeMap::from([(
        "kustomization.yaml.jinja".to_owned(),
        "resources:\n  - {{ build_secret_env.PASS }}.yaml\n".to_owned(),
    )]);
    let mut ctx = minimal(KubefilesMode::Deployment);
    ctx.build_secret_env.insert("PASS".into(), "topsecretvalue".into());
    let err = Kubefiles::from_files("t", files)
        .expect("compiles")
        .render(&ctx)
        .await
        .expect_err("missing resource");
    assert!(
        matches!(&err, Error::Kustomize { stderr, .. } if stderr.contains("***.yaml")),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("topsecretvalue"));
}

#[tokio::test]
async fn kustomize_output_honours_a_modes_annotation() {
    if !kubectl_available("kustomize_output_honours_a_modes_annotation").await {
        return;
    }
    let files = BTreeMap::from([
        ("kustomization.yaml".to_owned(), "resources: [d.yaml, cm.yaml]\n".to_owned()),
        ("d.yaml".to_owned(), ORIGINAL_DEPLOYMENT.to_owned()),
        (
            "cm.yaml".to_owned(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n    runboat/modes: stop\n".to_owned(),
        ),
    ]);
    let kubefiles = Kubefiles::from_files("t", files).expect("compiles");
    let objects = kubefiles.render(&minimal(KubefilesMode::Deployment)).await.expect("renders");
    assert_eq!(names(&objects), ["Deployment/b5f2c1e0a9d8c7b6a-odoo"], "no annotation: every mode");
}
