//! Kubefiles: loading a directory (or the embedded default set), rendering it for a
//! build and a mode, and stamping runboat's contract on the resulting objects.
//!
//! Two formats, told apart by the presence of a kustomization:
//!
//! - **native** (the default set): every `*.yaml` / `*.yaml.jinja` file is a
//!   minijinja template whose `{{ expressions }}` are written as quoted YAML
//!   scalars; the documents are kept or dropped by their `runboat/modes` annotation.
//!   No subprocess.
//! - **kustomize** (the original runboat's directories): `*.jinja` files are rendered
//!   into a temporary directory with plain Jinja2 output, then `kubectl kustomize` builds
//!   the objects.
//!
//! Both then go through the same contract stamping (see [`stamp`]). The result is a
//! list of Kubernetes objects as JSON values, in apply order. This module knows
//! nothing of the API server.

mod context;
mod embedded;
mod jinja;
mod kustomize;
mod native;
pub mod stamp;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Environment;

pub use self::context::RenderContext;
use self::jinja::Escaping;
pub use self::kustomize::{check_kubectl_at, check_kustomize_available};
use crate::error::{Error, Result};

/// The format of a kubefiles set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Templates rendered and split in-process.
    Native,
    /// Templates rendered into a directory built by `kubectl kustomize`.
    Kustomize,
}

/// File names that make a directory a kustomization (before or after rendering).
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// A loaded set of kubefiles, with its templates compiled; cheap to render many times.
pub struct Kubefiles {
    origin: String,
    format: Format,
    /// Every file, by path relative to the set's root (`/`-separated).
    files: Arc<BTreeMap<String, String>>,
    /// The templates, by the same path.
    templates: Vec<String>,
    env: Environment<'static>,
    /// The program run for kustomize kubefiles.
    kubectl: PathBuf,
}

impl fmt::Debug for Kubefiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubefiles")
            .field("origin", &self.origin)
            .field("format", &self.format)
            .field("templates", &self.templates)
            .finish_non_exhaustive()
    }
}

impl Kubefiles {
    /// The default Odoo kubefiles, embedded in the binary (native format).
    pub fn embedded() -> Result<Kubefiles> {
        let files = embedded::FILES
            .iter()
            .map(|(name, content)| ((*name).to_owned(), (*content).to_owned()))
            .collect();
        Kubefiles::from_files("the embedded default kubefiles", files)
    }

    /// Loads every file under `dir` (recursively; hidden files skipped). The format is
    /// kustomize if the root holds a `kustomization.yaml[.jinja]`, native otherwise.
    pub fn load(dir: impl AsRef<Path>) -> Result<Kubefiles> {
        let dir = dir.as_ref();
        let mut files = BTreeMap::new();
        read_dir_into(dir, dir, &mut files)?;
        Kubefiles::from_files(&dir.display().to_string(), files)
    }

    /// Builds a set from in-memory files (path relative to the root → content).
    pub fn from_files(origin: &str, files: BTreeMap<String, String>) -> Result<Kubefiles> {
        // Kustomize writes these paths under a temporary directory: no escaping it.
        if let Some(path) = files.keys().find(|path| {
            path.is_empty()
                || path.starts_with('/')
                || path.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        }) {
            return Err(Error::BadPath { path: path.clone() });
        }
        let is_kustomize = KUSTOMIZATION_FILES
            .iter()
            .any(|k| files.contains_key(*k) || files.contains_key(&format!("{k}.jinja")));
        let format = if is_kustomize { Format::Kustomize } else { Format::Native };
        let templates: Vec<String> = files
            .keys()
            .filter(|path| match format {
                // Only the root: subdirectories are free for documentation or data.
                Format::Native => !path.contains('/') && jinja::is_yaml_template(path),
                Format::Kustomize => path.ends_with(".jinja"),
            })
            .cloned()
            .collect();
        if templates.is_empty() && format == Format::Native {
            return Err(Error::NoKubefiles { origin: origin.to_owned() });
        }
        let files = Arc::new(files);
        let escaping = match format {
            Format::Native => Escaping::Yaml,
            Format::Kustomize => Escaping::None,
        };
        let mut env = jinja::environment(Arc::clone(&files), escaping);
        for path in &templates {
            let source = files.get(path).cloned().unwrap_or_default();
            env.add_template_owned(path.clone(), source).map_err(template_error)?;
        }
        let kubectl = PathBuf::from(kustomize::KUBECTL);
        Ok(Kubefiles { origin: origin.to_owned(), format, files, templates, env, kubectl })
    }

    /// Runs `kubectl` from this path instead of `PATH` (kustomize format only).
    pub fn with_kubectl(mut self, kubectl: impl Into<PathBuf>) -> Kubefiles {
        self.kubectl = kubectl.into();
        self
    }

    /// The format detected when loading.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Where the set was loaded from (for messages).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders the objects of `ctx.mode` for the build of `ctx`, contract stamped, in
    /// apply order.
    pub async fn render(&self, ctx: &RenderContext) -> Result<Vec<serde_json::Value>> {
        ctx.validate()?;
        match self.format {
            Format::Native => native::render(self, ctx),
            Format::Kustomize => kustomize::render(self, ctx).await,
        }
    }

    /// Renders one template to text.
    fn render_template(
        &self,
        path: &str,
        vars: &minijinja::Value,
        ctx: &RenderContext,
    ) -> Result<String> {
        self.env.get_template(path).and_then(|t| t.render(vars)).map_err(|err| {
            let mut err = template_error(err);
            if let Error::Template { message, .. } = &mut err {
                *message = ctx.redact(message);
            }
            err
        })
    }
}

/// Converts a template error, naming the file and line.
fn template_error(err: minijinja::Error) -> Error {
    let message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    Error::Template {
        file: err.name().unwrap_or("(unknown template)").to_owned(),
        line: err.line().unwrap_or(0),
        message,
    }
}

/// Parses rendered text into its YAML documents, like the API server reads them
/// (YAML 1.1 octal numbers such as a `defaultMode: 0755`).
fn parse_documents(text: &str, file: &str, ctx: &RenderContext) -> Result<Vec<serde_json::Value>> {
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        // A snippet of the rendered text could show a secret.
        with_snippet: false,
        crop_radius: 0,
    };
    serde_saphyr::from_multiple_with_options(text, options).map_err(|err| {
        let mut message = ctx.redact(&err.to_string());
        truncate(&mut message, 2000);
        Error::Yaml { file: file.to_owned(), message }
    })
}

fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" [...]");
    }
}

fn read_dir_into(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) -> Result<()> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::ReadKubefiles { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(read_error(dir))?;
    for entry in entries {
        let entry = entry.map_err(read_error(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symlinks, as kustomize does.
        let metadata = std::fs::metadata(&path).map_err(read_error(&path))?;
        if metadata.is_dir() {
            read_dir_into(root, &path, files)?;
        } else if metadata.is_file() {
            let relative = relative_path(root, &path);
            let bytes = std::fs::read(&path).map_err(read_error(&path))?;
            let text =
                String::from_utf8(bytes).map_err(|_| Error::NotText { path: relative.clone() })?;
            files.insert(relative.to_string_lossy().replace('\\', "/"), text);
        }
    }
    Ok(())
}

fn relative_path(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}
