//! The errors of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in runboat-k8s.
///
/// Messages never carry secret values: text quoted from rendered kubefiles or from
/// kubectl is redacted first.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kubefiles directory (or one of its files) could not be read.
    #[error("cannot read kubefiles at {}", path.display())]
    ReadKubefiles {
        /// The file or directory that failed.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A kubefile is not UTF-8 text.
    #[error("kubefile {} is not UTF-8 text", path.display())]
    NotText {
        /// The offending file, relative to the kubefiles directory.
        path: PathBuf,
    },

    /// A kubefile path is not a plain relative path inside the set.
    #[error("kubefile path {path:?} is not a relative path inside the kubefiles")]
    BadPath {
        /// The offending path.
        path: String,
    },

    /// The kubefiles contain no template at all.
    #[error("no kubefiles found in {origin} (expected *.yaml, *.yaml.jinja or a kustomization)")]
    NoKubefiles {
        /// Where the kubefiles were looked for.
        origin: String,
    },

    /// The render variables cannot be used (e.g. a build name that is not a DNS label).
    #[error("invalid render context: {reason}")]
    InvalidContext {
        /// What is wrong.
        reason: String,
    },

    /// A template failed to compile or to render (an unknown variable, a syntax error...).
    #[error("kubefile {file}, line {line}: {message}")]
    Template {
        /// The template that failed.
        file: String,
        /// Its line, 0 when unknown.
        line: usize,
        /// What failed, with secret values redacted. (The template
        /// engine's own error is not kept as a source: its text could show
        /// a secret value, and it says nothing more than this message.)
        message: String,
    },

    /// A rendered kubefile is not valid YAML.
    #[error("kubefile {file} does not render to valid YAML: {message}")]
    Yaml {
        /// The kubefile (or `kubectl kustomize output`).
        file: String,
        /// The parser's message, secrets redacted.
        message: String,
    },

    /// A rendered document is not a Kubernetes object runboat can apply.
    #[error("kubefile {file}: {reason}")]
    InvalidObject {
        /// The kubefile (or `kubectl kustomize output`).
        file: String,
        /// What is wrong with the object.
        reason: String,
    },

    /// Two rendered objects have the same kind and name.
    #[error("kubefiles render {kind} {name:?} twice")]
    DuplicateObject {
        /// The object's kind.
        kind: String,
        /// Its (prefixed) name.
        name: String,
    },

    /// `kubectl` cannot be run, and kustomize-format kubefiles need it.
    #[error(
        "kustomize kubefiles need `kubectl` on PATH (`kubectl kustomize`), and it cannot be run"
    )]
    KustomizeUnavailable {
        /// Why it could not be run.
        #[source]
        source: std::io::Error,
    },

    /// `kubectl kustomize` ran and failed.
    #[error("kubectl kustomize failed ({status}): {stderr}")]
    Kustomize {
        /// Its exit status.
        status: String,
        /// Its error output, secrets redacted, truncated.
        stderr: String,
    },

    /// `kubectl kustomize` did not finish in time.
    #[error("kubectl kustomize did not finish within {0:?}")]
    KustomizeTimeout(Duration),

    /// The temporary directory for kustomize could not be prepared.
    #[error("cannot prepare the kustomize directory")]
    TempDir {
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The Kubernetes client could not be configured (no kubeconfig, no in-cluster
    /// service account...).
    #[error(
        "could not load a Kubernetes client configuration (looked for KUBECONFIG, \
         ~/.kube/config and the in-cluster service account)"
    )]
    KubeConfig {
        /// kube's error.
        #[source]
        source: kube::config::InferConfigError,
    },

    /// A `deployment_resource_types` entry cannot be resolved through API
    /// discovery (the cluster does not serve it, or discovery failed).
    #[error("deployment_resource_types cannot be resolved")]
    ResourceTypes {
        /// Why (names the entry).
        #[source]
        source: runboat_core::ClusterError,
    },

    /// The Kubernetes client could not be built from its configuration.
    #[error("cannot build the Kubernetes client for {cluster_url}")]
    KubeClient {
        /// The API server the configuration names.
        cluster_url: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },

    /// A configured kubefiles directory cannot be used; `setting` names the
    /// setting (`repos[2].kubefiles_path (repo "^oca/.*", branch ".*")`).
    /// The source says why, and names the path.
    #[error("{setting}")]
    KubefilesSetting {
        /// The setting that names the directory.
        setting: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<Error>,
    },

    /// A name in `deployment_resource_types` is not a resource type runboat knows.
    #[error("unknown resource type {name:?} in deployment_resource_types (known: {known})")]
    UnknownResourceType {
        /// The name as configured.
        name: String,
        /// The names runboat knows.
        known: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
