//! [`KubeCluster`]: runboat-core's [`Cluster`] on a real Kubernetes API
//! server, with kube-rs, for one build namespace.
//!
//! Everything is addressed by build name: the build's Deployment, Jobs and
//! pods are found by their `runboat/build` label, never by a guessed name.
//!
//! # Applying kubefiles
//!
//! The kubefiles of the settings rule matching the commit are rendered (see
//! [`crate::render`]), the whole set is server-side applied as a dry run
//! (so a rejected object creates nothing), then every object is applied
//! with server-side apply (field manager `runboat`, forced). Object kinds are
//! resolved through discovery once and cached.
//!
//! The Deployment's `spec.replicas` and `runboat/init-status` belong to the
//! controller (scale and init-status patches), not to the kubefiles: only
//! mode `deployment` sets them. If the apply field manager owned them, the
//! next apply in another mode (which leaves them out) would remove them —
//! the API server would then reset replicas to 1 and drop the init status.
//! So in mode `deployment` the Deployment is *created* with them (a plain
//! create), or, when it exists already (a reset), applied without them and
//! then patched with them.

mod convert;
mod errors;
mod resources;
pub mod slim;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use runboat_core::cluster::ErrorDetail;
use runboat_core::contract::{
    ANNOTATION_BUILD_BACKENDS, ANNOTATION_DEFAULT_CONTAINER, ANNOTATION_INIT_STATUS,
    ANNOTATION_LAST_SCALED, ANNOTATION_PINNED, ANNOTATION_ROUTE, FINALIZER_CLEANUP, LABEL_BUILD,
    LABEL_JOB_KIND, format_last_scaled,
};
use runboat_core::settings::WakeService;
use runboat_core::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, CommitInfo, DeploymentFacts, InitStatus,
    JobFacts, JobKind, KubefilesMode, LogFollow, LogSource, LogTail, Route, Settings,
};
use serde_json::{Value, json};

use self::errors::{cluster_error, is_conflict, is_not_found};
use self::slim::{SlimDeployment, SlimJob};
use self::watch::watcher_config;
use crate::error::{Error, Result};
use crate::render::{Format, Kubefiles, RenderContext};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "runboat";
/// The merge patch that points `ingress`'s service backends at `route`
/// (`None`: they already do). To the wake Service: the build's own backends
/// are saved (JSON, in rule and path order) in `runboat/build-backends`,
/// unless every backend points at the wake Service already. Back to the
/// build: the saved ones are put back and the annotation removed (without
/// it, the backends are the kubefiles' and stay). The resourceVersion makes
/// the patch conditional.
pub fn route_patch(ingress: &Value, route: Route, wake: Option<&WakeService>) -> Option<Value> {
    // Without a wake Service (the setting was removed) only the way back
    // is possible, and every saved backend goes back.
    let wake_backend = wake.map(|w| json!({"name": w.name, "port": {"number": w.port}}));
    let mut rules = ingress.pointer("/spec/rules")?.as_array()?.clone();
    let saved: Option<Vec<Value>> = ingress
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_BUILD_BACKENDS))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    let mut services: Vec<&mut Value> = rules
        .iter_mut()
        .filter_map(|r| r.pointer_mut("/http/paths").and_then(Value::as_array_mut))
        .flatten()
        .filter_map(|p| p.pointer_mut("/backend/service"))
        .collect();
    let annotation = match route {
        Route::Wake => {
            let wake_backend = wake_backend?;
            if services.iter().all(|s| **s == wake_backend) {
                return None;
            }
            let own: Vec<Value> = services
                .iter()
                .enumerate()
                .map(|(i, s)| match saved.as_ref().and_then(|v| v.get(i)) {
                    Some(before) if **s == wake_backend => before.clone(),
                    _ => (**s).clone(),
                })
                .collect();
            for s in &mut services {
                **s = wake_backend.clone();
            }
            Value::String(serde_json::to_string(&own).unwrap_or_default())
        }
        Route::Build => {
            let saved = saved?;
            for (s, own) in services.iter_mut().zip(saved) {
                if wake_backend.as_ref().is_none_or(|w| **s == *w) {
                    **s = own;
                }
            }
            Value::Null
        }
    };
    Some(json!({
        "metadata": {
            "resourceVersion": ingress.pointer("/metadata/resourceVersion"),
            "annotations": {ANNOTATION_BUILD_BACKENDS: annotation},
        },
        "spec": {"rules": rules},
    }))
}

/// The field manager of the routing writes (the Ingress backends while a
/// build sleeps), distinct from the kubefiles' server-side apply.
pub const ROUTE_FIELD_MANAGER: &str = "runboat-router";

/// Attempts of a read-modify-write (finalizer removal) before giving up
/// with a conflict.
const CONFLICT_ATTEMPTS: usize = 8;

/// runboat's [`Cluster`] on a Kubernetes API server. Cheap to clone.
#[derive(Clone)]
pub struct KubeCluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    namespace: String,
    settings: Arc<Settings>,
    /// Kubefiles used when the rule and the settings name none.
    default_kubefiles: Arc<Kubefiles>,
    /// Kubefiles loaded from a directory, by path.
    kubefiles_by_path: HashMap<PathBuf, Arc<Kubefiles>>,
    /// What `delete_build_resources` deletes, as configured.
    delete_types: Vec<resources::DeleteType>,
    /// The same, every type resolved (after discovery, when a configured
    /// type is not a built-in one): filled at the first undeploy.
    resolved_delete_types: tokio::sync::OnceCell<Vec<ApiResource>>,
    /// A configured type the cluster does not serve, once discovery said
    /// so: every later undeploy fails at once with it, without asking
    /// again (a transient discovery error is not remembered).
    unresolvable_delete_type: Mutex<Option<ClusterError>>,
    /// API resources by (apiVersion, kind), from discovery.
    resources: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    /// Deployment name by build name (names never change for a build).
    deployment_names: Mutex<HashMap<String, String>>,
    deployments: Api<Deployment>,
    jobs: Api<Job>,
    /// The same Deployments as `deployments`, decoded slim for the watch.
    watched_deployments: Api<SlimDeployment>,
    /// The same Jobs as `jobs`, decoded slim for the watch.
    watched_jobs: Api<SlimJob>,
    pods: Api<Pod>,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("namespace", &self.inner.namespace)
            .field("default_kubefiles", &self.inner.default_kubefiles.origin())
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// A cluster on `client` for `settings.build_namespace`.
    ///
    /// Loads every configured kubefiles directory (the default one and each
    /// rule's), checks that `kubectl` can run when one of them is in the
    /// kustomize format ([`Error::KustomizeUnavailable`] otherwise), and
    /// resolves `deployment_resource_types` ([`Error::UnknownResourceType`]).
    /// No API call is made.
    pub async fn new(client: Client, settings: Arc<Settings>) -> Result<KubeCluster> {
        let configured = configured_kubefiles(&settings);
        let load = |(setting, path): &(String, PathBuf)| {
            Kubefiles::load(path).map(Arc::new).map_err(|source| Error::KubefilesSetting {
                setting: setting.clone(),
                path: path.clone(),
                source: Box::new(source),
            })
        };
        let mut kubefiles_by_path: HashMap<PathBuf, Arc<Kubefiles>> = HashMap::new();
        let mut kustomize_setting = None;
        for entry in &configured {
            if kubefiles_by_path.contains_key(&entry.1) {
                continue;
            }
            let kubefiles = load(entry)?;
            if kubefiles.format() == Format::Kustomize && kustomize_setting.is_none() {
                kustomize_setting = Some(entry);
            }
            tracing::info!(
                setting = %entry.0,
                path = %entry.1.display(),
                format = ?kubefiles.format(),
                "kubefiles loaded"
            );
            kubefiles_by_path.insert(entry.1.clone(), kubefiles);
        }
        let default_kubefiles = match &settings.build_default_kubefiles_path {
            Some(path) => Arc::clone(&kubefiles_by_path[path]),
            None => Arc::new(Kubefiles::embedded()?),
        };
        if let Some((setting, path)) = kustomize_setting {
            let version = crate::render::check_kustomize_available().await.map_err(|source| {
                Error::KubefilesSetting {
                    setting: setting.clone(),
                    path: path.clone(),
                    source: Box::new(source),
                }
            })?;
            tracing::info!(%version, "kustomize kubefiles configured");
        }
        let delete_types = settings
            .deployment_resource_types
            .iter()
            .map(|name| resources::resource_type(name))
            .collect::<Result<Vec<_>>>()?;
        let namespace = settings.build_namespace.clone();
        Ok(KubeCluster {
            inner: Arc::new(Inner {
                deployments: Api::namespaced(client.clone(), &namespace),
                jobs: Api::namespaced(client.clone(), &namespace),
                watched_deployments: Api::namespaced(client.clone(), &namespace),
                watched_jobs: Api::namespaced(client.clone(), &namespace),
                pods: Api::namespaced(client.clone(), &namespace),
                client,
                namespace,
                settings,
                default_kubefiles,
                kubefiles_by_path,
                delete_types,
                resolved_delete_types: tokio::sync::OnceCell::new(),
                unresolvable_delete_type: Mutex::new(None),
                resources: Mutex::new(HashMap::new()),
                deployment_names: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The one startup path of the server: [`KubeCluster::new`] with a
    /// client from kube's standard inference (`KUBECONFIG`, else
    /// `~/.kube/config`, else the in-cluster service account). Every error
    /// says what is missing, or names the setting at fault. No API call is
    /// made: the controller's first listing does.
    pub async fn from_settings(settings: Arc<Settings>) -> Result<KubeCluster> {
        let config = kube::Config::infer().await.map_err(|source| Error::KubeConfig { source })?;
        // Scheme, host and port only: a URL's user info is a credential.
        let url = &config.cluster_url;
        let cluster_url = format!(
            "{}://{}{}",
            url.scheme_str().unwrap_or("https"),
            url.host().unwrap_or(""),
            url.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
        );
        tracing::info!(
            api_server = %cluster_url,
            namespace = %settings.build_namespace,
            "Kubernetes configuration"
        );
        let client =
            Client::try_from(config).map_err(|source| Error::KubeClient { cluster_url, source })?;
        let cluster = KubeCluster::new(client, settings).await?;
        // Types that are not built-in are resolved now (one API discovery),
        // so that a name the cluster does not serve stops the server with
        // its name rather than failing every undeploy later.
        if cluster
            .inner
            .delete_types
            .iter()
            .any(|t| matches!(t, resources::DeleteType::Discover(_)))
        {
            cluster.inner.delete_types().await.map_err(|source| Error::ResourceTypes { source })?;
        }
        Ok(cluster)
    }

    /// The build namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Starts a leader election on the Lease `config.name` of the build
    /// namespace, with this cluster's client.
    pub fn elect(&self, config: crate::LeaseConfig) -> crate::LeaderElector {
        let api = kube::Api::namespaced(self.inner.client.clone(), &self.inner.namespace);
        crate::LeaderElector::spawn(api, config)
    }
}

impl Inner {
    /// `deployment_resource_types` as API resources, resolved once.
    async fn delete_types(&self) -> ClusterResult<&Vec<ApiResource>> {
        if let Some(err) = lock(&self.unresolvable_delete_type).clone() {
            return Err(err);
        }
        let resolved = self.resolved_delete_types.get_or_try_init(|| self.resolve_delete_types());
        match resolved.await {
            Ok(types) => Ok(types),
            Err(err) => {
                if matches!(err, ClusterError::Invalid(_)) {
                    *lock(&self.unresolvable_delete_type) = Some(err.clone());
                }
                Err(err)
            }
        }
    }

    /// `deployment_resource_types` as API resources; the names that are not
    /// built-in types are looked up through API discovery (one discovery
    /// for all of them).
    async fn resolve_delete_types(&self) -> ClusterResult<Vec<ApiResource>> {
        let mut discovery = None;
        let mut out = Vec::with_capacity(self.delete_types.len());
        for t in &self.delete_types {
            match t {
                resources::DeleteType::Known(ar) => out.push(ar.clone()),
                resources::DeleteType::Discover(name) => {
                    if discovery.is_none() {
                        let what = "API discovery for deployment_resource_types";
                        let found = kube::discovery::Discovery::new(self.client.clone())
                            .run()
                            .await
                            .map_err(|e| cluster_error(what, e))?;
                        discovery = Some(found);
                    }
                    let Some(found) = discovery.as_ref() else { continue };
                    let ar = resources::discover(found, name).ok_or_else(|| {
                        ClusterError::Invalid(
                            format!(
                                "deployment_resource_types: the cluster serves no namespaced \
                                 resource type {name:?}"
                            )
                            .into(),
                        )
                    })?;
                    tracing::info!(
                        name,
                        resource = %ar.plural,
                        api_version = %ar.api_version,
                        "deployment_resource_types entry resolved through discovery"
                    );
                    out.push(ar);
                }
            }
        }
        Ok(out)
    }
}

/// The configured kubefiles directories, each with the setting naming it
/// (for messages): the default one, then each repo rule's.
fn configured_kubefiles(settings: &Settings) -> Vec<(String, PathBuf)> {
    let mut dirs = Vec::new();
    if let Some(path) = &settings.build_default_kubefiles_path {
        dirs.push((
            "build_default_kubefiles_path (RUNBOAT_BUILD_DEFAULT_KUBEFILES_PATH)".to_owned(),
            path.clone(),
        ));
    }
    for (i, rule) in settings.repos.iter().enumerate() {
        if let Some(path) = &rule.build.kubefiles_path {
            dirs.push((
                format!(
                    "repos[{i}].kubefiles_path (repo {:?}, branch {:?})",
                    rule.repo_pattern, rule.branch_pattern
                ),
                path.clone(),
            ));
        }
    }
    dirs
}

/// A build name must be usable in a label selector and as a name prefix.
fn check_build_name(build_name: &str) -> ClusterResult<()> {
    let ok = !build_name.is_empty()
        && build_name.len() <= 63
        && build_name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Invalid(format!("bad build name {build_name:?}").into()))
    }
}

fn build_selector(build_name: &str) -> String {
    format!("{LABEL_BUILD}={build_name}")
}

fn job_selector(build_name: &str, kind: JobKind) -> String {
    format!("{LABEL_BUILD}={build_name},{LABEL_JOB_KIND}={}", kind.as_str())
}

/// `api.patch` without reading the object the API server answers with:
/// kube's `Api::patch` decodes it whole, which was ~17 % of the server's
/// CPU per build in the lifecycle benchmark, for an answer nobody reads.
/// Errors are the same `kube::Error`s (kube checks the status and parses a
/// `Status` body on failure).
async fn patch_unread<K: kube::Resource, P: serde::Serialize>(
    api: &Api<K>,
    client: &kube::Client,
    name: &str,
    pp: &PatchParams,
    patch: &Patch<P>,
) -> kube::Result<()> {
    let mut req = kube::core::Request::new(api.resource_url())
        .patch(name, pp, patch)
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("patch");
    client.request_text(req).await.map(drop)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ok when the call succeeded or answered 404.
fn ok_if_not_found<T>(what: &str, r: kube::Result<T>) -> ClusterResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(cluster_error(what, e)),
    }
}

fn render_error(err: Error) -> ClusterError {
    let transient = matches!(
        err,
        Error::KustomizeUnavailable { .. }
            | Error::KustomizeTimeout(_)
            | Error::TempDir { .. }
            | Error::ReadKubefiles { .. }
    );
    let detail = ErrorDetail::caused_by("rendering the kubefiles", err);
    if transient { ClusterError::Transient(detail) } else { ClusterError::Invalid(detail) }
}

/// One rendered object with what is needed to send it.
struct Rendered {
    name: String,
    api: Api<DynamicObject>,
    object: Value,
    is_deployment: bool,
}

impl Inner {
    fn kubefiles_for(
        &self,
        build_name: &str,
        commit: &CommitInfo,
    ) -> ClusterResult<(Arc<Kubefiles>, RenderContext)> {
        let settings = &self.settings;
        let rule = settings.rule_for(commit.repo(), commit.target_branch()).ok_or_else(|| {
            ClusterError::Invalid(
                format!(
                    "no repo rule supports branch {} of {}",
                    commit.target_branch(),
                    commit.repo()
                )
                .into(),
            )
        })?;
        let kubefiles = match settings.kubefiles_path_for(rule) {
            Some(path) => self.kubefiles_by_path.get(path).cloned().ok_or_else(|| {
                ClusterError::Invalid(format!("kubefiles {} not loaded", path.display()).into())
            })?,
            None => Arc::clone(&self.default_kubefiles),
        };
        let ctx = RenderContext {
            namespace: self.namespace.clone(),
            mode: KubefilesMode::Deployment,
            build_name: build_name.to_owned(),
            build_slug: commit.slug(),
            build_domain: settings.build_domain.clone(),
            commit_info: commit.clone(),
            image_name: rule.image_name.clone(),
            image_tag: rule.image_tag.clone(),
            build_env: settings.build_env_for(rule),
            build_secret_env: settings
                .build_secret_env_for(rule)
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_owned()))
                .collect(),
            build_template_vars: settings
                .build_template_vars_for(rule)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        };
        Ok((kubefiles, ctx))
    }

    /// The API resource of an object (discovery, cached).
    async fn resource_of(&self, object: &Value) -> ClusterResult<(ApiResource, bool)> {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = lock(&self.resources).get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) =
            kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| match &e {
                kube::Error::Discovery(_) => ClusterError::Invalid(ErrorDetail::caused_by(
                    format!("unknown kind {kind} of {api_version}"),
                    e,
                )),
                _ => cluster_error(&format!("discovery of {api_version} {kind}"), e),
            })?;
        let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
        lock(&self.resources).insert(key, (ar.clone(), namespaced));
        Ok((ar, namespaced))
    }

    async fn prepare(&self, object: Value) -> ClusterResult<Rendered> {
        let (ar, namespaced) = self.resource_of(&object).await?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ClusterError::Invalid("a rendered object has no name".into()))?
            .to_owned();
        let api = if namespaced {
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        let is_deployment = ar.group == "apps" && ar.kind == "Deployment";
        Ok(Rendered { name, api, object, is_deployment })
    }

    async fn apply(
        &self,
        build_name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()> {
        let (kubefiles, mut ctx) = self.kubefiles_for(build_name, commit)?;
        ctx.mode = mode;
        let objects = kubefiles.render(&ctx).await.map_err(render_error)?;
        let mut rendered = Vec::with_capacity(objects.len());
        for object in objects {
            rendered.push(self.prepare(object).await?);
        }
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        // The whole set first as a dry run: a rejected object creates nothing.
        let dry_run = apply.clone().dry_run();
        futures::future::try_join_all(rendered.iter().map(|r| {
            let dry_run = &dry_run;
            async move {
                patch_unread(&r.api, &self.client, &r.name, dry_run, &Patch::Apply(&r.object))
                    .await
                    .map_err(|e| cluster_error(&format!("dry run of {}", r.name), e))
            }
        }))
        .await?;
        let mut ingress = false;
        for r in &rendered {
            ingress |= r.object.get("kind").and_then(Value::as_str) == Some("Ingress");
            if r.is_deployment && mode == KubefilesMode::Deployment {
                self.apply_new_deployment(r, &apply).await?;
            } else {
                patch_unread(&r.api, &self.client, &r.name, &apply, &Patch::Apply(&r.object))
                    .await
                    .map_err(|e| cluster_error(&format!("apply of {}", r.name), e))?;
            }
            if r.is_deployment {
                lock(&self.deployment_names).insert(ctx.build_name.clone(), r.name.clone());
            }
        }
        // The apply put the kubefiles' backends back: a sleeping build's
        // Ingress points at the wake Service again.
        if ingress && self.settings.wake_service.is_some() {
            let route = self.find_deployment(build_name).await?.and_then(|d| {
                d.metadata.annotations?.get(ANNOTATION_ROUTE).and_then(|v| Route::parse(v))
            });
            if route == Some(Route::Wake) {
                self.route_ingresses(build_name, Route::Wake).await?;
            }
        }
        Ok(())
    }

    /// Points every backend of the build's Ingresses at `route`: the wake
    /// Service (saving the build's own backends in an annotation), or back
    /// to the saved ones (also without `wake_service`, for builds routed
    /// before it was removed; to the wake Service is then a no-op).
    async fn route_ingresses(&self, build_name: &str, route: Route) -> ClusterResult<()> {
        let wake = self.settings.wake_service.as_ref();
        if wake.is_none() && route == Route::Wake {
            return Ok(());
        }
        check_build_name(build_name)?;
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress"),
                "ingresses",
            ),
        );
        let params = PatchParams {
            field_manager: Some(ROUTE_FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let lp = ListParams::default().labels(&format!("{LABEL_BUILD}={build_name}"));
        for _ in 0..CONFLICT_ATTEMPTS {
            let list = api
                .list(&lp)
                .await
                .map_err(|e| cluster_error(&format!("list of the ingresses of {build_name}"), e))?;
            let mut conflicted = false;
            for ingress in list.items {
                let Some(name) = ingress.metadata.name.clone() else { continue };
                let object = serde_json::to_value(&ingress).unwrap_or(Value::Null);
                let Some(patch) = route_patch(&object, route, wake) else { continue };
                match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) if is_conflict(&e) => {
                        conflicted = true;
                        break;
                    }
                    Err(e) => return Err(cluster_error(&format!("routing of {name}"), e)),
                }
            }
            if !conflicted {
                return Ok(());
            }
        }
        Err(ClusterError::Conflict(format!("routing of {build_name} kept conflicting").into()))
    }

    /// Mode `deployment`: create the Deployment with its replicas and init
    /// status, or (reset) apply it without them and patch them (see the
    /// module docs for why).
    async fn apply_new_deployment(&self, r: &Rendered, apply: &PatchParams) -> ClusterResult<()> {
        let what = format!("create of {}", r.name);
        let object: DynamicObject = serde_json::from_value(r.object.clone())
            .map_err(|e| ClusterError::Invalid(ErrorDetail::caused_by(what.clone(), e)))?;
        let post = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.to_owned()) };
        match r.api.create(&post, &object).await {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(cluster_error(&what, e)),
        }
        let mut stripped = r.object.clone();
        let replicas = stripped
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .and_then(|spec| spec.remove("replicas"))
            .unwrap_or(json!(0));
        let init_status = stripped
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
            .and_then(|a| a.remove(ANNOTATION_INIT_STATUS))
            .unwrap_or(json!(InitStatus::Todo.as_str()));
        patch_unread(&r.api, &self.client, &r.name, apply, &Patch::Apply(&stripped))
            .await
            .map_err(|e| cluster_error(&format!("apply of {}", r.name), e))?;
        let state = json!({
            "metadata": {"annotations": {ANNOTATION_INIT_STATUS: init_status}},
            "spec": {"replicas": replicas},
        });
        patch_unread(&r.api, &self.client, &r.name, &PatchParams::default(), &Patch::Merge(&state))
            .await
            .map_err(|e| cluster_error(&format!("reset of {}", r.name), e))?;
        Ok(())
    }

    /// The build's Deployment, read now.
    async fn find_deployment(&self, build_name: &str) -> ClusterResult<Option<Deployment>> {
        check_build_name(build_name)?;
        let list = self
            .deployments
            .list(&ListParams::default().labels(&build_selector(build_name)))
            .await
            .map_err(|e| cluster_error(&format!("list of the deployment of {build_name}"), e))?;
        if list.items.len() > 1 {
            tracing::warn!(build = build_name, "several Deployments carry this build's label");
        }
        let found = list.items.into_iter().next();
        if let Some(name) = found.as_ref().and_then(|d| d.metadata.name.clone()) {
            lock(&self.deployment_names).insert(build_name.to_owned(), name);
        }
        Ok(found)
    }

    /// The build's Deployment, read now: by its cached name when there is
    /// one (a GET, where a label-selected list makes the API server filter
    /// every Deployment of the namespace), checked to still carry the
    /// build's label; otherwise, or when that name is gone, by label.
    async fn read_deployment(&self, build_name: &str) -> ClusterResult<Option<Deployment>> {
        check_build_name(build_name)?;
        let cached = lock(&self.deployment_names).get(build_name).cloned();
        if let Some(name) = cached {
            match self.deployments.get_opt(&name).await {
                Ok(Some(d))
                    if d.metadata.labels.as_ref().and_then(|l| l.get(LABEL_BUILD))
                        == Some(&build_name.to_owned()) =>
                {
                    return Ok(Some(d));
                }
                Ok(_) => {
                    lock(&self.deployment_names).remove(build_name);
                }
                Err(e) => return Err(cluster_error(&format!("read of {name}"), e)),
            }
        }
        self.find_deployment(build_name).await
    }

    /// The name of the build's Deployment (cached), `None` when there is none.
    async fn deployment_name(&self, build_name: &str) -> ClusterResult<Option<String>> {
        check_build_name(build_name)?;
        if let Some(name) = lock(&self.deployment_names).get(build_name) {
            return Ok(Some(name.clone()));
        }
        Ok(self.find_deployment(build_name).await?.and_then(|d| d.metadata.name))
    }

    /// Merge-patches the build's Deployment; a cached name that turned out
    /// stale is looked up again once.
    async fn patch_deployment(
        &self,
        build_name: &str,
        what: &str,
        patch: &Value,
    ) -> ClusterResult<()> {
        for _ in 0..2 {
            let Some(name) = self.deployment_name(build_name).await? else {
                return Err(ClusterError::NotFound(
                    format!("{what}: no deployment for {build_name}").into(),
                ));
            };
            let merge = Patch::Merge(patch);
            match patch_unread(
                &self.deployments,
                &self.client,
                &name,
                &PatchParams::default(),
                &merge,
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {
                    lock(&self.deployment_names).remove(build_name);
                }
                Err(e) => return Err(cluster_error(&format!("{what} of {name}"), e)),
            }
        }
        Err(ClusterError::NotFound(format!("{what}: no deployment for {build_name}").into()))
    }

    /// The newest pod matching `selector`.
    async fn newest_pod(&self, selector: &str) -> ClusterResult<Option<Pod>> {
        let list = self
            .pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| cluster_error(&format!("list of pods {selector}"), e))?;
        Ok(list.items.into_iter().max_by(|a, b| {
            let key = |p: &Pod| {
                (p.metadata.deletion_timestamp.is_none(), p.metadata.creation_timestamp.clone())
            };
            key(a).cmp(&key(b))
        }))
    }

    /// The pod (and container) of one of the build's logs, if it has
    /// started.
    async fn log_pod(
        &self,
        build_name: &str,
        source: LogSource,
    ) -> ClusterResult<Option<(String, Option<String>)>> {
        check_build_name(build_name)?;
        let selector = match source {
            LogSource::Init => job_selector(build_name, JobKind::Initialize),
            LogSource::Run => format!("{LABEL_BUILD}={build_name},!{LABEL_JOB_KIND}"),
        };
        let Some(pod) = self.newest_pod(&selector).await? else { return Ok(None) };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase == "Pending" {
            return Ok(None);
        }
        let container = match source {
            LogSource::Init => None,
            LogSource::Run => pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_DEFAULT_CONTAINER))
                .cloned(),
        };
        Ok(pod.metadata.name.map(|name| (name, container)))
    }

    async fn pod_log(&self, name: &str, params: LogParams) -> ClusterResult<Option<String>> {
        match self.pods.logs(name, &params).await {
            Ok(log) => Ok(Some(log)),
            // Gone, or its container is not running yet.
            Err(e) if is_not_found(&e) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 400 => {
                tracing::debug!(pod = name, message = s.message, "no log yet");
                Ok(None)
            }
            Err(e) => Err(cluster_error(&format!("log of {name}"), e)),
        }
    }
}

/// The line length [`Cluster::log_tail`] first assumes, to turn a byte
/// budget into `tailLines`.
const TAIL_LINE_BYTES: usize = 120;

#[async_trait]
impl Cluster for KubeCluster {
    fn deployment_events(&self) -> BoxStream<'static, ClusterEvent<DeploymentFacts>> {
        watch::events(
            self.inner.watched_deployments.clone(),
            watcher_config(),
            convert::deployment_facts,
        )
    }

    fn job_events(&self) -> BoxStream<'static, ClusterEvent<JobFacts>> {
        watch::events(self.inner.watched_jobs.clone(), watcher_config(), convert::job_facts)
    }

    async fn apply_kubefiles(
        &self,
        build_name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()> {
        self.inner.apply(build_name, commit, mode).await
    }

    async fn scale(&self, build_name: &str, replicas: i32) -> ClusterResult<()> {
        let now = format_last_scaled(jiff::Timestamp::now());
        let patch = json!({
            "metadata": {"annotations": {ANNOTATION_LAST_SCALED: now}},
            "spec": {"replicas": replicas},
        });
        self.inner.patch_deployment(build_name, "scale", &patch).await
    }

    async fn set_init_status(&self, build_name: &str, status: InitStatus) -> ClusterResult<()> {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_INIT_STATUS: status.as_str()}}});
        self.inner.patch_deployment(build_name, "set init status", &patch).await
    }

    async fn set_route(&self, build_name: &str, route: Route) -> ClusterResult<()> {
        // The Ingresses first, the record after: a failure in between is
        // retried from the same (unrecorded) state.
        self.inner.route_ingresses(build_name, route).await?;
        let patch = json!({"metadata": {"annotations": {ANNOTATION_ROUTE: route.as_str()}}});
        self.inner.patch_deployment(build_name, "set route", &patch).await
    }

    async fn set_pinned(&self, build_name: &str, pinned: bool) -> ClusterResult<()> {
        // A merge patch (not the kubefiles' field manager): a reset
        // re-applying the kubefiles, which do not name the annotation,
        // leaves it alone. `null` removes it.
        let value = if pinned { json!("true") } else { Value::Null };
        let patch = json!({"metadata": {"annotations": {ANNOTATION_PINNED: value}}});
        self.inner.patch_deployment(build_name, "set pinned", &patch).await
    }

    async fn delete_deployment(&self, build_name: &str) -> ClusterResult<()> {
        // A fresh read, not the name cache: deleting the wrong name would
        // silently leave the build deployed.
        let found = self.inner.find_deployment(build_name).await?;
        let Some(name) = found.and_then(|d| d.metadata.name) else { return Ok(()) };
        let r = self.inner.deployments.delete(&name, &DeleteParams::background()).await;
        ok_if_not_found(&format!("delete of {name}"), r)
    }

    async fn remove_finalizer(&self, build_name: &str) -> ClusterResult<()> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let Some(deployment) = self.inner.find_deployment(build_name).await? else {
                return Ok(());
            };
            let meta = &deployment.metadata;
            let finalizers = meta.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == FINALIZER_CLEANUP) {
                return Ok(());
            }
            let Some(name) = meta.name.clone() else { return Ok(()) };
            let kept: Vec<String> =
                finalizers.into_iter().filter(|f| f != FINALIZER_CLEANUP).collect();
            // The resourceVersion makes the patch conditional: a concurrent
            // change of the list answers 409 and we read again.
            let patch = json!({
                "metadata": {"resourceVersion": meta.resource_version, "finalizers": kept},
            });
            match self
                .inner
                .deployments
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(deployment = name, "finalizer removal conflicted; retrying");
                }
                Err(e) => return Err(cluster_error(&format!("finalizer removal of {name}"), e)),
            }
        }
        Err(ClusterError::Conflict(
            format!("finalizer removal of {build_name} kept conflicting").into(),
        ))
    }

    async fn kill_jobs(&self, build_name: &str, kind: JobKind) -> ClusterResult<()> {
        check_build_name(build_name)?;
        let lp = ListParams::default().labels(&job_selector(build_name, kind));
        let dp = DeleteParams::background().grace_period(0);
        let r = self.inner.jobs.delete_collection(&dp, &lp).await;
        ok_if_not_found(&format!("delete of {kind} jobs of {build_name}"), r)?;
        let r = self.inner.pods.delete_collection(&dp, &lp).await;
        ok_if_not_found(&format!("delete of {kind} pods of {build_name}"), r)
    }

    async fn delete_build_resources(&self, build_name: &str) -> ClusterResult<()> {
        check_build_name(build_name)?;
        let inner = &self.inner;
        let lp = ListParams::default().labels(&build_selector(build_name));
        let dp = DeleteParams::background();
        let types = inner.delete_types().await?;
        for ar in types {
            let api: Api<DynamicObject> =
                Api::namespaced_with(inner.client.clone(), &inner.namespace, ar);
            let r = api.delete_collection(&dp, &lp).await;
            ok_if_not_found(&format!("delete of {} of {build_name}", ar.plural), r)?;
        }
        // The pods of its jobs, at once.
        let job_pods =
            ListParams::default().labels(&format!("{LABEL_BUILD}={build_name},{LABEL_JOB_KIND}"));
        let r = inner
            .pods
            .delete_collection(&DeleteParams::background().grace_period(0), &job_pods)
            .await;
        ok_if_not_found(&format!("delete of job pods of {build_name}"), r)?;
        lock(&inner.deployment_names).remove(build_name);
        Ok(())
    }

    async fn init_log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        let Some((name, container)) = self.inner.log_pod(build_name, LogSource::Init).await? else {
            return Ok(None);
        };
        self.inner.pod_log(&name, LogParams { container, ..LogParams::default() }).await
    }

    async fn log(&self, build_name: &str) -> ClusterResult<Option<String>> {
        let Some((name, container)) = self.inner.log_pod(build_name, LogSource::Run).await? else {
            return Ok(None);
        };
        self.inner.pod_log(&name, LogParams { container, ..LogParams::default() }).await
    }

    async fn log_tail(
        &self,
        build_name: &str,
        source: LogSource,
        limit_bytes: usize,
    ) -> ClusterResult<Option<LogTail>> {
        let Some((name, container)) = self.inner.log_pod(build_name, source).await? else {
            return Ok(None);
        };
        // The API server cuts by lines from the end (`tailLines`), then by
        // bytes (`limitBytes`, from the start of those lines): ask for the
        // lines that likely fit, for fewer when they do not, for more when
        // they fill less than half of the budget. Each answer is at most
        // the budget.
        let limit = i64::try_from(limit_bytes).unwrap_or(i64::MAX);
        let mut lines = (limit_bytes / TAIL_LINE_BYTES).max(16);
        let mut best: Option<LogTail> = None;
        for _ in 0..6 {
            let params = LogParams {
                container: container.clone(),
                tail_lines: i64::try_from(lines).ok(),
                limit_bytes: Some(limit.saturating_add(1)),
                ..LogParams::default()
            };
            let Some(text) = self.inner.pod_log(&name, params).await? else { return Ok(None) };
            if text.len() > limit_bytes {
                if best.is_some() {
                    break;
                }
                if lines == 1 {
                    // One line longer than the budget: its start.
                    let mut end = limit_bytes;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    return Ok(Some(LogTail { text: text[..end].to_owned(), truncated: true }));
                }
                lines = (lines / 4).max(1);
                continue;
            }
            // Fewer lines than asked: the whole log.
            let complete = text.lines().count() < lines;
            let enough = complete || text.len() >= limit_bytes / 2;
            best = Some(LogTail { text, truncated: !complete });
            if enough {
                break;
            }
            lines = lines.saturating_mul(4);
        }
        Ok(best)
    }

    async fn follow_log(
        &self,
        build_name: &str,
        source: LogSource,
    ) -> ClusterResult<Option<LogFollow>> {
        let Some((name, container)) = self.inner.log_pod(build_name, source).await? else {
            return Ok(None);
        };
        let params = LogParams { container, follow: true, ..LogParams::default() };
        let reader = match self.inner.pods.log_stream(&name, &params).await {
            Ok(reader) => reader,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(kube::Error::Api(s)) if s.code == 400 => {
                tracing::debug!(pod = name, message = s.message, "no log yet");
                return Ok(None);
            }
            Err(e) => return Err(cluster_error(&format!("log of {name}"), e)),
        };
        let context = format!("log of {name}");
        let chunks = futures::stream::unfold(Some(Box::pin(reader)), move |reader| {
            let context = context.clone();
            async move {
                let mut reader = reader?;
                let mut buf = vec![0u8; 16 * 1024];
                match futures::AsyncReadExt::read(&mut reader, &mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(buf), Some(reader)))
                    }
                    Err(e) => Some((
                        Err(ClusterError::Transient(ErrorDetail::caused_by(context, e))),
                        None,
                    )),
                }
            }
        })
        .boxed();
        Ok(Some(LogFollow { pod: name, chunks }))
    }

    async fn get_deployment(&self, build_name: &str) -> ClusterResult<Option<DeploymentFacts>> {
        Ok(self
            .inner
            .read_deployment(build_name)
            .await?
            .as_ref()
            .map(SlimDeployment::from)
            .as_ref()
            .and_then(convert::deployment_facts))
    }
}
