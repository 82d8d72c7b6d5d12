//! `runboat-server --demo`: the whole product on a laptop, with no cluster
//! and no network.
//!
//! Interim implementation: the controller drives runboat-core's in-memory
//! simulated cluster (`SimCluster`, feature `testing`), not kubesim through
//! runboat-k8s (which does not exist yet), so the kubefiles are not
//! rendered. A generator sends signed GitHub webhooks (pushes, pull
//! requests opened, updated and closed) through the real webhook endpoint
//! every few seconds, and now and then starts a build through the API, so
//! builds appear, initialize, fail or succeed, start and stop in the
//! browser within a minute. Built only with the `demo` feature, which is
//! never part of production builds.

/// Runs the demo on `listen` until SIGTERM/SIGINT.
#[cfg(not(feature = "demo"))]
pub async fn run(
    listen: std::net::SocketAddr,
    options: crate::ServerOptions,
) -> crate::error::Result<()> {
    use crate::error::Error;
    let _ = (listen, options);
    Err(Error::NotAvailable(
        "this runboat-server was built without the demo: run \
         `cargo run -p runboat-server --features demo -- --demo`"
            .to_owned(),
    ))
}

#[cfg(feature = "demo")]
pub use imp::run;

#[cfg(feature = "demo")]
mod imp {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use runboat_core::forge::NoForge;
    use runboat_core::sim::{JobScript, SimCluster, SimConfig};
    use runboat_core::{
        BuildStatus, Cluster, Controller, ControllerConfig, SearchFilters, Settings, SortOrder,
    };
    use runboat_github::WebhookSecret;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::error::{Error, Result};
    use crate::run::{bind, serve_until, shutdown_signal};
    use crate::{AppState, Backend, ServerOptions, app};

    const SECRET: &str = "demo";
    const REPOS: [&str; 2] = ["demo/odoo-addons", "demo/website"];
    const BRANCHES: [&str; 2] = ["16.0", "17.0"];

    fn settings(listen: SocketAddr) -> Result<Settings> {
        let host = if listen.ip().is_unspecified() {
            format!("localhost:{}", listen.port())
        } else {
            listen.to_string()
        };
        let toml = format!(
            r#"
api_admin_user = "demo"
api_admin_passwd = "demo"
build_namespace = "runboat-demo"
build_domain = "runboat-demo.invalid"
base_url = "http://{host}"
github_webhook_secret = "{SECRET}"
disable_commit_statuses = true
max_initializing = 2
max_started = 3
max_deployed = 14
additional_footer_html = "demo mode: simulated cluster, generated webhooks (instance links lead nowhere)"

[[repos]]
repo = "^demo/.*"
branch = "^1[67]\\.0$"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }}]
"#
        );
        Settings::from_toml_str(&toml).map_err(Error::Settings)
    }

    /// xorshift64*: enough randomness for a demo, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn sha(&mut self) -> String {
            format!("{:016x}{:016x}{:08x}", self.next(), self.next(), self.next() as u32)
        }
    }

    async fn deliver(router: &axum::Router, event: &str, payload: serde_json::Value) {
        let body = payload.to_string().into_bytes();
        let signature = WebhookSecret::new(SECRET).sign(&body);
        let request = Request::post("/webhooks/github")
            .header("X-GitHub-Event", event)
            .header("X-Hub-Signature-256", signature)
            .header("content-type", "application/json")
            .body(Body::from(body));
        let Ok(request) = request else { return };
        match router.clone().oneshot(request).await {
            Ok(resp) => tracing::info!(event, status = resp.status().as_u16(), "demo webhook"),
            Err(e) => tracing::warn!(event, error = %e, "demo webhook failed"),
        }
    }

    async fn generate(router: axum::Router, backend: Arc<dyn Backend>, seed: u64) {
        let mut rng = Rng(seed | 1);
        // Open pull requests: (repo, number, base branch).
        let mut open: Vec<(usize, u64, usize)> = Vec::new();
        let mut next_pr = 1;
        let mut tick = tokio::time::interval(Duration::from_secs(4));
        loop {
            tick.tick().await;
            let roll = rng.below(100);
            if roll < 40 {
                let repo = REPOS[rng.below(2) as usize];
                let branch = BRANCHES[rng.below(2) as usize];
                let payload = json!({
                    "ref": format!("refs/heads/{branch}"),
                    "after": rng.sha(),
                    "repository": {"full_name": repo},
                });
                deliver(&router, "push", payload).await;
            } else if roll < 80 {
                let reuse = !open.is_empty() && rng.below(2) == 0;
                let (repo, number, base, action) = if reuse {
                    let (r, n, b) = open[rng.below(open.len() as u64) as usize];
                    (r, n, b, "synchronize")
                } else {
                    let pr = (rng.below(2) as usize, next_pr, rng.below(2) as usize);
                    next_pr += 1;
                    open.push(pr);
                    (pr.0, pr.1, pr.2, "opened")
                };
                let payload = json!({
                    "action": action,
                    "number": number,
                    "pull_request": {
                        "number": number,
                        "base": {"ref": BRANCHES[base]},
                        "head": {"sha": rng.sha()},
                    },
                    "repository": {"full_name": REPOS[repo]},
                });
                deliver(&router, "pull_request", payload).await;
            } else if roll < 88 && !open.is_empty() {
                let (repo, number, base) = open.remove(rng.below(open.len() as u64) as usize);
                let payload = json!({
                    "action": "closed",
                    "number": number,
                    "pull_request": {
                        "number": number,
                        "base": {"ref": BRANCHES[base]},
                        "head": {"sha": rng.sha()},
                    },
                    "repository": {"full_name": REPOS[repo]},
                });
                deliver(&router, "pull_request", payload).await;
            } else {
                // Someone clicks "start" on a stopped build.
                let stopped = crate::backend::read_index(backend.as_ref(), |index| {
                    let filters = SearchFilters {
                        status: Some(BuildStatus::Stopped),
                        ..SearchFilters::default()
                    };
                    index
                        .search(&filters, SortOrder::Desc)
                        .into_iter()
                        .map(|b| b.name.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
                if !stopped.is_empty() {
                    let name = &stopped[rng.below(stopped.len() as u64) as usize];
                    let request =
                        Request::post(format!("/api/v1/builds/{name}/start")).body(Body::empty());
                    if let Ok(request) = request {
                        let _ = router.clone().oneshot(request).await;
                        tracing::info!(build = %name, "demo: start");
                    }
                }
            }
        }
    }

    /// Runs the demo on `listen` until SIGTERM/SIGINT.
    pub async fn run(listen: SocketAddr, options: ServerOptions) -> Result<()> {
        let listener = bind(listen).await?;
        let addr = listener.local_addr().unwrap_or(listen);
        let settings = Arc::new(settings(addr)?);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        let sim = SimCluster::new(SimConfig {
            seed,
            scale_delay: Duration::from_secs(2),
            init_job: JobScript::succeed_after(Duration::from_secs(10)),
            init_failure_rate: 0.25,
            cleanup_job: JobScript::succeed_after(Duration::from_secs(3)),
            ..SimConfig::default()
        });
        let cluster: Arc<dyn Cluster> = Arc::new(sim);
        let handle = Controller::spawn(
            cluster,
            Arc::new(NoForge),
            settings.clone(),
            ControllerConfig::default(),
        );
        let backend: Arc<dyn Backend> = Arc::new(handle.clone());
        let state = AppState::new(settings.clone(), backend.clone(), None, options);
        let generator = tokio::spawn(generate(app(state.clone()), backend, seed));
        tracing::info!(
            "demo running: open {}/builds (admin user/password: demo/demo)",
            settings.base_url
        );
        let result = serve_until(listener, state, shutdown_signal()).await;
        generator.abort();
        handle.shutdown().await;
        result
    }
}
