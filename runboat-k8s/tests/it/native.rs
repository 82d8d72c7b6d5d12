//! Native kubefiles: template errors, mode selection, loading.

use std::collections::BTreeMap;

use runboat_core::KubefilesMode;
use runboat_k8s::{Error, Format, Kubefiles};
use serde_json::Value;

use crate::support::{minimal, names};

fn set(files: &[(&str, &str)]) -> Result<Kubefiles, Error> {
    let files: BTreeMap<String, String> =
        files.iter().map(|(name, content)| ((*name).to_owned(), (*content).to_owned())).collect();
    Kubefiles::from_files("test", files)
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: odoo\n\
spec:\n  selector: {}\n  template:\n    spec:\n      containers: [{name: odoo, image: x}]\n";

#[tokio::test]
async fn an_unknown_variable_names_the_file_and_line() {
    let kubefiles = set(&[
        ("deployment.yaml", DEPLOYMENT),
        ("z.yaml.jinja", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ build_nme }}\n"),
    ])
    .expect("compiles");
    let err =
        kubefiles.render(&minimal(KubefilesMode::Deployment)).await.expect_err("strict undefined");
    match &err {
        Error::Template { file, line, message, .. } => {
            assert_eq!(file, "z.yaml.jinja");
            assert_eq!(*line, 4);
            assert!(message.contains("undefined"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().starts_with("kubefile z.yaml.jinja, line 4: "), "{err}");
}

#[test]
fn a_syntax_error_fails_at_load_time() {
    let err = set(&[("a.yaml", "a: 1\nb: {% if %}\n")]).expect_err("syntax error");
    assert!(
        matches!(err, Error::Template { ref file, line: 2, .. } if file == "a.yaml"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_template_var_is_an_error_but_default_works() {
    let ok = set(&[
        ("deployment.yaml", DEPLOYMENT),
        ("c.yaml", "kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata:\n  x: {{ build_template_vars.missing | default(\"dflt\") }}\n"),
    ])
    .expect("compiles");
    let objects = ok.render(&minimal(KubefilesMode::Deployment)).await.expect("renders");
    assert_eq!(objects[0]["data"]["x"], "dflt");
    let err = set(&[
        ("deployment.yaml", DEPLOYMENT),
        ("c.yaml", "kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata:\n  x: {{ build_template_vars.missing }}\n"),
    ])
    .expect("compiles")
    .render(&minimal(KubefilesMode::Deployment))
    .await
    .expect_err("undefined");
    assert!(matches!(err, Error::Template { line: 5, .. }), "{err:?}");
}

fn config_map(name: &str, modes: Option<&str>) -> String {
    let annotation =
        modes.map(|m| format!("  annotations:\n    runboat/modes: \"{m}\"\n")).unwrap_or_default();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{annotation}")
}

#[tokio::test]
async fn documents_are_kept_by_their_modes_annotation() {
    let docs = [
        config_map("default", None),
        config_map("all", Some("deployment, initialize start stop cleanup")),
        config_map("init", Some("initialize")),
        config_map("startstop", Some("start,stop")),
        // A Jinja condition works too.
        "{% if mode == 'cleanup' %}".to_owned()
            + &config_map("jinja", Some("cleanup"))
            + "{% endif %}",
    ]
    .join("---\n");
    let kubefiles = set(&[("deployment.yaml", DEPLOYMENT), ("cm.yaml", &docs)]).expect("compiles");
    assert_eq!(kubefiles.format(), Format::Native);
    let expected = [
        (
            KubefilesMode::Deployment,
            vec![
                "ConfigMap/b5f2c1e0a9d8c7b6a-all",
                "ConfigMap/b5f2c1e0a9d8c7b6a-default",
                "Deployment/b5f2c1e0a9d8c7b6a-odoo",
            ],
        ),
        (
            KubefilesMode::Initialize,
            vec!["ConfigMap/b5f2c1e0a9d8c7b6a-all", "ConfigMap/b5f2c1e0a9d8c7b6a-init"],
        ),
        (
            KubefilesMode::Start,
            vec!["ConfigMap/b5f2c1e0a9d8c7b6a-all", "ConfigMap/b5f2c1e0a9d8c7b6a-startstop"],
        ),
        (
            KubefilesMode::Stop,
            vec!["ConfigMap/b5f2c1e0a9d8c7b6a-all", "ConfigMap/b5f2c1e0a9d8c7b6a-startstop"],
        ),
        (
            KubefilesMode::Cleanup,
            vec!["ConfigMap/b5f2c1e0a9d8c7b6a-all", "ConfigMap/b5f2c1e0a9d8c7b6a-jinja"],
        ),
    ];
    for (mode, expected) in expected {
        let objects = kubefiles.render(&minimal(mode)).await.expect("renders");
        assert_eq!(names(&objects), expected, "mode {mode}");
        for object in &objects {
            assert!(
                object["metadata"]["annotations"].get("runboat/modes").is_none(),
                "annotation removed"
            );
        }
    }
}

#[tokio::test]
async fn an_unknown_mode_name_is_an_error() {
    let kubefiles =
        set(&[("deployment.yaml", DEPLOYMENT), ("cm.yaml", &config_map("x", Some("deploy")))])
            .expect("compiles");
    let err = kubefiles.render(&minimal(KubefilesMode::Deployment)).await.expect_err("typo");
    assert!(
        matches!(&err, Error::InvalidObject { file, reason } if file == "cm.yaml" && reason.contains("\"deploy\"")),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_yaml_names_the_file_and_hides_secrets() {
    let kubefiles = set(&[
        ("deployment.yaml", DEPLOYMENT),
        ("bad.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  a: {{ build_secret_env.PASS | safe }}\n  - [\n"),
    ])
    .expect("compiles");
    let mut ctx = minimal(KubefilesMode::Deployment);
    ctx.build_secret_env.insert("PASS".into(), "topsecretvalue".into());
    let err = kubefiles.render(&ctx).await.expect_err("bad YAML");
    assert!(matches!(&err, Error::Yaml { file, .. } if file == "bad.yaml"), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("topsecretvalue"), "{err}");
}

#[tokio::test]
async fn documents_must_be_kubernetes_objects() {
    for (doc, reason) in [
        ("- a list\n", "not a mapping"),
        ("kind: ConfigMap\nmetadata: {name: a}\n", "apiVersion"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "kind"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"),
    ] {
        let kubefiles = set(&[("deployment.yaml", DEPLOYMENT), ("x.yaml", doc)]).expect("compiles");
        let err = kubefiles.render(&minimal(KubefilesMode::Deployment)).await.expect_err(doc);
        assert!(
            matches!(&err, Error::InvalidObject { reason: r, .. } if r.contains(reason)),
            "{doc}: {err:?}"
        );
    }
}

#[tokio::test]
async fn file_reads_a_sibling_file_verbatim() {
    let kubefiles = set(&[
        ("deployment.yaml", DEPLOYMENT),
        ("run.sh", "#!/bin/bash\necho \"{{ not a template }}\" # x: y\n"),
        ("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata:\n  run.sh: {{ file(\"run.sh\") }}\n"),
        ("missing.yaml", "{% if mode == 'stop' %}x: {{ file(\"nope.sh\") }}{% endif %}\n"),
    ])
    .expect("compiles");
    let objects = kubefiles.render(&minimal(KubefilesMode::Deployment)).await.expect("renders");
    assert_eq!(objects[0]["data"]["run.sh"], "#!/bin/bash\necho \"{{ not a template }}\" # x: y\n");
    let err = kubefiles.render(&minimal(KubefilesMode::Stop)).await.expect_err("no such file");
    assert!(
        matches!(&err, Error::Template { file, message, .. } if file == "missing.yaml" && message.contains("nope.sh")),
        "{err:?}"
    );
}

#[test]
fn loading_rejects_empty_sets_and_escaping_paths() {
    assert!(matches!(set(&[("README.md", "hi")]), Err(Error::NoKubefiles { .. })));
    assert!(matches!(set(&[("../x.yaml", "a: 1")]), Err(Error::BadPath { .. })));
    assert!(matches!(set(&[("/etc/x.yaml", "a: 1")]), Err(Error::BadPath { .. })));
    let err = Kubefiles::load("/nonexistent/kubefiles").expect_err("missing directory");
    assert!(matches!(err, Error::ReadKubefiles { .. }), "{err:?}");
}

#[tokio::test]
async fn yaml_octal_numbers_are_read_as_kubernetes_does() {
    let kubefiles = set(&[
        ("deployment.yaml", DEPLOYMENT),
        ("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\nx: 0755\n"),
    ])
    .expect("compiles");
    let objects = kubefiles.render(&minimal(KubefilesMode::Deployment)).await.expect("renders");
    assert_eq!(objects[0]["x"], Value::from(493));
}
