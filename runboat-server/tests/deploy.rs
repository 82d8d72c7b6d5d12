//! The install manifests (`deploy/`) against kubesim with RBAC on, and the
//! real `runboat-server` binary running as their ServiceAccount.
//!
//! 1. `kubectl kustomize deploy/overlays/<example|single-namespace>` is
//!    applied to kubesim (`kubectl apply --server-side`, as the admin):
//!    every object is validated by kubesim, so a broken manifest fails
//!    here (and in CI).
//! 2. The server runs with a kubeconfig holding a token of the
//!    ServiceAccount the RoleBinding names, the settings and secrets of
//!    the rendered ConfigMap and Secret, and the Deployment's environment
//!    (leader election on, `POD_NAME`; lease settings shortened so the
//!    lease is renewed during the test); as the leader, it drives a whole
//!    lifecycle:
//!    webhook → initialize → stopped (init log) → start → started (run
//!    log) → stop → reset → reset again while initializing (kills the init
//!    job and its pods) → stopped → undeploy (cleanup job, resources
//!    deleted by label, finalizer removed); SIGTERM then releases the Lease.
//! 3. Least privilege, by recording: kubesim records every distinct
//!    authorization decision. No request of the ServiceAccount was denied
//!    (zero 403s), and the set of (verb, API group, resource/subresource)
//!    it was granted equals exactly the set the Role's rules expand to: every
//!    verb × resource of the Role is used by the lifecycle, and none is
//!    missing.
//! 4. Least privilege, by removal (`RUNBOAT_SLOW_TESTS=1`, ~40 s): for
//!    each verb × resource of the Role, a fresh install without it runs the
//!    lifecycle and must get a 403 somewhere. A cross-check of 3 that does
//!    not rely on kubesim's record.
//!
//! Needs kubectl (with kustomize): without it the test prints a notice and
//! passes, unless `CI` is set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::FutureExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubesim::{ControllerConfig, JobRule, JobScript, KubeSim};
use runboat_github::WebhookSecret;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

const REPO: &str = "oca/deploy-addons";
/// The leader election's Lease (the server's default name).
const LEASE: &str = "runboat-leader";
/// The pod name the downward API would give.
const POD_NAME: &str = "runboat-5d8f7c9b4-x7k2p";
/// Deadline of one lifecycle step (a loaded CI machine is slow).
const STEP: Duration = Duration::from_secs(60);

fn kubectl_missing() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "kubectl is needed for this test in CI");
        eprintln!("NOTICE: deploy test skipped: kubectl (with kustomize) is not on PATH");
    }
    !found
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs kubectl without blocking the runtime (kubesim answers it in this
/// process).
async fn kubectl(args: &[&str]) -> String {
    let out = tokio::time::timeout(STEP, Command::new("kubectl").args(args).output())
        .await
        .expect("kubectl ends in time")
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running server process (the e2e tests' helper, reduced).
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    http: Client<HttpConnector, Full<Bytes>>,
    webhook_secret: String,
    admin_basic: String,
}

impl Server {
    async fn start(
        dir: &Path,
        kubeconfig: &Path,
        settings: &Path,
        env: &[(String, String)],
    ) -> Server {
        let settings = settings.to_str().expect("utf-8 path");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runboat-server"));
        for (key, _) in std::env::vars() {
            if key.starts_with("RUNBOAT_") || key.starts_with("KUBERNETES_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["--config", settings, "--listen", "127.0.0.1:0", "--log-format", "json"])
            .envs(env.iter().cloned())
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn runboat-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, mut addr_rx) = mpsc::channel::<String>(1);
        let sink = log.clone();
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
        let var = |name: &str| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        let user = "admin";
        let admin_basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", var("RUNBOAT_API_ADMIN_PASSWD")));
        Server {
            child,
            base: format!("http://{addr}"),
            log,
            http: Client::builder(TokioExecutor::new()).build_http(),
            webhook_secret: var("RUNBOAT_GITHUB_WEBHOOK_SECRET"),
            admin_basic,
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    async fn request(&self, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
        let resp = self.http.request(req).await.expect("HTTP request");
        let status = resp.status();
        (status, resp.into_body().collect().await.expect("body").to_bytes())
    }

    async fn send(&self, method: Method, path: &str, admin: bool) -> (StatusCode, Bytes) {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if admin {
            req = req.header("authorization", format!("Basic {}", self.admin_basic));
        }
        self.request(req.body(Full::default()).expect("request")).await
    }

    async fn webhook(&self, event: &str, payload: &Value) -> StatusCode {
        let body = payload.to_string().into_bytes();
        let signature = WebhookSecret::new(self.webhook_secret.as_str()).sign(&body);
        let req = Request::post(format!("{}/webhooks/github", self.base))
            .header("X-GitHub-Event", event)
            .header("X-Hub-Signature-256", signature)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        self.request(req).await.0
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + STEP;
        loop {
            if self.send(Method::GET, "/readyz", false).await.0 == StatusCode::OK {
                return;
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a build until its status is `status` (a condition with a deadline).
    async fn until_status(&self, name: &str, status: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let (code, body) =
                self.send(Method::GET, &format!("/api/v1/builds/{name}"), false).await;
            let last = if code == StatusCode::OK {
                let build: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                build["status"].as_str().unwrap_or_default().to_owned()
            } else {
                format!("HTTP {code}")
            };
            if last == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "build {name} never {status} (last {last}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn until_gone(&self, name: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let (code, _) = self.send(Method::GET, &format!("/api/v1/builds/{name}"), false).await;
            if code == StatusCode::NOT_FOUND {
                return;
            }
            assert!(Instant::now() < deadline, "build {name} never gone; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The build's first name, once the webhook's build exists.
    async fn build_name(&self) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let (_, body) =
                self.send(Method::GET, &format!("/api/v1/builds?repo={REPO}"), false).await;
            let builds: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(name) = builds.get(0).and_then(|b| b["name"].as_str()) {
                return name.to_owned();
            }
            assert!(Instant::now() < deadline, "no build appeared; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// The (verb, group, resource[/subresource]) triples a Role's rules grant
/// (no wildcards: the test rejects them, a least-privilege Role has none;
/// resourceNames only to restrict the Lease to the leader election's).
fn granted(role: &Value) -> BTreeSet<Grant> {
    let strings = |rule: &Value, key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().expect("the Role has rules") {
        if let Some(names) = rule.get("resourceNames") {
            assert_eq!(rule["resources"], json!(["leases"]), "unexpected resourceNames in {rule}");
            assert_eq!(names, &json!([LEASE]), "{rule}");
        }
        for verb in strings(rule, "verbs") {
            for group in strings(rule, "apiGroups") {
                for resource in strings(rule, "resources") {
                    assert!(
                        !(verb.contains('*') || group.contains('*') || resource.contains('*')),
                        "a wildcard in {rule}"
                    );
                    set.insert((verb.clone(), group.clone(), resource));
                }
            }
        }
    }
    set
}

fn one<'a>(objects: &'a [Value], prefix: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect();
    assert_eq!(found.len(), 1, "one object named {prefix}*");
    found[0]
}

/// A (verb, API group, resource[/subresource]) a Role grants.
type Grant = (String, String, String);

#[tokio::test]
async fn the_example_install_runs_a_whole_lifecycle_with_least_privilege() {
    install_and_run("deploy/overlays/example").await;
}

#[tokio::test]
async fn the_single_namespace_install_runs_a_whole_lifecycle_with_least_privilege() {
    install_and_run("deploy/overlays/single-namespace").await;
}

/// The other method, as a cross-check of the recording: for each
/// (verb, resource) of the Role, install with that one grant removed and
/// run the lifecycle; it must be refused somewhere (a 403). One install and
/// server per grant (about 30): slow, so only with `RUNBOAT_SLOW_TESTS=1`.
#[tokio::test]
async fn every_grant_of_the_role_is_needed_by_the_lifecycle() {
    if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!("NOTICE: per-grant removal test skipped: set RUNBOAT_SLOW_TESTS=1 to run it");
        return;
    }
    if kubectl_missing() {
        return;
    }
    let overlay = "deploy/overlays/example";
    let grants = {
        let install = install(overlay, None).await;
        granted(&install.role)
    };
    assert!(grants.len() > 10, "{grants:?}");
    for grant in &grants {
        let install = install(overlay, Some(grant)).await;
        let h = install.sim.handle();
        let run = std::panic::AssertUnwindSafe(lifecycle(&install.server, &h, &install.build_ns))
            .catch_unwind();
        let refused = async {
            while h.forbidden_count() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        // Whichever comes first: the refusal, or the end of the lifecycle
        // (finished, or failed on the refusal's consequence).
        tokio::select! {
            _ = run => {}
            () = refused => {}
        }
        assert!(
            h.forbidden_count() > 0,
            "without {grant:?} the whole lifecycle ran with no 403: that grant is not needed"
        );
    }
}

/// An overlay installed in a fresh kubesim with RBAC on, and the server
/// running as its ServiceAccount.
struct Install {
    sim: KubeSim,
    server: Server,
    build_ns: String,
    /// `system:serviceaccount:<ns>:<name>`.
    user: String,
    role: Value,
    /// The server's RUNBOAT_* environment, from the Secret.
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

/// Renders and applies an overlay (optionally with one grant removed from
/// its Role), checks what it installed, and starts the server.
async fn install(overlay: &str, without: Option<&Grant>) -> Install {
    let overlay = repo_root().join(overlay);
    let rendered = kubectl(&["kustomize", overlay.to_str().expect("utf-8 path")]).await;

    let config = kubesim::Config {
        rbac: true,
        // kubectl (client-go) never sends credentials over plain HTTP: its
        // requests are the admin's. runboat-server's (kube-rs) carry the
        // ServiceAccount's token; the checks below make sure none came
        // without it.
        unauthenticated_as_admin: true,
        controllers: ControllerConfig {
            pod_ready_delay: Duration::from_millis(200),
            job_duration: Duration::from_millis(200),
            ..ControllerConfig::default()
        },
        ..kubesim::Config::default()
    };
    let sim = KubeSim::start_with(config).await.expect("kubesim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_kubeconfig = dir.path().join("admin.kubeconfig");
    std::fs::write(&admin_kubeconfig, sim.kubeconfig("default")).expect("write kubeconfig");
    let manifests = dir.path().join("deploy.yaml");
    std::fs::write(&manifests, &rendered).expect("write manifests");

    // 1. Install, as `kubectl apply` would (server-side: kubesim validates
    // every object), then once more as a server dry run: idempotent.
    let kc = format!("--kubeconfig={}", admin_kubeconfig.display());
    let file = manifests.to_str().expect("utf-8 path");
    let applied = kubectl(&[&kc, "apply", "--server-side", "-f", file]).await;
    assert!(
        applied.contains("role.rbac.authorization.k8s.io/runboat serverside-applied"),
        "{applied}"
    );
    kubectl(&[&kc, "apply", "--server-side", "--dry-run=server", "-f", file]).await;

    // The objects of the install, as kubesim stores them.
    let bindings = sim.list("rolebindings", None).expect("list");
    assert_eq!(bindings.len(), 1, "one RoleBinding");
    let binding = &bindings[0];
    let build_ns = binding["metadata"]["namespace"].as_str().expect("namespace").to_owned();
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    let (sa_ns, sa_name) = (
        subject["namespace"].as_str().expect("namespace").to_owned(),
        subject["name"].as_str().expect("name").to_owned(),
    );
    assert!(sim.get("serviceaccounts", &sa_ns, &sa_name).expect("get").is_some());
    let role_name = binding["roleRef"]["name"].as_str().expect("role name");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    let mut role = sim.get("roles", &build_ns, role_name).expect("get").expect("the bound Role");
    if let Some(grant) = without {
        role["rules"] = Value::Array(rules_without(&role, grant));
        let path = dir.path().join("role.json");
        std::fs::write(&path, role.to_string()).expect("write role");
        kubectl(&[&kc, "replace", "-f", path.to_str().expect("utf-8 path")]).await;
    }
    let deployment = sim.get("deployments", &sa_ns, "runboat").expect("get").expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa_name.as_str());
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let configmaps = sim.list("configmaps", Some(&sa_ns)).expect("list");
    let toml = one(&configmaps, "runboat-settings")["data"]["runboat.toml"]
        .as_str()
        .expect("runboat.toml")
        .to_owned();
    let secrets = sim.list("secrets", Some(&sa_ns)).expect("list");
    let mut env: Vec<(String, String)> = one(&secrets, "runboat-secrets")["data"]
        .as_object()
        .expect("secret data")
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64"))
                .expect("base64");
            (k.clone(), String::from_utf8(bytes).expect("utf-8"))
        })
        .collect();
    // The example token is a placeholder: post no commit status to GitHub.
    env.push(("RUNBOAT_DISABLE_COMMIT_STATUSES".into(), "true".into()));
    // The container's own environment (leader election on, the identity
    // from the downward API), with lease settings of a fraction of a second
    // so that the lifecycle renews the lease (and a Role without `update`
    // on it is refused).
    let mut run_env = env.clone();
    for var in container["env"].as_array().expect("the container's env") {
        let name = var["name"].as_str().expect("name").to_owned();
        let value = match var.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
            Some("metadata.name") => POD_NAME.to_owned(),
            Some(other) => panic!("unexpected downward API field {other}"),
            None => var["value"].as_str().expect("a value").to_owned(),
        };
        run_env.push((name, value));
    }
    assert!(
        run_env.contains(&("RUNBOAT_SERVER_LEADER_ELECTION".into(), "true".into())),
        "the install runs leader election: {run_env:?}"
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    for (key, value) in [
        ("RUNBOAT_SERVER_LEASE_DURATION", "1.5"),
        ("RUNBOAT_SERVER_LEASE_RENEW_DEADLINE", "1"),
        ("RUNBOAT_SERVER_LEASE_RETRY_PERIOD", "0.2"),
    ] {
        run_env.push((key.into(), value.into()));
    }
    let settings = dir.path().join("runboat.toml");
    std::fs::write(&settings, &toml).expect("write settings");
    assert!(toml.contains(&format!("build_namespace = \"{build_ns}\"")), "{toml}");

    // 2. The server as the ServiceAccount.
    let sa_kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(&sa_kubeconfig, sim.service_account_kubeconfig(&sa_ns, &sa_name, &build_ns))
        .expect("write kubeconfig");
    sim.clear_access_log();
    let server = Server::start(dir.path(), &sa_kubeconfig, &settings, &run_env).await;
    let user = format!("system:serviceaccount:{sa_ns}:{sa_name}");
    Install { sim, server, build_ns, user, role, env, _dir: dir }
}

/// The Role's rules without one grant (a rule naming several verbs or
/// resources is split).
fn rules_without(role: &Value, grant: &Grant) -> Vec<Value> {
    let (verb, group, resource) = grant;
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let has = |key: &str, v: &str| rule[key].as_array().is_some_and(|a| a.contains(&json!(v)));
        if !(has("verbs", verb) && has("apiGroups", group) && has("resources", resource)) {
            rules.push(rule.clone());
            continue;
        }
        let others = |key: &str, v: &str| -> Vec<Value> {
            rule[key]
                .as_array()
                .expect("list")
                .iter()
                .filter(|x| *x != &json!(v))
                .cloned()
                .collect()
        };
        let mut rest = rule.clone();
        rest["resources"] = Value::Array(others("resources", resource));
        if !others("resources", resource).is_empty() {
            rules.push(rest);
        }
        let mut same = rule.clone();
        same["resources"] = json!([resource]);
        same["verbs"] = Value::Array(others("verbs", verb));
        if !others("verbs", verb).is_empty() {
            rules.push(same);
        }
    }
    rules
}

/// The whole lifecycle of one pushed commit, through the server's API.
async fn lifecycle(server: &Server, h: &kubesim::Handle, build_ns: &str) {
    server.wait_ready().await;
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let push = json!({"ref": "refs/heads/16.0", "after": sha, "repository": {"full_name": REPO}});
    assert_eq!(server.webhook("push", &push).await, StatusCode::ACCEPTED);
    let name = server.build_name().await;
    server.until_status(&name, "stopped").await;
    let (code, init_log) =
        server.send(Method::GET, &format!("/api/v1/builds/{name}/init-log"), false).await;
    assert_eq!(code, StatusCode::OK);
    assert!(!init_log.is_empty());

    let action = |verb: &'static str| format!("/api/v1/builds/{name}/{verb}");
    assert_eq!(server.send(Method::POST, &action("start"), false).await.0, StatusCode::OK);
    server.until_status(&name, "started").await;
    let (code, run_log) =
        server.send(Method::GET, &format!("/api/v1/builds/{name}/log"), false).await;
    assert_eq!(code, StatusCode::OK);
    assert!(!run_log.is_empty());
    assert_eq!(server.send(Method::POST, &action("stop"), false).await.0, StatusCode::OK);
    server.until_status(&name, "stopped").await;

    // Reset while the new initialization runs: its Job and pods are killed.
    h.add_job_rule(JobRule::by_label(
        "runboat/job-kind",
        "initialize",
        JobScript::succeed().with_duration(Duration::from_secs(600)),
    ));
    assert_eq!(server.send(Method::POST, &action("reset"), false).await.0, StatusCode::OK);
    let running_init = |h: &kubesim::Handle| {
        h.list("pods", Some(build_ns)).expect("list").iter().any(|p| {
            p.pointer("/metadata/labels/runboat~1job-kind") == Some(&json!("initialize"))
                && p.pointer("/status/phase") == Some(&json!("Running"))
        })
    };
    assert!(h.wait_until(STEP, running_init).await, "no init pod ran; log:\n{}", server.log());
    h.update_controllers(|c| c.job_rules.clear());
    assert_eq!(server.send(Method::POST, &action("reset"), false).await.0, StatusCode::OK);
    server.until_status(&name, "stopped").await;

    // Undeploy: the cleanup job runs, everything labelled goes, the finalizer too.
    let path = format!("/api/v1/builds/{name}");
    assert_eq!(server.send(Method::DELETE, &path, true).await.0, StatusCode::OK);
    server.until_gone(&name).await;
    let leftovers = |h: &kubesim::Handle| {
        [
            "deployments",
            "pods",
            "services",
            "ingresses",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "jobs",
        ]
        .iter()
        .flat_map(|r| h.list(r, Some(build_ns)).expect("list"))
        .filter(|o| o.pointer("/metadata/labels/runboat~1build") == Some(&json!(name)))
        .count()
    };
    assert!(h.wait_until(STEP, |h| leftovers(h) == 0).await, "the build left objects behind");
}

/// Installs an overlay, runs the lifecycle, and checks zero 403s and that
/// the Role grants exactly what was used.
async fn install_and_run(overlay: &str) {
    if kubectl_missing() {
        return;
    }
    let Install { sim, mut server, build_ns, user, role, env, _dir } = install(overlay, None).await;
    lifecycle(&server, &sim.handle(), &build_ns).await;
    // The lifecycle ran as the leader, on the Lease of the build namespace.
    let holder = |sim: &KubeSim| {
        let lease = sim.get("leases", &build_ns, LEASE).expect("get").expect("the Lease");
        lease.pointer("/spec/holderIdentity").and_then(Value::as_str).map(str::to_owned)
    };
    assert_eq!(holder(&sim).as_deref(), Some(POD_NAME));
    let (_, status) = server.send(Method::GET, "/api/v1/status", false).await;
    let status: Value = serde_json::from_slice(&status).expect("JSON");
    assert_eq!(
        status["leadership"],
        json!({"identity": POD_NAME, "leader": true, "holder": POD_NAME}),
        "{status}"
    );

    server.terminate();
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await;
    assert!(exit.is_ok_and(|e| e.is_ok_and(|s| s.success())), "log:\n{}", server.log());
    // SIGTERM released the lease.
    assert_eq!(holder(&sim), None, "log:\n{}", server.log());

    // Secrets never in the logs.
    let log = server.log();
    for (key, value) in &env {
        if key != "RUNBOAT_DISABLE_COMMIT_STATUSES" {
            assert!(!log.contains(value.as_str()), "{key}'s value is in the server's log");
        }
    }

    // 3. Zero 403s, and the Role grants exactly what was used.
    assert_eq!(sim.forbidden_count(), 0, "403s answered: {:?}", sim.access_log());
    let log = sim.access_log();
    let others: Vec<&kubesim::Access> = log.iter().filter(|a| a.user != user).collect();
    assert!(others.is_empty(), "requests as another user while the server ran: {others:?}");
    let decisions: Vec<kubesim::Access> = log.into_iter().filter(|a| a.user == user).collect();
    let denied: Vec<&kubesim::Access> = decisions.iter().filter(|a| !a.allowed).collect();
    assert!(denied.is_empty(), "denied: {denied:?}");
    assert!(decisions.iter().all(|a| a.namespace == build_ns), "only the build namespace");
    let used: BTreeSet<Grant> = decisions
        .iter()
        .map(|a| {
            let resource = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            (a.verb.clone(), a.api_group.clone(), resource)
        })
        .collect();
    let granted = granted(&role);
    let unused: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(unused.is_empty(), "granted by the Role but never used (remove them): {unused:?}");
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
}
