//! `runboat-server --demo`: the whole product on a laptop, with no cluster
//! and no network.
//!
//! The real controller drives runboat-k8s's `KubeCluster` with the default
//! (embedded) kubefiles against kubesim, a simulated Kubernetes API server
//! started in-process on a free loopback port. kubesim's simulated
//! controllers make it look alive: Deployments become available about a
//! second after they are scaled up, initialization jobs run for a few
//! seconds, log a few lines, and about one in four fails with a traceback;
//! cleanup jobs succeed after a second. A generator sends signed GitHub
//! webhooks (pushes, pull requests opened, updated and closed) through the
//! real webhook endpoint every few seconds, and clicks "start" on stopped
//! builds now and then; the demo limits (2 initializing, 3 started, 10
//! deployed) make the controller stop and undeploy builds within a minute.
//!
//! Built only with the `demo` feature, which is never part of production
//! builds (it compiles kubesim in).

/// Runs the demo on `listen` until SIGTERM/SIGINT.
#[cfg(not(feature = "demo"))]
pub async fn run(
    listen: std::net::SocketAddr,
    options: crate::ServerOptions,
) -> anyhow::Result<()> {
    let _ = (listen, options);
    anyhow::bail!(
        "this runboat-server was built without the demo: run \
         `cargo run -p runboat-server --features demo -- --demo`"
    )
}

#[cfg(feature = "demo")]
pub use imp::run;

#[cfg(feature = "demo")]
mod imp {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Context;
    use axum::body::Body;
    use axum::http::Request;
    use kubesim::{ControllerConfig as SimControllers, JobHook, JobScript, KubeSim};
    use runboat_core::forge::NoForge;
    use runboat_core::{
        BuildStatus, Cluster, Controller, ControllerConfig, ControllerHandle, SearchFilters,
        Settings, SortOrder,
    };
    use runboat_github::WebhookSecret;
    use runboat_k8s::KubeCluster;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::run::{SHUTDOWN_GRACE, bind, log_listening, serve_until, shutdown_signal};
    use crate::{AppState, ServerOptions, app};

    const SECRET: &str = "demo";
    const NAMESPACE: &str = "runboat-demo";
    const REPOS: [&str; 2] = ["demo/odoo-addons", "demo/website"];
    const BRANCHES: [&str; 2] = ["16.0", "17.0"];
    /// Time between two generated webhooks.
    const TICK: Duration = Duration::from_secs(3);

    fn settings(base_url: &str) -> anyhow::Result<Settings> {
        let toml = format!(
            r#"
api_admin_user = "demo"
api_admin_passwd = "demo"
build_namespace = "{NAMESPACE}"
build_domain = "runboat-demo.invalid"
base_url = "{base_url}"
github_webhook_secret = "{SECRET}"
disable_commit_statuses = true
max_initializing = 2
max_started = 3
max_deployed = 10
additional_footer_html = "demo mode: simulated Kubernetes API server (kubesim), generated webhooks; instance links lead nowhere"

[[repos]]
repo = "^demo/.*"
branch = "^1[67]\\.0$"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }}]
"#
        );
        Settings::from_toml_str(&toml).context("the demo settings are invalid")
    }

    /// FNV-1a: a stable pseudo-random number from a job's name.
    fn fnv(text: &str) -> u64 {
        text.bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }

    fn annotation<'a>(job: &'a Value, key: &str) -> &'a str {
        job.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
            .and_then(Value::as_str)
            .unwrap_or("?")
    }

    /// What kubesim's simulated job pods do: initialization takes 3 to 8 s,
    /// logs a few lines and fails one time in four (decided by the job's
    /// name, so a reset build fails again); cleanup takes a second.
    pub(super) fn job_script(job: &Value) -> Option<JobScript> {
        let name = job.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let kind =
            job.pointer("/metadata/labels/runboat~1job-kind").and_then(Value::as_str).unwrap_or("");
        let repo = annotation(job, "runboat/repo");
        let commit = annotation(job, "runboat/git-commit");
        let short = commit.get(..8).unwrap_or(commit);
        match kind {
            "initialize" => {
                let h = fnv(name);
                let seconds = 3 + h % 6;
                let head = format!(
                    "\u{1b}[1m[runboat] downloading {repo}@{short}\u{1b}[0m\n\
                     [runboat] installing addons requirements\n\
                     [runboat] creating database {}\n",
                    name.trim_end_matches("-initialize")
                );
                let script = if h.is_multiple_of(4) {
                    JobScript::fail().with_log(format!(
                        "{head}\u{1b}[31mTraceback (most recent call last):\n  File \
                         \"odoo/modules/loading.py\", line 134, in load_module_graph\n\
                         psycopg2.errors.UndefinedTable: relation \"demo_widget\" does not \
                         exist\u{1b}[0m\n[runboat] initialization failed\n"
                    ))
                } else {
                    JobScript::succeed().with_log(format!(
                        "{head}[runboat] odoo -i all_addons --stop-after-init\n\
                         \u{1b}[32m[runboat] initialization done in {seconds} s\u{1b}[0m\n"
                    ))
                };
                Some(script.with_duration(Duration::from_secs(seconds)))
            }
            "cleanup" => Some(
                JobScript::succeed()
                    .with_duration(Duration::from_secs(1))
                    .with_log(format!("[runboat] dropping the database of {repo}@{short}\n")),
            ),
            _ => None,
        }
    }

    async fn start_kubesim() -> anyhow::Result<KubeSim> {
        let hook: JobHook = Arc::new(job_script);
        let config = kubesim::Config {
            namespaces: vec!["default".into(), NAMESPACE.into()],
            controllers: SimControllers {
                pod_ready_delay: Duration::from_secs(1),
                job_duration: Duration::from_secs(2),
                job_hook: Some(hook),
                ..SimControllers::default()
            },
            ..kubesim::Config::default()
        };
        KubeSim::start_with(config).await.context("cannot start the in-process kubesim")
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

    async fn deliver(router: &axum::Router, event: &str, payload: Value) {
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

    fn push(rng: &mut Rng, repo: usize, branch: usize) -> Value {
        json!({
            "ref": format!("refs/heads/{}", BRANCHES[branch]),
            "after": rng.sha(),
            "repository": {"full_name": REPOS[repo]},
        })
    }

    fn pull_request(action: &str, number: u64, repo: usize, base: usize, sha: String) -> Value {
        json!({
            "action": action,
            "number": number,
            "pull_request": {
                "number": number,
                "base": {"ref": BRANCHES[base]},
                "head": {"sha": sha},
            },
            "repository": {"full_name": REPOS[repo]},
        })
    }

    /// Someone clicks "start" on a stopped build.
    async fn start_one(router: &axum::Router, controller: &ControllerHandle, rng: &mut Rng) {
        let stopped = controller.with_index(|index| {
            let filters =
                SearchFilters { status: Some(BuildStatus::Stopped), ..SearchFilters::default() };
            index
                .search(&filters, SortOrder::Desc)
                .into_iter()
                .map(|b| b.name.clone())
                .collect::<Vec<_>>()
        });
        if stopped.is_empty() {
            return;
        }
        let name = &stopped[rng.below(stopped.len() as u64) as usize];
        let request = Request::post(format!("/api/v1/builds/{name}/start")).body(Body::empty());
        if let Ok(request) = request {
            let _ = router.clone().oneshot(request).await;
            tracing::info!(build = %name, "demo: start");
        }
    }

    async fn generate(router: axum::Router, controller: ControllerHandle, seed: u64) {
        let mut rng = Rng(seed | 1);
        // A branch build per repo right away, so the board is not empty.
        for repo in 0..REPOS.len() {
            let payload = push(&mut rng, repo, repo % BRANCHES.len());
            deliver(&router, "push", payload).await;
        }
        // Open pull requests: (repo, number, base branch).
        let mut open: Vec<(usize, u64, usize)> = Vec::new();
        let mut next_pr = 1;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let roll = rng.below(100);
            if roll < 40 {
                let (repo, branch) = (rng.below(2) as usize, rng.below(2) as usize);
                let payload = push(&mut rng, repo, branch);
                deliver(&router, "push", payload).await;
            } else if roll < 80 {
                let reuse = !open.is_empty() && rng.below(3) == 0;
                let (repo, number, base, action) = if reuse {
                    let (r, n, b) = open[rng.below(open.len() as u64) as usize];
                    (r, n, b, "synchronize")
                } else {
                    let pr = (rng.below(2) as usize, next_pr, rng.below(2) as usize);
                    next_pr += 1;
                    open.push(pr);
                    (pr.0, pr.1, pr.2, "opened")
                };
                let payload = pull_request(action, number, repo, base, rng.sha());
                deliver(&router, "pull_request", payload).await;
            } else if roll < 90 && !open.is_empty() {
                let (repo, number, base) = open.remove(rng.below(open.len() as u64) as usize);
                let payload = pull_request("closed", number, repo, base, rng.sha());
                deliver(&router, "pull_request", payload).await;
            }
            if rng.below(100) < 45 {
                start_one(&router, &controller, &mut rng).await;
            }
        }
    }

    /// The address to show: a wildcard listen address is reachable on the
    /// loopback.
    fn browsable(addr: SocketAddr) -> String {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    }

    /// Runs the demo on `listen` until SIGTERM/SIGINT.
    #[allow(clippy::print_stdout)] // The URL to open is the demo's output.
    pub async fn run(listen: SocketAddr, options: ServerOptions) -> anyhow::Result<()> {
        let listener = bind(listen).await?;
        log_listening(&listener);
        let addr = listener.local_addr().unwrap_or(listen);
        let base_url = format!("http://{}", browsable(addr));
        let settings = Arc::new(settings(&base_url)?);
        let sim = start_kubesim().await?;
        tracing::info!(url = sim.url(), namespace = NAMESPACE, "kubesim started");
        let cluster = KubeCluster::new(sim.client(), settings.clone())
            .await
            .context("cannot set up the KubeCluster on kubesim")?;
        let cluster: Arc<dyn Cluster> = Arc::new(cluster);
        let handle = Controller::spawn(
            cluster,
            Arc::new(NoForge),
            settings.clone(),
            ControllerConfig::default(),
        );
        let state = AppState::new(handle.clone(), None, options);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        let generator = tokio::spawn(generate(app(state.clone()), handle.clone(), seed));
        println!(
            "runboat demo: open {base_url}/builds?repo={} (or {base_url}/ for every repo)",
            REPOS[0]
        );
        println!(
            "Generated GitHub webhooks create builds on a simulated Kubernetes API server \
             (kubesim); they initialize (one in four fails), start and stop. \
             Admin: demo/demo. Ctrl-C stops."
        );
        let result = serve_until(listener, state, shutdown_signal()).await;
        generator.abort();
        tracing::info!("stopping the controller");
        if tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await.is_err() {
            tracing::warn!("the controller did not stop in time; abandoning it");
        }
        // Dropping kubesim stops it at once (a graceful stop would wait for
        // the kube client's idle connections).
        drop(sim);
        result.map_err(anyhow::Error::from)
    }
}

#[cfg(all(test, feature = "demo"))]
mod tests {
    use std::time::Duration;

    use kubesim::JobOutcome;
    use serde_json::json;

    use super::imp::job_script;

    fn job(name: &str, kind: &str) -> serde_json::Value {
        json!({"metadata": {
            "name": name,
            "labels": {"runboat/job-kind": kind},
            "annotations": {"runboat/repo": "demo/website", "runboat/git-commit": "0123456789abcdef"},
        }})
    }

    #[test]
    fn some_initializations_fail_most_succeed_all_log_and_take_seconds() {
        let scripts: Vec<_> = (0..400)
            .map(|i| job_script(&job(&format!("b{i:032x}-initialize"), "initialize")))
            .collect();
        let failed = scripts
            .iter()
            .filter(|s| s.as_ref().expect("scripted").outcome == JobOutcome::Fail)
            .count();
        assert!((50..=150).contains(&failed), "{failed} of 400 failed");
        for script in scripts.into_iter().flatten() {
            let d = script.duration.expect("a duration");
            assert!(Duration::from_secs(3) <= d && d <= Duration::from_secs(8), "{d:?}");
            let log = script.log.expect("a log");
            assert!(log.contains("demo/website@01234567"), "{log}");
            assert!(log.lines().count() >= 4, "{log}");
            if script.outcome == JobOutcome::Fail {
                assert!(log.contains("Traceback"), "{log}");
            }
        }
        // The same job always gets the same outcome (a reset fails again).
        let a = job_script(&job("b1-initialize", "initialize"));
        assert_eq!(a, job_script(&job("b1-initialize", "initialize")));
    }

    #[test]
    fn cleanups_succeed_and_other_jobs_keep_kubesim_defaults() {
        let cleanup = job_script(&job("b1-cleanup", "cleanup")).expect("scripted");
        assert_eq!(cleanup.outcome, JobOutcome::Succeed);
        assert_eq!(job_script(&json!({"metadata": {"name": "other"}})), None);
    }
}
