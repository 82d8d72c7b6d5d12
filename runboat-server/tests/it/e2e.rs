//! End-to-end: the real `runboat-server` binary (a separate process, as
//! deployed) driving kubesim through runboat-k8s's `KubeCluster`.
//!
//! kubesim runs inside this test process (`KubeSim::start_with`): cargo
//! gives tests the path of their own crate's binaries only, not of a
//! dependency's (`kubesim serve`). It serves real HTTP on a loopback port;
//! the server process finds it through `KUBECONFIG` (kube's standard
//! inference, as in production) and is spoken to over HTTP. Every wait is a
//! condition with a deadline: events read off the SSE stream, kubesim's
//! `wait_until`, or an API polled until it answers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubesim::{ControllerConfig, KubeSim};
use runboat_github::WebhookSecret;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub(crate) const NS: &str = "runboat-e2e";
pub(crate) const SECRET: &str = "e2e-webhook-secret";
pub(crate) const REPO: &str = "oca/e2e-addons";
/// Deadline of one lifecycle step (a loaded CI machine is slow).
pub(crate) const STEP: Duration = Duration::from_secs(60);

pub(crate) fn settings_toml(extra: &str) -> String {
    format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "e2e-pw"
build_namespace = "{NS}"
build_domain = "e2e.example.com"
base_url = "http://runboat.e2e.example.com"
github_webhook_secret = "{SECRET}"
disable_commit_statuses = true
{extra}

[[repos]]
repo = "^oca/.*"
branch = "^16\\.0$"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }}]
"#
    )
}

/// The binary, with a clean environment: no `RUNBOAT_*` or in-cluster
/// variables of the caller leak in.
pub(crate) fn command(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runboat-server"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RUNBOAT_") || key.starts_with("KUBERNETES_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs the binary to its end (it must end by itself): success and stderr.
pub(crate) async fn run_to_end(
    dir: &Path,
    kubeconfig: &Path,
    args: &[&str],
    path: Option<&str>,
) -> (bool, String) {
    let mut cmd = command(dir, kubeconfig, args);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .expect("the binary ends by itself")
        .expect("run the binary");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A running server process.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// Everything it logged (JSON lines), shown when a test fails.
    log: Arc<Mutex<String>>,
    pub(crate) http: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    async fn start(dir: &Path, kubeconfig: &Path, settings: &Path) -> Server {
        Server::start_with(dir, kubeconfig, settings, &[]).await
    }

    /// [`Server::start`] with more command line options.
    pub(crate) async fn start_with(
        dir: &Path,
        kubeconfig: &Path,
        settings: &Path,
        extra: &[&str],
    ) -> Server {
        let settings = settings.to_str().expect("utf-8 path");
        let mut args =
            vec!["--config", settings, "--listen", "127.0.0.1:0", "--log-format", "json"];
        args.extend_from_slice(extra);
        let mut child = command(dir, kubeconfig, &args).spawn().expect("spawn runboat-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, mut addr_rx) = mpsc::channel::<String>(1);
        let sink = log.clone();
        // Drains stderr all along (a full pipe would block the server).
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v.pointer("/fields/message").and_then(Value::as_str) == Some("listening")
                    && let Some(addr) = v.pointer("/fields/addr").and_then(Value::as_str)
                {
                    let _ = addr_tx.try_send(addr.to_owned());
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = tokio::time::timeout(STEP, addr_rx.recv()).await.ok().flatten();
        let Some(addr) = addr else {
            panic!("the server never logged its address:\n{}", log.lock().expect("log lock"));
        };
        let http = Client::builder(TokioExecutor::new()).build_http();
        Server { child, base: format!("http://{addr}"), log, http }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    pub(crate) async fn request(&self, req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let resp = self.http.request(req).await.expect("HTTP request");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let req =
            Request::get(format!("{}{path}", self.base)).body(Full::default()).expect("request");
        self.request(req).await
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        admin: bool,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if admin {
            // base64("admin:e2e-pw")
            req = req.header("authorization", "Basic YWRtaW46ZTJlLXB3");
        }
        self.request(req.body(Full::default()).expect("request")).await
    }

    pub(crate) async fn webhook(&self, event: &str, payload: &Value) -> StatusCode {
        let body = payload.to_string().into_bytes();
        let signature = WebhookSecret::new(SECRET).sign(&body);
        let req = Request::post(format!("{}/webhooks/github", self.base))
            .header("X-GitHub-Event", event)
            .header("X-Hub-Signature-256", signature)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        self.request(req).await.0
    }

    /// Polls `/readyz` until 200 (the controller has its first listing).
    pub(crate) async fn wait_ready(&self) {
        let deadline = Instant::now() + STEP;
        loop {
            if self.get("/readyz").await.0 == StatusCode::OK {
                return;
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a build-event stream: the events, then `None` when it ends.
    pub(crate) async fn events(
        &self,
        query: &str,
    ) -> mpsc::UnboundedReceiver<(Option<String>, Value)> {
        let req = Request::get(format!("{}/api/v1/build-events?{query}", self.base))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .expect("request");
        let resp = self.http.request(req).await.expect("SSE request");
        assert_eq!(resp.status(), StatusCode::OK);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut body = resp.into_body();
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                buf.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut name = None;
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        }
                    }
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    if tx.send((name, value)).is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// The build events of one stream, as read so far.
struct Transitions {
    rx: mpsc::UnboundedReceiver<(Option<String>, Value)>,
    /// `(event, status)` of the build in order (`del` has no status).
    seen: Vec<(String, String)>,
    name: Option<String>,
}

impl Transitions {
    /// Reads events until the build's last event is `event` with `status`
    /// (`None`: any). The first event names the build.
    async fn until(&mut self, server: &Server, event: &str, status: Option<&str>) {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some((e, s)) = self.seen.last()
                && e == event
                && status.is_none_or(|status| status == s)
            {
                return;
            }
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((name, data))) = next else {
                panic!("never {event} {status:?}; seen {:?}; log:\n{}", self.seen, server.log());
            };
            assert_eq!(name, None, "an unexpected named event {name:?}: {data}");
            let build = &data["build"];
            let build_name = build["name"].as_str().expect("build name").to_owned();
            let name = self.name.get_or_insert_with(|| build_name.clone());
            if *name != build_name {
                continue;
            }
            let kind = data["event"].as_str().expect("event kind").to_owned();
            let status = build["status"].as_str().unwrap_or("").to_owned();
            self.seen.push((kind, status));
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().expect("a build was seen")
    }
}

/// Every object kind a build can leave behind.
const BUILD_RESOURCES: [&str; 9] = [
    "deployments",
    "replicasets",
    "pods",
    "services",
    "ingresses",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "jobs",
];

/// Objects in kubesim labelled with the build.
fn leftovers(sim: &kubesim::Handle, build: &str) -> Vec<String> {
    let mut left = Vec::new();
    for resource in BUILD_RESOURCES {
        for o in sim.list(resource, Some(NS)).expect("list") {
            if o.pointer("/metadata/labels/runboat~1build").and_then(Value::as_str) == Some(build) {
                let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
                left.push(format!("{resource}/{name}"));
            }
        }
    }
    left
}

fn labelled_count(sim: &kubesim::Handle, build: &str) -> usize {
    leftovers(sim, build).len()
}

pub(crate) struct Env {
    pub(crate) sim: KubeSim,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) kubeconfig: PathBuf,
}

pub(crate) async fn env() -> Env {
    let config = kubesim::Config {
        namespaces: vec!["default".into(), NS.into()],
        controllers: ControllerConfig {
            // Long enough for every status to be its own event.
            pod_ready_delay: Duration::from_millis(300),
            job_duration: Duration::from_millis(300),
            ..ControllerConfig::default()
        },
        ..kubesim::Config::default()
    };
    let sim = KubeSim::start_with(config).await.expect("kubesim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig("default")).expect("write kubeconfig");
    Env { sim, dir, kubeconfig }
}

impl Env {
    pub(crate) fn settings(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("runboat.toml");
        std::fs::write(&path, settings_toml(extra)).expect("write settings");
        path
    }
}

#[tokio::test]
async fn a_pushed_commit_lives_its_whole_life_through_the_real_binary() {
    let env = env().await;
    let settings = env.settings("");
    let mut server = Server::start(env.dir.path(), &env.kubeconfig, &settings).await;
    server.wait_ready().await;

    let mut builds = Transitions {
        rx: server.events(&format!("repo={REPO}")).await,
        seen: Vec::new(),
        name: None,
    };
    // A second stream, unfiltered, stays open until SIGTERM.
    let mut all_events = server.events("").await;

    // A signed push webhook queues a build.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let push = json!({
        "ref": "refs/heads/16.0",
        "after": sha,
        "repository": {"full_name": REPO},
    });
    assert_eq!(server.webhook("push", &push).await, StatusCode::ACCEPTED);
    // A bad signature is refused, and changes nothing.
    let req = Request::post(format!("{}/webhooks/github", server.base))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(push.to_string())))
        .expect("request");
    assert_eq!(server.request(req).await.0, StatusCode::UNAUTHORIZED);

    // Initialization, to stopped.
    builds.until(&server, "upd", Some("stopped")).await;
    let name = builds.name().to_owned();
    let (status, build) = server.get(&format!("/api/v1/builds/{name}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(build["status"], "stopped");
    assert_eq!(build["commit_info"]["git_commit"], sha);
    assert_eq!(build["commit_info"]["repo"], REPO);
    let (status, _) = server.get(&format!("/api/v1/builds/{name}/init-log")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(labelled_count(&env.sim, &name) > 0, "the build's objects are in kubesim");

    // Start, through the API.
    let (status, answer) =
        server.send(Method::POST, &format!("/api/v1/builds/{name}/start"), false).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    builds.until(&server, "upd", Some("started")).await;
    let (_, build) = server.get(&format!("/api/v1/builds/{name}")).await;
    assert_eq!(build["status"], "started");

    // Undeploy: admin only; then every object of the build goes.
    let path = format!("/api/v1/builds/{name}");
    assert_eq!(server.send(Method::DELETE, &path, false).await.0, StatusCode::UNAUTHORIZED);
    let (status, answer) = server.send(Method::DELETE, &path, true).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    builds.until(&server, "del", None).await;
    let h = env.sim.handle();
    assert!(
        h.wait_until(STEP, |h| leftovers(h, &name).is_empty()).await,
        "left behind in kubesim: {:?}",
        leftovers(&h, &name)
    );
    assert_eq!(server.get(&path).await.0, StatusCode::NOT_FOUND);

    // Every transition, in order, once each.
    let mut statuses: Vec<&str> = Vec::new();
    for (event, status) in &builds.seen {
        if event == "upd" && statuses.last() != Some(&status.as_str()) {
            statuses.push(status);
        }
    }
    assert_eq!(
        statuses,
        ["initializing", "stopped", "starting", "started", "undeploying"],
        "{:?}",
        builds.seen
    );
    assert_eq!(builds.seen.last().map(|(e, _)| e.as_str()), Some("del"));
    assert_eq!(builds.seen.iter().filter(|(e, _)| e == "del").count(), 1);

    // SIGTERM: open streams end and the process exits successfully within 5 s.
    let signalled = Instant::now();
    server.terminate();
    let exit = tokio::time::timeout(Duration::from_secs(5), server.child.wait()).await;
    let Ok(exit) = exit else {
        panic!("still running 5 s after SIGTERM; log:\n{}", server.log());
    };
    let exit = exit.expect("wait");
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", server.log());
    let left = tokio::time::timeout_at(signalled + Duration::from_secs(5), async {
        while all_events.recv().await.is_some() {}
    })
    .await;
    assert!(left.is_ok(), "the event stream did not end");
}

#[tokio::test]
async fn startup_errors_name_what_to_fix() {
    let env = env().await;
    let dir = env.dir.path();

    // No Kubernetes configuration.
    let settings = env.settings("");
    let missing = dir.join("no-such-kubeconfig");
    let args = ["--config", settings.to_str().expect("utf-8"), "--listen", "127.0.0.1:0"];
    let (ok, err) = run_to_end(dir, &missing, &args, None).await;
    assert!(!ok);
    assert!(err.contains("KubeCluster"), "{err}");
    assert!(err.contains("KUBECONFIG"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A kubefiles directory that does not exist: the setting is named.
    let settings = env.settings(r#"build_default_kubefiles_path = "/nonexistent/kubefiles""#);
    let (ok, err) = run_to_end(dir, &env.kubeconfig, &args, None).await;
    assert!(!ok);
    assert!(err.contains("build_default_kubefiles_path"), "{err}");
    assert!(err.contains("/nonexistent/kubefiles"), "{err}");
    drop(settings);

    // A resource type the cluster does not serve: named at startup.
    let settings = env.settings(r#"deployment_resource_types = "deployment,widgets""#);
    let (ok, err) = run_to_end(dir, &env.kubeconfig, &args, None).await;
    assert!(!ok);
    assert!(err.contains("deployment_resource_types") && err.contains("\"widgets\""), "{err}");
    drop(settings);

    // Kustomize kubefiles without kubectl: the setting and kubectl are named.
    let kustomize = dir.join("kustomize-kubefiles");
    std::fs::create_dir(&kustomize).expect("mkdir");
    std::fs::write(kustomize.join("kustomization.yaml"), "resources: []\n").expect("write");
    let extra = format!("build_default_kubefiles_path = {:?}", kustomize.display().to_string());
    let _ = env.settings(&extra);
    let empty_path = dir.join("empty-path");
    std::fs::create_dir(&empty_path).expect("mkdir");
    let (ok, err) =
        run_to_end(dir, &env.kubeconfig, &args, Some(empty_path.to_str().expect("utf-8"))).await;
    assert!(!ok);
    assert!(err.contains("build_default_kubefiles_path"), "{err}");
    assert!(err.contains("kubectl"), "{err}");
}
