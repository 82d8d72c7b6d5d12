//! Values from outside (branch and repository names, env values, template vars)
//! cannot inject YAML into the default kubefiles: whatever they contain, the
//! rendered objects carry exactly those strings, and nothing more.

use std::collections::BTreeMap;

use proptest::prelude::*;
use runboat_core::{CommitInfo, KubefilesMode};
use runboat_k8s::{Kubefiles, RenderContext};
use serde_json::{Value, json};

use crate::support::{find, full, kubectl_available, kustomize, names, native};

/// Strings made of the pieces that break naive YAML templating, plus anything.
fn hostile_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just(": ".to_owned()),
        Just("{{ build_name }}".to_owned()),
        Just("{%".to_owned()),
        Just("#".to_owned()),
        Just("\n---\nkind: Secret\n".to_owned()),
        Just("- ".to_owned()),
        Just("\\".to_owned()),
        Just("&a *a !!str |".to_owned()),
        Just("é漢🦀".to_owned()),
        Just("\u{85}".to_owned()),
        Just("\u{2028}\u{2029}".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\u{7f}".to_owned()),
        Just("\t\u{b}\u{1b}".to_owned()),
        "[ -~]{1,6}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

#[derive(Debug, Clone)]
struct Outside {
    repo: String,
    branch: String,
    env: BTreeMap<String, String>,
    secret: String,
    storage_class: String,
    tls_secret: String,
    domain: String,
}

fn outside() -> impl Strategy<Value = Outside> {
    (
        hostile_string(),
        hostile_string(),
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,8}", hostile_string(), 0..4),
        hostile_string(),
        hostile_string(),
        hostile_string(),
        hostile_string(),
    )
        .prop_map(|(repo, branch, env, secret, storage_class, tls_secret, domain)| Outside {
            repo,
            branch,
            env,
            secret,
            storage_class,
            tls_secret,
            domain,
        })
}

/// Characters the kustomize format refuses (see `kustomize_cannot_carry` in the crate):
/// DEL, C1 controls (NEL included), U+2028/U+2029, U+FFFE/U+FFFF.
fn kustomize_cannot_carry(outside: &Outside) -> bool {
    let bad = |s: &String| {
        s.chars().any(|c| {
            matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}')
        })
    };
    [
        &outside.repo,
        &outside.branch,
        &outside.secret,
        &outside.storage_class,
        &outside.tls_secret,
        &outside.domain,
    ]
    .into_iter()
    .chain(outside.env.values())
    .any(bad)
}

fn context(mode: KubefilesMode, outside: &Outside) -> RenderContext {
    let mut ctx = full(mode);
    // Only a valid commit can reach rendering: hostile repo and branch
    // names that CommitInfo accepts (quotes, braces, YAML and Jinja syntax
    // are valid in a branch name) go into commit_info; the others still
    // come in through the template vars below.
    let sha = ctx.commit_info.git_commit().to_owned();
    let default_repo = ctx.commit_info.repo().to_owned();
    if let Ok(commit) = CommitInfo::new(&outside.repo, &outside.branch, Some(42), &sha)
        .or_else(|_| CommitInfo::new(&default_repo, &outside.branch, Some(42), &sha))
    {
        ctx.commit_info = commit;
    }
    ctx.build_domain = outside.domain.clone();
    ctx.build_env = outside.env.clone();
    ctx.build_secret_env.insert("PGPASSWORD".into(), outside.secret.clone());
    ctx.build_template_vars.insert("storageClassName".into(), json!(outside.storage_class));
    ctx.build_template_vars.insert("tlsSecretName".into(), json!(outside.tls_secret));
    // A map from outside: hostile keys and values. The key is never empty
    // (Kubernetes refuses an empty annotation key, and `kubectl kustomize`
    // panics on one), as a branch name never is.
    ctx.build_template_vars.insert(
        "ingressAnnotations".into(),
        json!({ format!("k{}", outside.branch): outside.storage_class.clone(), "x": outside.repo.clone() }),
    );
    ctx
}

fn check(
    objects: &[Value],
    mode: KubefilesMode,
    ctx: &RenderContext,
    expected_names: &[String],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(names(objects), expected_names, "no object injected or lost");
    for object in objects {
        let annotations = &object["metadata"]["annotations"];
        prop_assert_eq!(
            &annotations["runboat/target-branch"],
            &json!(ctx.commit_info.target_branch())
        );
        prop_assert_eq!(
            &annotations["runboat/repo"],
            &json!(ctx.commit_info.repo().to_lowercase())
        );
    }
    let env = find(objects, "ConfigMap", "-odooenv");
    prop_assert_eq!(&env["data"]["RUNBOAT_GIT_REPO"], &json!(ctx.commit_info.repo()));
    for (key, value) in &ctx.build_env {
        if !["PGDATABASE", "ADDONS_DIR", "RUNBOAT_GIT_REPO", "RUNBOAT_GIT_REF"]
            .contains(&key.as_str())
        {
            prop_assert_eq!(&env["data"][key], &json!(value));
        }
    }
    let secret = find(objects, "Secret", "-odoosecretenv");
    let password = secret["data"]["PGPASSWORD"].as_str().unwrap_or_default();
    prop_assert_eq!(decode_base64(password), ctx.build_secret_env["PGPASSWORD"].as_bytes());
    if mode == KubefilesMode::Deployment {
        let pvc = find(objects, "PersistentVolumeClaim", "-data");
        prop_assert_eq!(
            &pvc["spec"]["storageClassName"],
            &ctx.build_template_vars["storageClassName"]
        );
        let ingress = find(objects, "Ingress", "-odoo");
        let host = format!("{}.{}", ctx.build_slug, ctx.build_domain);
        prop_assert_eq!(&ingress["spec"]["rules"][0]["host"], &json!(host));
        prop_assert_eq!(
            &ingress["spec"]["tls"][0]["secretName"],
            &ctx.build_template_vars["tlsSecretName"]
        );
        let wanted = ctx.build_template_vars["ingressAnnotations"].as_object();
        for (key, value) in wanted.into_iter().flatten() {
            prop_assert_eq!(
                &ingress["metadata"]["annotations"][key],
                value,
                "annotation {:?}",
                key
            );
        }
    }
    Ok(())
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let n = data.iter().enumerate().fold(0, |n, (i, &c)| n | (value(c) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..data.len().saturating_sub(1)]);
    }
    out
}

async fn expected_names(kubefiles: &Kubefiles, mode: KubefilesMode) -> Vec<String> {
    names(&kubefiles.render(&full(mode)).await.expect("renders"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn native_default_kubefiles_carry_outside_strings_exactly(outside in outside()) {
        let rt = runtime();
        let kubefiles = native();
        for mode in [KubefilesMode::Deployment, KubefilesMode::Initialize] {
            let expected = rt.block_on(expected_names(&kubefiles, mode));
            let ctx = context(mode, &outside);
            let objects = rt.block_on(kubefiles.render(&ctx));
            let objects = objects.map_err(|err| TestCaseError::fail(format!("render failed: {err}")))?;
            check(&objects, mode, &ctx, &expected)?;
        }
    }
}

proptest! {
    // kubectl kustomize takes ~100 ms a call: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(20))]

    #[test]
    fn kustomize_default_kubefiles_carry_outside_strings_exactly(outside in outside()) {
        let rt = runtime();
        if !rt.block_on(kubectl_available("kustomize_default_kubefiles_carry_outside_strings_exactly")) {
            return Ok(());
        }
        let kubefiles = kustomize();
        let mode = KubefilesMode::Deployment;
        let expected = rt.block_on(expected_names(&kubefiles, mode));
        let ctx = context(mode, &outside);
        let objects = rt.block_on(kubefiles.render(&ctx));
        if kustomize_cannot_carry(&outside) {
            let outcome = objects.map(|objects| names(&objects));
            prop_assert!(matches!(outcome, Err(runboat_k8s::Error::InvalidContext { .. })), "{:?}", outcome);
            return Ok(());
        }
        let objects = objects.map_err(|err| TestCaseError::fail(format!("render failed: {err}")))?;
        check(&objects, mode, &ctx, &expected)?;
    }
}

#[tokio::test]
async fn long_values_are_carried_too() {
    let long = "x: \"y\"\n---\n{{ 'é' }} # ".repeat(1000);
    let outside = Outside {
        repo: long.clone(),
        branch: long.clone(),
        env: BTreeMap::from([("LONG".to_owned(), long.clone())]),
        secret: long.clone(),
        storage_class: long.clone(),
        tls_secret: long.clone(),
        domain: long,
    };
    let kubefiles = native();
    let expected = expected_names(&kubefiles, KubefilesMode::Deployment).await;
    let mut ctx = context(KubefilesMode::Deployment, &outside);
    // YAML limits implicit keys to 1024 characters (Kubernetes keys to 253 anyway):
    // only values are long here.
    ctx.build_template_vars.insert("ingressAnnotations".into(), json!({ "k": outside.repo }));
    let objects = kubefiles.render(&ctx).await.expect("renders");
    check(&objects, KubefilesMode::Deployment, &ctx, &expected).expect("carried exactly");
    if kubectl_available("long_values_are_carried_too (kustomize)").await {
        let objects = kustomize().render(&ctx).await.expect("renders");
        check(&objects, KubefilesMode::Deployment, &ctx, &expected).expect("carried exactly");
    }
}

/// Every outside value empty (but the branch, which never is): proptest
/// found this case failing when an empty branch was used as an annotation
/// key.
#[tokio::test]
async fn kustomize_carries_empty_values() {
    if !kubectl_available("kustomize_carries_empty_values").await {
        return;
    }
    let outside = Outside {
        repo: String::new(),
        branch: "b".to_owned(),
        env: BTreeMap::new(),
        secret: String::new(),
        storage_class: String::new(),
        tls_secret: String::new(),
        domain: String::new(),
    };
    let kubefiles = kustomize();
    let expected = expected_names(&kubefiles, KubefilesMode::Deployment).await;
    let ctx = context(KubefilesMode::Deployment, &outside);
    let objects = kubefiles.render(&ctx).await.expect("renders");
    check(&objects, KubefilesMode::Deployment, &ctx, &expected).expect("carried exactly");
}
