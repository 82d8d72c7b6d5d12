//! The default kubefiles against the original runboat's packaged kubefiles: for the
//! same variables, in every mode, the same objects (`tests/original`, see its
//! README for where those facts come from).
//!
//! Our rendered objects are compared with the original's one by one, after these
//! normalisations only, each for something that is legitimately ours:
//!
//! 1. Job pod templates: our renderer stamps
//!    `kubectl.kubernetes.io/default-container: <first container>` on every pod
//!    template that has none (the contract: the init log is that container's). The
//!    original's Jobs have a single container and no such annotation, so the
//!    annotation is removed from our Jobs when it names their first container.
//! 2. ConfigMap `runboat-scripts`: its keys are compared, not its values: the
//!    scripts are our own text. What each one runs is compared with
//!    `tests/original/scripts.yaml` by `the_scripts_run_the_originals_steps`.
//! 3. Null fields of the original's output are dropped: its kustomization patches
//!    `storageClassName` with an empty template var, which kustomize writes as
//!    `null` and the API server takes as unset, as our PVC leaves it.
//!
//! Anything else that differs fails the test: an improvement of ours must be
//! opt-in (a template var or a setting), never on by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use runboat_core::KubefilesMode;
use runboat_k8s::{Kubefiles, RenderContext};
use serde_json::{Value, json};

use crate::support::{
    kubectl_available, kubefiles_dir, kustomize, names, native, original_branch, original_pr,
};

const SCRIPTS_CONFIGMAP_SUFFIX: &str = "-runboat-scripts";
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/original")
}

/// The original's objects for a context and mode, normalised.
fn original(context: &str, mode: KubefilesMode) -> Vec<Value> {
    let path = fixtures_dir().join(format!("{context}-{mode}.yaml"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    objects.into_iter().map(|mut o| normalise(&mut o, false)).collect()
}

/// Applies the normalisations of the module doc; `ours` for our rendered objects.
fn normalise(object: &mut Value, ours: bool) -> Value {
    drop_nulls(object);
    let is_scripts = object["kind"] == "ConfigMap"
        && object["metadata"]["name"]
            .as_str()
            .is_some_and(|name| name.ends_with(SCRIPTS_CONFIGMAP_SUFFIX));
    if is_scripts && let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            *value = Value::String("(script)".into());
        }
    }
    if ours && object["kind"] == "Job" {
        let first = object
            .pointer("/spec/template/spec/containers/0/name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let metadata = object.pointer_mut("/spec/template/metadata").and_then(Value::as_object_mut);
        if let (Some(first), Some(metadata)) = (first, metadata) {
            let annotations = metadata.get_mut("annotations").and_then(Value::as_object_mut);
            if let Some(annotations) = annotations
                && annotations.get(DEFAULT_CONTAINER).and_then(Value::as_str) == Some(&first)
            {
                annotations.remove(DEFAULT_CONTAINER);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
        }
    }
    object.clone()
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn by_name(objects: &[Value]) -> BTreeMap<String, &Value> {
    names(objects).into_iter().zip(objects).collect()
}

/// Our objects against the original's: `Err` says the first difference.
async fn compare(kubefiles: &Kubefiles, context: &str, ctx: RenderContext) -> Result<(), String> {
    let mode = ctx.mode;
    let origin = kubefiles.origin();
    let ours: Vec<Value> = kubefiles
        .render(&ctx)
        .await
        .map_err(|err| format!("{origin} renders {mode}: {err}"))?
        .into_iter()
        .map(|mut o| normalise(&mut o, true))
        .collect();
    let theirs = original(context, mode);
    let (ours, theirs) = (by_name(&ours), by_name(&theirs));
    if ours.keys().ne(theirs.keys()) {
        return Err(format!(
            "{origin} {context} {mode}: not the original's objects\n ours: {:?}\n original: {:?}",
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        ));
    }
    for (name, expected) in theirs {
        let actual = ours[&name];
        if actual != expected {
            return Err(format!(
                "{origin} {context} {mode}: {name} differs from the original's\n--- ours:\n{}\n--- original:\n{}",
                serde_json::to_string_pretty(actual).expect("json"),
                serde_json::to_string_pretty(expected).expect("json"),
            ));
        }
    }
    Ok(())
}

async fn check_every_mode(kubefiles: &Kubefiles) {
    for mode in KubefilesMode::ALL {
        for (context, ctx) in [("branch", original_branch(mode)), ("pr", original_pr(mode))] {
            if let Err(difference) = compare(kubefiles, context, ctx).await {
                panic!("{difference}");
            }
        }
    }
}

#[tokio::test]
async fn native_renders_the_originals_objects_in_every_mode() {
    check_every_mode(&native()).await;
}

#[tokio::test]
async fn kustomize_renders_the_originals_objects_in_every_mode() {
    if !kubectl_available("kustomize_renders_the_originals_objects_in_every_mode").await {
        return;
    }
    check_every_mode(&kustomize()).await;
}

#[tokio::test]
async fn an_improvement_turned_on_is_a_difference() {
    // Each opt-in makes the objects differ from the original's, so none can be on by
    // default without this comparison failing.
    let opt_ins = [
        (KubefilesMode::Deployment, "automountServiceAccountToken", json!(false)),
        (KubefilesMode::Deployment, "podSecurityContext", json!({"runAsNonRoot": true})),
        (KubefilesMode::Deployment, "storageRequest", json!("2Gi")),
        (KubefilesMode::Deployment, "mailImage", json!("axllent/mailpit:latest")),
        (KubefilesMode::Deployment, "tlsSecretName", json!("wildcard-tls")),
        (KubefilesMode::Initialize, "githubTokenSecretName", json!("org-token")),
        (KubefilesMode::Cleanup, "cleanupImage", json!("postgres:17")),
    ];
    for (mode, var, value) in opt_ins {
        let mut ctx = original_branch(mode);
        ctx.build_template_vars.insert(var.into(), value);
        let difference = compare(&native(), "branch", ctx).await;
        assert!(difference.is_err(), "{var} changes nothing the comparison sees");
    }
    // And a token in the secret env adds its own Secret.
    let mut ctx = original_pr(KubefilesMode::Initialize);
    ctx.build_secret_env.insert("RUNBOAT_GITHUB_TOKEN".into(), "ghp_t0ken".into());
    let difference = compare(&native(), "pr", ctx).await.expect_err("a token Secret");
    assert!(difference.contains("not the original's objects"), "{difference}");
    assert!(!difference.contains("ghp_t0ken"), "no secret in the report");
}

/// A script in the normal form of `scripts.yaml`: no comment lines, no double
/// quotes.
fn normal_form(script: &str) -> String {
    script
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace('"', "")
}

/// The first of `steps` that `script` does not run in that order, if any.
fn missing_step<'a>(script: &str, steps: &'a [String]) -> Option<&'a str> {
    let text = normal_form(script);
    let mut from = 0;
    for step in steps {
        match text[from..].find(step.as_str()) {
            Some(at) => from += at + step.len(),
            None => return Some(step),
        }
    }
    None
}

#[test]
fn the_scripts_run_the_originals_steps() {
    let path = fixtures_dir().join("scripts.yaml");
    let text = std::fs::read_to_string(&path).expect("scripts.yaml");
    let expected: BTreeMap<String, BTreeMap<String, Vec<String>>> =
        serde_saphyr::from_str(&text).expect("scripts.yaml parses");
    let mut ours: Vec<String> = std::fs::read_dir(kubefiles_dir("native"))
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sh"))
        .collect();
    ours.sort();
    assert_eq!(ours, expected.keys().cloned().collect::<Vec<_>>(), "the original's scripts");
    for (script, facts) in &expected {
        let text = std::fs::read_to_string(kubefiles_dir("native").join(script)).expect("read");
        if let Some(step) = missing_step(&text, &facts["steps"]) {
            panic!("{script}: the original's step {step:?} is missing or out of order");
        }
        let text = normal_form(&text);
        for absent in &facts["absent"] {
            assert!(
                !text.contains(absent.as_str()),
                "{script}: the original does not run {absent:?}"
            );
        }
    }
}

#[test]
fn the_step_check_sees_a_missing_or_reordered_step() {
    let steps: Vec<String> =
        ["apt-get update -qq", "apt-get install -qq"].map(String::from).to_vec();
    let ours = "apt-get update -qq\nDEBIAN_FRONTEND=noninteractive apt-get install -qq x\n";
    assert_eq!(missing_step(ours, &steps), None);
    // The failure the issue reported: install without update (here only in a comment).
    let dropped = "# apt-get update -qq\napt-get install -qq x\n";
    assert_eq!(missing_step(dropped, &steps), Some("apt-get update -qq"));
    let reordered = "apt-get install -qq x\napt-get update -qq\n";
    assert_eq!(missing_step(reordered, &steps), Some("apt-get install -qq"));
}
