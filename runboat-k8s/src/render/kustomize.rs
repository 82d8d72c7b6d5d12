//! Kustomize kubefiles (the original runboat's format): render the `*.jinja` files
//! into a temporary directory next to copies of the other files, and build it with
//! `kubectl kustomize`.

use std::borrow::Cow;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::context::RenderContext;
use super::{Kubefiles, parse_documents, stamp, truncate};
use crate::error::{Error, Result};

/// The default `kubectl` program, looked up on `PATH`.
pub(super) const KUBECTL: &str = "kubectl";
/// `kubectl kustomize` takes about 130 ms; a minute means it is stuck.
const KUSTOMIZE_TIMEOUT: Duration = Duration::from_secs(60);
const OUTPUT_FILE: &str = "kubectl kustomize output";

/// Checks that `kubectl` (hence `kubectl kustomize`) can be run, and returns its
/// client and kustomize versions. Call it at startup when kustomize kubefiles are
/// configured, so a missing kubectl fails there and not at the first build.
pub async fn check_kustomize_available() -> Result<String> {
    check_kubectl_at(Path::new(KUBECTL)).await
}

/// Like [`check_kustomize_available`], for a given `kubectl` program.
pub async fn check_kubectl_at(kubectl: &Path) -> Result<String> {
    let unavailable = |source| Error::KustomizeUnavailable { source };
    let run = Command::new(kubectl)
        .args(["version", "--client", "--output=json"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(KUSTOMIZE_TIMEOUT, run)
        .await
        .map_err(|_| unavailable(std::io::Error::other("`kubectl version --client` timed out")))?
        .map_err(unavailable)?;
    if !output.status.success() {
        return Err(unavailable(std::io::Error::other(format!(
            "`kubectl version --client` failed ({})",
            output.status
        ))));
    }
    let version: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let field = |pointer: &str| {
        version.pointer(pointer).and_then(Value::as_str).unwrap_or("unknown").to_owned()
    };
    Ok(format!(
        "kubectl {}, kustomize {}",
        field("/clientVersion/gitVersion"),
        field("/kustomizeVersion")
    ))
}

pub(super) async fn render(kubefiles: &Kubefiles, ctx: &RenderContext) -> Result<Vec<Value>> {
    check_carriable(ctx)?;
    let dir = tempfile::Builder::new()
        .prefix("runboat-kustomize-")
        .tempdir()
        .map_err(|source| Error::TempDir { source })?;
    write_rendered(kubefiles, ctx, dir.path())?;
    let stdout = kustomize(&kubefiles.kubectl, dir.path(), ctx).await?;
    let mut objects = Vec::new();
    for mut document in parse_documents(&stdout, OUTPUT_FILE, ctx)? {
        // The kustomization selects resources by mode; an annotation can narrow it.
        if stamp::keep_for_mode(&mut document, ctx.mode, None, OUTPUT_FILE)? {
            stamp::stamp(&mut document, ctx, OUTPUT_FILE)?;
            objects.push(document);
        }
    }
    stamp::finish(objects, ctx.mode)
}

/// Characters kustomize's YAML library does not carry through faithfully: it fails on
/// DEL, C1 controls and U+FFFE/U+FFFF in its own output, and writes NEL and the line
/// and paragraph separators (U+2028, U+2029) raw where its own reader then takes them
/// for line breaks (the value is folded into spaces, or kustomize panics with "wrong
/// node kind" when `: ` follows). Values containing them are refused up front rather
/// than silently altered.
fn kustomize_cannot_carry(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}')
}

fn check_carriable(ctx: &RenderContext) -> Result<()> {
    let commit = &ctx.commit_info;
    let fields = [
        ("build_slug", ctx.build_slug.as_str()),
        ("build_domain", &ctx.build_domain),
        ("commit_info.repo", commit.repo()),
        ("commit_info.target_branch", commit.target_branch()),
        ("commit_info.git_commit", commit.git_commit()),
        ("image_name", &ctx.image_name),
        ("image_tag", &ctx.image_tag),
    ];
    let env = ctx.build_env.iter().map(|(key, value)| (format!("build_env.{key}"), value));
    let secret_env =
        ctx.build_secret_env.iter().map(|(key, value)| (format!("build_secret_env.{key}"), value));
    let vars = ctx
        .build_template_vars
        .iter()
        .map(|(key, value)| (format!("build_template_vars.{key}"), value.to_string()));
    let bad = fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .chain(env.chain(secret_env).map(|(name, value)| (name, value.clone())))
        .chain(vars)
        .find_map(|(name, value)| {
            value.chars().find(|c| kustomize_cannot_carry(*c)).map(|c| (name, c))
        });
    match bad {
        Some((name, c)) => Err(Error::InvalidContext {
            reason: format!(
                "{name} contains U+{:04X}, which kustomize kubefiles cannot carry",
                u32::from(c)
            ),
        }),
        None => Ok(()),
    }
}

/// Writes every file into `dir`, `*.jinja` ones rendered and without the suffix.
fn write_rendered(kubefiles: &Kubefiles, ctx: &RenderContext, dir: &Path) -> Result<()> {
    let vars = minijinja::Value::from(minijinja::value::Serde(ctx));
    let io_error = |source| Error::TempDir { source };
    for (path, content) in kubefiles.files.iter() {
        let (target, text) = match path.strip_suffix(".jinja") {
            Some(target) => (target, Cow::Owned(kubefiles.render_template(path, &vars, ctx)?)),
            None => (path.as_str(), Cow::Borrowed(content.as_str())),
        };
        let destination = dir.join(target);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        std::fs::write(&destination, text.as_bytes()).map_err(io_error)?;
    }
    Ok(())
}

async fn kustomize(kubectl: &Path, dir: &Path, ctx: &RenderContext) -> Result<String> {
    let run = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(KUSTOMIZE_TIMEOUT, run)
        .await
        .map_err(|_| Error::KustomizeTimeout(KUSTOMIZE_TIMEOUT))?
        .map_err(|source| Error::KustomizeUnavailable { source })?;
    if !output.status.success() {
        // kustomize quotes file contents in some errors: redact secrets, and the
        // temporary directory's name is noise.
        let stderr = String::from_utf8_lossy(&output.stderr)
            .replace(&dir.display().to_string(), "<kubefiles>");
        let mut stderr = ctx.redact(stderr.trim());
        truncate(&mut stderr, 2000);
        return Err(Error::Kustomize { status: output.status.to_string(), stderr });
    }
    String::from_utf8(output.stdout).map_err(|_| Error::Kustomize {
        status: output.status.to_string(),
        stderr: "output is not UTF-8".into(),
    })
}
