//! `cargo xtask bench`: the scale benchmark suite (see BENCHMARKS.md).
//!
//! Starts `kubesim serve` and the release `runboat-server` as separate
//! processes on loopback, seeds Deployments straight into kubesim over its
//! Kubernetes REST API, and measures ingest, memory, the read API, SSE
//! fan-out, reaction delays and lifecycle throughput. Never asserts speed:
//! it fails only when the benchmark itself breaks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use runboat_core::CommitInfo;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::perf;

const NS: &str = "runboat-bench";
const SECRET: &str = "bench-webhook-secret";
const REPOS: usize = 100;
const DEADLINE: Duration = Duration::from_secs(180);
/// Set on the release xtask the debug one hands the bench over to (never
/// hand over twice, even when release builds have debug assertions on).
const RELEASE_MARK: &str = "RUNBOAT_XTASK_BENCH_HANDED_OVER";

type Http = Client<HttpConnector, Full<Bytes>>;

/// How the seeded Deployments look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    /// As runboat-rs's default kubefiles render them (~2 KB in kubesim).
    Native,
    /// As the original runboat's packaged kubefiles make them with
    /// `kubectl apply -k` (~3.5 KB in kubesim: kustomize's common
    /// annotations on the pod template too, and kubectl's
    /// last-applied-configuration annotation): the workload of a side by
    /// side comparison with the original, and of an admin who swaps it in.
    Original,
}

impl Shape {
    fn label(self, n: usize) -> String {
        match self {
            Shape::Native => n.to_string(),
            Shape::Original => format!("{n}-original"),
        }
    }
}

/// Options of `cargo xtask bench`.
struct Opts {
    sizes: Vec<(usize, Shape)>,
    runs: usize,
    quick: bool,
    /// Record a CPU profile of each phase (see `perf.rs`).
    perf: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut builds: Option<usize> = None;
    let mut runs: Option<usize> = None;
    let mut quick = false;
    let mut perf = false;
    let mut shapes: Option<Vec<Shape>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--perf" => perf = true,
            "--shape" => {
                shapes = Some(match it.next().map(String::as_str) {
                    Some("native") => vec![Shape::Native],
                    Some("original") => vec![Shape::Original],
                    Some("both") => vec![Shape::Native, Shape::Original],
                    other => bail!("--shape takes native, original or both, not {other:?}"),
                });
            }
            "--builds" => {
                builds = Some(it.next().context("--builds needs a number")?.parse()?);
            }
            "--runs" => runs = Some(it.next().context("--runs needs a number")?.parse()?),
            other => bail!("unknown bench option `{other}`"),
        }
    }
    // By default: both shapes at the largest size, the native one only at
    // 1,000 (the comparison with the original is made at 10,000).
    let sizes = match (builds, quick, shapes) {
        (Some(n), _, shapes) => shapes
            .unwrap_or(vec![Shape::Native, Shape::Original])
            .into_iter()
            .map(|s| (n, s))
            .collect(),
        (None, true, shapes) => shapes
            .unwrap_or(vec![Shape::Native, Shape::Original])
            .into_iter()
            .map(|s| (1_000, s))
            .collect(),
        (None, false, None) => {
            vec![(1_000, Shape::Native), (10_000, Shape::Native), (10_000, Shape::Original)]
        }
        (None, false, Some(shapes)) => {
            [1_000, 10_000].into_iter().flat_map(|n| shapes.iter().map(move |s| (n, *s))).collect()
        }
    };
    let runs = runs.unwrap_or(if quick { 1 } else { 3 }).max(1);
    Ok(Opts { sizes, runs, quick, perf })
}

/// Kills the child processes on drop (also on error paths), the last started
/// first (the server before kubesim, so it does not log kubesim's end).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// utime+stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces) start after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// VmHWM and VmRSS of a process, in MiB.
fn mem_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (get("VmHWM:"), get("VmRSS:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

async fn send(http: &Http, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
    let res = http.request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn get_json(http: &Http, url: &str) -> Result<(StatusCode, Value)> {
    let req = Request::get(url).body(Full::default())?;
    let (status, body) = send(http, req).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Polls until `check` is true, every `every`, up to `DEADLINE`.
async fn poll<F, Fut>(what: &str, every: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
    bail!("timed out waiting for {what}")
}

/// One seeded build: its name, repo, and Deployment name.
struct Seed {
    repo: String,
    deployment: String,
    name: String,
}

fn sha(i: usize, salt: &str) -> String {
    let s = format!("{salt}{i:x}");
    let mut out = String::with_capacity(40);
    for b in s.bytes().cycle().take(40) {
        out.push(char::from(b"0123456789abcdef"[usize::from(b) % 16]));
    }
    // Make it unique: the index in hex at the end.
    let tail = format!("{i:012x}");
    format!("{}{tail}", &out[..28])
}

fn seeds(n: usize) -> Result<Vec<Seed>> {
    (0..n)
        .map(|i| {
            let repo = format!("bench/repo{:02}", i % REPOS);
            // Two thirds branch builds over a few target branches, one third PRs.
            let branch = ["16.0", "17.0", "18.0"][(i / REPOS) % 3];
            let pr = (i % 3 == 2).then_some((i / 3) as u64 + 1);
            let ci = CommitInfo::new(&repo, branch, pr, &sha(i, "seed"))
                .map_err(|e| anyhow!("commit info: {e}"))?;
            let name = ci.build_name();
            Ok(Seed { deployment: format!("{name}-odoo"), name, repo })
        })
        .collect()
}

/// A Deployment shaped like the one the default (native) kubefiles render.
fn deployment(seed: &Seed, i: usize) -> Value {
    let name = &seed.name;
    let branch = ["16.0", "17.0", "18.0"][(i / REPOS) % 3];
    let pr = if i % 3 == 2 { ((i / 3) + 1).to_string() } else { String::new() };
    let labels = json!({"runboat/build": name, "app": "odoo"});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": seed.deployment,
            "namespace": NS,
            "labels": labels,
            "annotations": {
                "runboat/init-status": "succeeded",
                "runboat/repo": seed.repo,
                "runboat/target-branch": branch,
                "runboat/pr": pr,
                "runboat/git-commit": sha(i, "seed"),
                "runboat/last-scaled": "2025-01-01T00:00:00Z",
            },
            "finalizers": ["runboat/cleanup"],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"kubectl.kubernetes.io/default-container": "odoo"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "enableServiceLinks": false,
                    "automountServiceAccountToken": false,
                    "containers": [
                        {
                            "name": "odoo",
                            "image": format!("ghcr.io/oca/oca-ci/py3.10-odoo{branch}:latest"),
                            "args": ["bash", "/runboat/runboat-start.sh"],
                            "envFrom": [
                                {"configMapRef": {"name": format!("{name}-odooenv")}},
                                {"secretRef": {"name": format!("{name}-odoosecretenv")}},
                            ],
                            "ports": [{"name": "http", "containerPort": 8069}],
                            "startupProbe": {"tcpSocket": {"port": 8069}, "periodSeconds": 5, "failureThreshold": 180},
                            "readinessProbe": {"tcpSocket": {"port": 8069}, "periodSeconds": 5},
                            "livenessProbe": {"tcpSocket": {"port": 8069}, "periodSeconds": 30, "failureThreshold": 4},
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "100Mi"},
                                "limits": {"cpu": "800m", "memory": "1Gi"},
                            },
                            "volumeMounts": [
                                {"name": "runboat-scripts", "mountPath": "/runboat"},
                                {"name": "data", "mountPath": "/mnt/data"},
                                {"name": "data", "mountPath": "/opt/odoo-venv", "subPath": "odoo-venv"},
                            ],
                        },
                        {
                            "name": "mail",
                            "image": "mailhog/mailhog:v1.0.1",
                            "ports": [
                                {"name": "smtp", "containerPort": 1025},
                                {"name": "mail-http", "containerPort": 8025},
                            ],
                            "readinessProbe": {"tcpSocket": {"port": 8025}, "periodSeconds": 5},
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"cpu": "100m", "memory": "128Mi"},
                            },
                        },
                    ],
                    "volumes": [
                        {"name": "runboat-scripts", "configMap": {"name": format!("{name}-runboat-scripts")}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": format!("{name}-data")}},
                    ],
                },
            },
        },
    })
}

/// A Deployment as the original runboat's packaged kubefiles make it:
/// kustomize's output of its `deployment.yaml` (name prefix, common labels
/// on selector and pod template, common annotations on the object and its
/// pod template, image rewritten), applied by `kubectl apply`, which keeps
/// the applied object in `kubectl.kubernetes.io/last-applied-configuration`.
fn deployment_original(seed: &Seed, i: usize) -> Value {
    let name = &seed.name;
    let branch = ["16.0", "17.0", "18.0"][(i / REPOS) % 3];
    let pr = if i % 3 == 2 { ((i / 3) + 1).to_string() } else { String::new() };
    let labels = json!({"app": "odoo", "runboat/build": name});
    let common = json!({
        "runboat/git-commit": sha(i, "seed"),
        "runboat/pr": pr,
        "runboat/repo": seed.repo,
        "runboat/target-branch": branch,
    });
    let mut annotations = common.clone();
    annotations["runboat/init-status"] = json!("todo");
    let mut applied = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "annotations": annotations,
            "finalizers": ["runboat/cleanup"],
            "labels": {"runboat/build": name},
            "name": seed.deployment,
            "namespace": NS,
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"annotations": common, "labels": labels},
                "spec": {
                    "containers": [{
                        "args": ["bash", "/runboat/runboat-start.sh"],
                        "envFrom": [
                            {"secretRef": {"name": format!("{name}-odoosecretenv")}},
                            {"configMapRef": {"name": format!("{name}-odooenv")}},
                        ],
                        "image": format!("ghcr.io/oca/oca-ci/py3.10-odoo{branch}:latest"),
                        "livenessProbe": {"initialDelaySeconds": 30, "periodSeconds": 30, "tcpSocket": {"port": 8069}},
                        "name": "odoo",
                        "ports": [{"containerPort": 8069, "name": "web"}],
                        "readinessProbe": {"initialDelaySeconds": 2, "periodSeconds": 2, "tcpSocket": {"port": 8069}},
                        "resources": {
                            "limits": {"cpu": "800m", "memory": "1Gi"},
                            "requests": {"cpu": "50m", "memory": "100Mi"},
                        },
                        "volumeMounts": [
                            {"mountPath": "/runboat", "name": "runboat-scripts"},
                            {"mountPath": "/mnt/data", "name": "data"},
                            {"mountPath": "/opt/odoo-venv", "name": "data", "subPath": "odoo-venv"},
                        ],
                    }],
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 10,
                    "volumes": [
                        {"configMap": {"name": format!("{name}-runboat-scripts")}, "name": "runboat-scripts"},
                        {"name": "data", "persistentVolumeClaim": {"claimName": format!("{name}-data")}},
                    ],
                },
            },
        },
    });
    let last_applied = format!("{applied}\n");
    applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(last_applied);
    // Initialized since, and scaled: as the original's JSON patches leave it.
    applied["metadata"]["annotations"]["runboat/init-status"] = json!("succeeded");
    applied["metadata"]["annotations"]["runboat/last-scaled"] = json!("2025-01-01T00:00:00Z");
    applied
}

fn settings_toml() -> String {
    format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "bench-pw"
build_namespace = "{NS}"
build_domain = "bench.example.com"
base_url = "http://runboat.bench.example.com"
github_webhook_secret = "{SECRET}"
disable_commit_statuses = true
max_initializing = 20
max_started = 1000000
max_deployed = 1000000

[[repos]]
repo = "^bench/repo\\d\\d$"
branch = "^.*$"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }}]
"#
    )
}

/// One run's environment: the two processes and their URLs.
struct Env {
    _dir: tempfile::TempDir,
    procs: Procs,
    http: Http,
    sim: String,
    api: String,
    kubeconfig: PathBuf,
    settings: PathBuf,
    bin: PathBuf,
    dir: PathBuf,
    /// Where phase profiles go, with `--perf`.
    perf: Option<PathBuf>,
}

impl Env {
    fn sim_pid(&self) -> u32 {
        self.procs.0.first().map_or(0, Child::id)
    }
    fn server_pid(&self) -> u32 {
        self.procs.0.get(1).map_or(0, Child::id)
    }

    async fn start_sim(bin: &Path) -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let settings = dir.path().join("runboat.toml");
        std::fs::write(&settings, settings_toml())?;
        let port = free_port()?;
        let child = Command::new(bin.join("kubesim"))
            .args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--namespace", NS, "--job-duration-ms", "0", "--pod-ready-ms", "0"])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start kubesim serve")?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http: Http =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(2048).build(connector);
        let env = Env {
            dir: dir.path().to_owned(),
            _dir: dir,
            procs: Procs(vec![child]),
            http,
            sim: format!("http://127.0.0.1:{port}"),
            api: String::new(),
            kubeconfig,
            settings,
            bin: bin.to_owned(),
            perf: None,
        };
        let url = format!("{}/readyz", env.sim);
        let http = env.http.clone();
        poll("kubesim /readyz", Duration::from_millis(20), || {
            let (http, url) = (http.clone(), url.clone());
            async move { get_json(&http, &url).await.is_ok_and(|(s, _)| s.is_success()) }
        })
        .await?;
        Ok(env)
    }

    /// Starts runboat-server; returns once `/readyz` answers 200.
    async fn start_server(&mut self) -> Result<()> {
        let port = free_port()?;
        let mut cmd = Command::new(self.bin.join("runboat-server"));
        for (key, _) in std::env::vars() {
            if key.starts_with("RUNBOAT_") || key.starts_with("KUBERNETES_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&self.settings)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "warn"])
            // Every benchmark client is 127.0.0.1: the per-client caps
            // would refuse the 1,000 subscribers (the global ones are the
            // defaults' order of magnitude, raised for 1,000 streams).
            .args(["--max-connections", "4096", "--max-connections-per-client", "4096"])
            .args(["--max-event-streams", "2048", "--max-event-streams-per-client", "2048"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start runboat-server")?;
        self.procs.0.push(child);
        self.api = format!("http://127.0.0.1:{port}");
        let url = format!("{}/readyz", self.api);
        let http = self.http.clone();
        poll("runboat-server /readyz", Duration::from_millis(10), || {
            let (http, url) = (http.clone(), url.clone());
            async move { get_json(&http, &url).await.is_ok_and(|(s, _)| s.is_success()) }
        })
        .await
    }

    /// Starts the profile of a phase, with `--perf`.
    async fn profile(&self, phase: &str) -> Result<Option<perf::Recording>> {
        match &self.perf {
            Some(dir) => {
                Ok(Some(perf::start(dir, phase, &[self.server_pid(), self.sim_pid()]).await?))
            }
            None => Ok(None),
        }
    }

    fn deployments_url(&self) -> String {
        format!("{}/apis/apps/v1/namespaces/{NS}/deployments", self.sim)
    }

    async fn status(&self) -> Result<Value> {
        let (s, v) = get_json(&self.http, &format!("{}/api/v1/status", self.api)).await?;
        if !s.is_success() {
            bail!("GET /api/v1/status answered {s}");
        }
        Ok(v)
    }

    async fn patch_deployment(&self, name: &str, patch: &Value) -> Result<()> {
        let req = Request::builder()
            .method(Method::PATCH)
            .uri(format!("{}/{name}", self.deployments_url()))
            .header("content-type", "application/merge-patch+json")
            .body(Full::new(Bytes::from(patch.to_string())))?;
        let (s, body) = send(&self.http, req).await?;
        if !s.is_success() {
            bail!("patch {name}: {s} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    async fn webhook(&self, event: &str, payload: &Value) -> Result<StatusCode> {
        let body = payload.to_string().into_bytes();
        let signature = runboat_github::WebhookSecret::new(SECRET).sign(&body);
        let req = Request::post(format!("{}/webhooks/github", self.api))
            .header("X-GitHub-Event", event)
            .header("X-Hub-Signature-256", signature)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        Ok(send(&self.http, req).await?.0)
    }
}

/// Runs `count` jobs over `concurrency` tasks; returns each job's latency (ms).
async fn concurrent<F, Fut>(count: usize, concurrency: usize, job: F) -> Result<Vec<f64>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (job, next) = (job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                job(i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

type Figures = BTreeMap<String, f64>;

/// One complete run at `n` builds: every figure of the suite.
async fn run_once(
    bin: &Path,
    n: usize,
    shape: Shape,
    quick: bool,
    perf: Option<PathBuf>,
) -> Result<Figures> {
    let mut f = Figures::new();
    let mut env = Env::start_sim(bin).await?;
    env.perf = perf;
    let seeds = Arc::new(seeds(n)?);

    // Seeding, straight into kubesim.
    let t = Instant::now();
    {
        let (http, url, seeds) = (env.http.clone(), env.deployments_url(), seeds.clone());
        concurrent(n, 32, move |i| {
            let (http, url, seeds) = (http.clone(), url.clone(), seeds.clone());
            async move {
                let body = match shape {
                    Shape::Native => deployment(&seeds[i], i),
                    Shape::Original => deployment_original(&seeds[i], i),
                }
                .to_string();
                let req = Request::post(url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                let (s, b) = send(&http, req).await?;
                if s != StatusCode::CREATED {
                    bail!("create: {s} {}", String::from_utf8_lossy(&b));
                }
                Ok(())
            }
        })
        .await?;
    }
    f.insert("seed_creates_per_s".into(), n as f64 / t.elapsed().as_secs_f64());
    // The size of one seeded object as sent, and as a client reads it
    // (defaults and status included).
    let sent = match shape {
        Shape::Native => deployment(&seeds[0], 0),
        Shape::Original => deployment_original(&seeds[0], 0),
    };
    f.insert("seed_sent_bytes".into(), sent.to_string().len() as f64);
    let one = format!("{}/{}", env.deployments_url(), seeds[0].deployment);
    let (_, body) = send(&env.http, Request::get(one).body(Full::default())?).await?;
    f.insert("seed_object_bytes".into(), body.len() as f64);
    f.insert("seed_kubesim_settle_s".into(), kubesim_settle(&env).await);

    // (1) Ingest: server start until the status counts every build.
    let t = Instant::now();
    env.start_server().await?;
    let mut last_status = Value::Null;
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(v) = env.status().await {
            if v["deployed"].as_u64() == Some(n as u64) {
                break;
            }
            last_status = v;
        }
        if Instant::now() > end {
            bail!("the server never counted {n} builds: {last_status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.insert("startup_until_all_counted_s".into(), t.elapsed().as_secs_f64());
    let server = env.server_pid();
    let sim = env.sim_pid();
    f.insert("server_cpu_startup_s".into(), cpu_secs(server));

    // Ingest of 3×N changes: written while the server is paused (SIGSTOP), so
    // the server absorbs them from its watch as fast as it can after SIGCONT.
    signal(server, "STOP")?;
    let changes = 3 * n;
    let patch_result = {
        let seeds = seeds.clone();
        let http = env.http.clone();
        let url = env.deployments_url();
        concurrent(changes, 32, move |i| {
            let (http, url, seeds) = (http.clone(), url.clone(), seeds.clone());
            async move {
                let seed = &seeds[i % seeds.len()];
                // The last change of all carries a marker year.
                let year = if i + 1 == changes { 2030 } else { 2026 };
                let ts = format!("{year}-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60);
                let patch = json!({"metadata": {"annotations": {"runboat/last-scaled": ts}}});
                let req = Request::builder()
                    .method(Method::PATCH)
                    .uri(format!("{url}/{}", seed.deployment))
                    .header("content-type", "application/merge-patch+json")
                    .body(Full::new(Bytes::from(patch.to_string())))?;
                let (s, b) = send(&http, req).await?;
                if !s.is_success() {
                    bail!("patch: {s} {}", String::from_utf8_lossy(&b));
                }
                Ok(())
            }
        })
        .await
    };
    let rec = env.profile("ingest").await?;
    let cpu0 = cpu_secs(server);
    signal(server, "CONT")?;
    patch_result?;
    // The concurrent patches may land in any order: the marker patch is sent
    // last but only its own visibility is awaited; the stream is in order, so
    // the other changes before it in kubesim's history are absorbed too.
    let t = Instant::now();
    let last = &seeds[(changes - 1) % seeds.len()];
    let url = format!("{}/api/v1/builds/{}", env.api, last.name);
    let http = env.http.clone();
    poll("the last change to be visible", Duration::from_millis(1), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            get_json(&http, &url).await.is_ok_and(|(_, v)| {
                v["last_scaled"].as_str().is_some_and(|s| s.starts_with("2030"))
            })
        }
    })
    .await?;
    let el = t.elapsed().as_secs_f64();
    f.insert("ingest_events_per_s".into(), changes as f64 / el);
    f.insert("ingest_server_cpu_s".into(), cpu_secs(server) - cpu0);
    finish_profile(rec)?;

    // (2) Memory after ingest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (hwm, rss) = mem_mib(server);
    f.insert("mem_peak_mib".into(), hwm);
    f.insert("mem_steady_mib".into(), rss);

    // (3) Read API under concurrent load, once kubesim is done with the
    // ingest's changes.
    f.insert("read_kubesim_settle_s".into(), kubesim_settle(&env).await);
    let scale = if quick { 1 } else { 2 };
    let all_count = if n >= 10_000 { 40 } else { 200 } * scale;
    for (key, path, count, conc) in [
        ("read_repo", "/api/v1/builds?repo=bench/repo07".to_owned(), 4_000 * scale, 16),
        ("read_status", "/api/v1/status".to_owned(), 4_000 * scale, 16),
        ("read_all", "/api/v1/builds".to_owned(), all_count, 4),
    ] {
        let rec = env.profile(key).await?;
        let cpu0 = cpu_secs(server);
        let t = Instant::now();
        let (http, url) = (env.http.clone(), format!("{}{path}", env.api));
        let lat = concurrent(count, conc, move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let (s, _) = send(&http, Request::get(url).body(Full::default())?).await?;
                if !s.is_success() {
                    bail!("GET answered {s}");
                }
                Ok(())
            }
        })
        .await?;
        let el = t.elapsed().as_secs_f64();
        let lat = sorted(lat);
        f.insert(format!("{key}_rps"), count as f64 / el);
        f.insert(format!("{key}_p50_ms"), percentile(&lat, 0.5));
        f.insert(format!("{key}_p99_ms"), percentile(&lat, 0.99));
        f.insert(format!("{key}_server_cpu_s"), cpu_secs(server) - cpu0);
        finish_profile(rec)?;
    }

    // (4) Live events: 1,000 SSE subscribers on one repo.
    sse(&env, &seeds, &mut f).await?;
    sse_burst(&env, &seeds, &mut f).await?;

    // (5) Reaction.
    reaction(&env, if quick { 3 } else { 5 }, &mut f).await?;

    // (6) Lifecycle throughput.
    let rec = env.profile("lifecycle").await?;
    lifecycle(&env, if quick { 200 } else { 1_000 }, &mut f).await?;

    finish_profile(rec)?;
    let (hwm, _) = mem_mib(server);
    f.insert("mem_peak_end_mib".into(), hwm);
    f.insert("server_cpu_total_s".into(), cpu_secs(server));
    f.insert("kubesim_cpu_total_s".into(), cpu_secs(sim));
    Ok(f)
}

pub(crate) fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Waits until `count` subscribers got their initial builds (`ready`),
/// failing with the first subscriber that failed, or after [`DEADLINE`].
async fn wait_subscribed(
    tasks: &mut Vec<tokio::task::JoinHandle<Result<()>>>,
    ready: &AtomicUsize,
    count: usize,
) -> Result<()> {
    let end = Instant::now() + DEADLINE;
    while ready.load(Ordering::SeqCst) < count {
        if Instant::now() > end {
            bail!(
                "only {} of {count} subscribers got their initial builds",
                ready.load(Ordering::SeqCst)
            );
        }
        if let Some(t) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(t);
            task.await??;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn sse(env: &Env, seeds: &[Seed], f: &mut Figures) -> Result<()> {
    const SUBS: usize = 1_000;
    let repo = "bench/repo03";
    let initial = seeds.iter().filter(|s| s.repo == repo).count();
    let target = seeds.iter().find(|s| s.repo == repo).context("a build in the repo")?;
    let ready = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(SUBS);
    let mut tasks = Vec::new();
    let url = format!("{}/api/v1/build-events?repo={repo}", env.api);
    // Opening connections a few at a time keeps the accept queue sane.
    let gate = Arc::new(Semaphore::new(64));
    for _ in 0..SUBS {
        let (http, url, ready, tx, gate) =
            (env.http.clone(), url.clone(), ready.clone(), tx.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await?;
            let res = http.request(Request::get(url).body(Full::default())?).await?;
            drop(permit);
            let mut body = res.into_body();
            let mut seen = 0usize;
            let mut is_ready = false;
            let mut tail = String::new();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                let Some(data) = frame.data_ref() else { continue };
                let now = Instant::now();
                tail.push_str(&String::from_utf8_lossy(data));
                if tail.contains("2031-") {
                    let _ = tx.send(now).await;
                    // Stay connected until the burst is over: closing here
                    // would load the server with 1,000 connection
                    // teardowns while it still delivers to the others.
                    while let Some(frame) = body.frame().await {
                        frame?;
                    }
                    return Ok::<_, anyhow::Error>(());
                }
                seen += tail.matches("\ndata:").count() + usize::from(tail.starts_with("data:"));
                // Keep only an unfinished line for the next frame.
                tail = tail.rsplit_once('\n').map(|(_, t)| t.to_owned()).unwrap_or(tail);
                if !is_ready && seen >= initial {
                    is_ready = true;
                    ready.fetch_add(1, Ordering::SeqCst);
                }
            }
            bail!("an event stream ended early")
        }));
    }
    drop(tx);
    wait_subscribed(&mut tasks, &ready, SUBS).await?;
    // kubesim's simulated controllers may still be working through the
    // ingest's changes (a full core at 10,000 builds), which would delay its
    // watch delivery: wait (bounded) until it is idle, so the figure is the
    // server's.
    f.insert("sse_kubesim_settle_s".into(), kubesim_settle(env).await);
    let server = env.server_pid();
    let rec = env.profile("sse").await?;
    let cpu0 = cpu_secs(server);
    let sim0 = cpu_secs(env.sim_pid());
    let t0 = Instant::now();
    let patch =
        json!({"metadata": {"annotations": {"runboat/last-scaled": "2031-01-01T00:00:00Z"}}});
    env.patch_deployment(&target.deployment, &patch).await?;
    f.insert("sse_patch_answered_ms".into(), t0.elapsed().as_secs_f64() * 1000.0);
    let mut delays = Vec::with_capacity(SUBS);
    while delays.len() < SUBS {
        match tokio::time::timeout_at((t0 + Duration::from_secs(60)).into(), rx.recv()).await {
            Ok(Some(at)) => delays.push(at.duration_since(t0).as_secs_f64() * 1000.0),
            Ok(None) | Err(_) => break,
        }
    }
    let cpu = cpu_secs(server) - cpu0;
    f.insert("sse_kubesim_cpu_s".into(), cpu_secs(env.sim_pid()) - sim0);
    finish_profile(rec)?;
    for t in &tasks {
        t.abort();
    }
    if delays.len() < SUBS {
        bail!("only {} of {SUBS} subscribers saw the change", delays.len());
    }
    let d = sorted(delays);
    f.insert("sse_p50_ms".into(), percentile(&d, 0.5));
    f.insert("sse_p99_ms".into(), percentile(&d, 0.99));
    f.insert("sse_max_ms".into(), percentile(&d, 1.0));
    f.insert("sse_server_cpu_s".into(), cpu);
    Ok(())
}

/// A burst of changes to one repo's builds, delivered to many subscribers of
/// that repo: up to 100 patches sent at once (16 connections), 200 SSE
/// subscribers. Every subscriber must see every change; the figures are the
/// first delivery after the burst starts, and the delay from each change's
/// PATCH to each of its deliveries (20,000 in all).
async fn sse_burst(env: &Env, seeds: &[Seed], f: &mut Figures) -> Result<()> {
    const SUBS: usize = 200;
    const MARK: &str = "\"last_scaled\":\"2032-01-01T";
    let repo = "bench/repo05";
    let targets: Vec<&Seed> = seeds.iter().filter(|s| s.repo == repo).collect();
    if targets.is_empty() {
        bail!("no build in {repo}");
    }
    let initial = targets.len();
    // One change per build (100 at 10,000 builds; as many as the repo has
    // below that), so that every change is a distinct delivery.
    let changes = targets.len().min(100);
    f.insert("burst_changes".into(), changes as f64);
    let ready = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Option<Instant>>>(SUBS);
    let url = format!("{}/api/v1/build-events?repo={repo}", env.api);
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for _ in 0..SUBS {
        let (http, url, ready, tx, gate) =
            (env.http.clone(), url.clone(), ready.clone(), tx.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await?;
            let res = http.request(Request::get(url).body(Full::default())?).await?;
            drop(permit);
            let mut body = res.into_body();
            let mut arrivals: Vec<Option<Instant>> = vec![None; changes];
            let (mut seen, mut got) = (0usize, 0usize);
            let mut pending = String::new();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                let Some(data) = frame.data_ref() else { continue };
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(data));
                let Some(end) = pending.rfind('\n') else { continue };
                for line in pending[..end].lines().filter(|l| l.starts_with("data:")) {
                    seen += 1;
                    if seen == initial {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    // The change number is in the marker time: 00:MM:SS.
                    let Some(at) = line.find(MARK) else { continue };
                    let time = line.get(at + MARK.len()..at + MARK.len() + 8).unwrap_or("");
                    let (m, sec) = (time.get(3..5), time.get(6..8));
                    let Some(i) = m.zip(sec).and_then(|(m, s)| {
                        Some(m.parse::<usize>().ok()? * 60 + s.parse::<usize>().ok()?)
                    }) else {
                        continue;
                    };
                    if i < changes && arrivals[i].is_none() {
                        arrivals[i] = Some(now);
                        got += 1;
                    }
                }
                pending.drain(..=end);
                if got == changes {
                    break;
                }
            }
            let _ = tx.send(arrivals).await;
            // Stay connected until the others are done (see `sse`).
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    drop(tx);
    wait_subscribed(&mut tasks, &ready, SUBS).await?;
    kubesim_settle(env).await;
    let server = env.server_pid();
    let rec = env.profile("sse_burst").await?;
    let cpu0 = cpu_secs(server);
    let sent: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..changes).map(|_| std::sync::OnceLock::new()).collect());
    // When kubesim answered each PATCH: the delivery delay counted from
    // there is what the server (and kubesim's watch) adds.
    let answered: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..changes).map(|_| std::sync::OnceLock::new()).collect());
    let names: Arc<Vec<String>> =
        Arc::new((0..changes).map(|i| targets[i % targets.len()].deployment.clone()).collect());
    let t0 = Instant::now();
    {
        let (http, url, sent, answered, names) = (
            env.http.clone(),
            env.deployments_url(),
            sent.clone(),
            answered.clone(),
            names.clone(),
        );
        concurrent(changes, 16, move |i| {
            let (http, url, sent, answered, names) =
                (http.clone(), url.clone(), sent.clone(), answered.clone(), names.clone());
            async move {
                let ts = format!("2032-01-01T00:{:02}:{:02}Z", i / 60, i % 60);
                let patch = json!({"metadata": {"annotations": {"runboat/last-scaled": ts}}});
                let req = Request::builder()
                    .method(Method::PATCH)
                    .uri(format!("{url}/{}", names[i]))
                    .header("content-type", "application/merge-patch+json")
                    .body(Full::new(Bytes::from(patch.to_string())))?;
                let _ = sent[i].set(Instant::now());
                let (s, b) = send(&http, req).await?;
                let _ = answered[i].set(Instant::now());
                if !s.is_success() {
                    bail!("patch: {s} {}", String::from_utf8_lossy(&b));
                }
                Ok(())
            }
        })
        .await?;
    }
    let mut delays = Vec::with_capacity(SUBS * changes);
    let mut after_answer = Vec::with_capacity(SUBS * changes);
    let mut first = f64::INFINITY;
    let mut missing = 0usize;
    for _ in 0..SUBS {
        let Ok(Some(arrivals)) =
            tokio::time::timeout_at((t0 + Duration::from_secs(60)).into(), rx.recv()).await
        else {
            break;
        };
        for (i, at) in arrivals.iter().enumerate() {
            match (at, sent[i].get()) {
                (Some(at), Some(sent)) => {
                    delays.push(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
                    if let Some(answered) = answered[i].get() {
                        let ms = at.saturating_duration_since(*answered).as_secs_f64() * 1000.0;
                        after_answer.push(ms);
                    }
                    first = first.min(at.duration_since(t0).as_secs_f64() * 1000.0);
                }
                _ => missing += 1,
            }
        }
    }
    f.insert("burst_server_cpu_s".into(), cpu_secs(server) - cpu0);
    finish_profile(rec)?;
    for t in &tasks {
        t.abort();
    }
    if delays.len() < SUBS * changes {
        bail!(
            "only {} of {} deliveries arrived ({missing} changes missed by a subscriber)",
            delays.len(),
            SUBS * changes
        );
    }
    let patches: Vec<f64> = (0..changes)
        .filter_map(|i| {
            Some(answered[i].get()?.duration_since(*sent[i].get()?).as_secs_f64() * 1000.0)
        })
        .collect();
    let patches = sorted(patches);
    f.insert("burst_patch_p99_ms".into(), percentile(&patches, 0.99));
    let after = sorted(after_answer);
    f.insert("burst_after_answer_p99_ms".into(), percentile(&after, 0.99));
    let d = sorted(delays);
    f.insert("burst_first_ms".into(), first);
    f.insert("burst_p50_ms".into(), percentile(&d, 0.5));
    f.insert("burst_p99_ms".into(), percentile(&d, 0.99));
    f.insert("burst_max_ms".into(), percentile(&d, 1.0));
    Ok(())
}

/// Waits (at most 30 s) until kubesim is idle (< 20 ms of CPU per 100 ms):
/// its simulated controllers work through a burst of writes at up to a full
/// core, which a real cluster does on other machines. Returns the wait.
async fn kubesim_settle(env: &Env) -> f64 {
    let t = Instant::now();
    for _ in 0..300 {
        let c0 = cpu_secs(env.sim_pid());
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cpu_secs(env.sim_pid()) - c0 < 0.02 {
            break;
        }
    }
    t.elapsed().as_secs_f64()
}

/// A kubesim watch of one build's objects of one resource: each JSON event
/// with its arrival time, over a channel.
async fn watch(
    env: &Env,
    path: &str,
    build: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)>> {
    let url = format!(
        "{}{path}?watch=true&labelSelector=runboat%2Fbuild%3D{build}&timeoutSeconds=120",
        env.sim
    );
    let res = env.http.request(Request::get(url).body(Full::default())?).await?;
    if !res.status().is_success() {
        bail!("watch {path}: {}", res.status());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = res.into_body();
    tokio::spawn(async move {
        let mut buf = Vec::<u8>::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else { continue };
            let now = Instant::now();
            buf.extend_from_slice(data);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line)
                    && tx.send((now, v)).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

async fn next_where(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Instant> {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some((at, v))) if pred(&v) => return Ok(at),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("never saw {what}"),
        }
    }
}

async fn reaction(env: &Env, count: usize, f: &mut Figures) -> Result<()> {
    let mut create = Vec::new();
    let mut init = Vec::new();
    for i in 0..count {
        let repo = "bench/repo42";
        let branch = format!("react-{i}");
        let commit = sha(i, "react");
        let name = CommitInfo::new(repo, &branch, None, &commit)
            .map_err(|e| anyhow!("commit info: {e}"))?
            .build_name();
        let mut deps =
            watch(env, &format!("/apis/apps/v1/namespaces/{NS}/deployments"), &name).await?;
        let mut jobs = watch(env, &format!("/apis/batch/v1/namespaces/{NS}/jobs"), &name).await?;
        let push = json!({
            "ref": format!("refs/heads/{branch}"),
            "after": commit,
            "repository": {"full_name": repo},
        });
        let t0 = Instant::now();
        let s = env.webhook("push", &push).await?;
        if s != StatusCode::ACCEPTED {
            bail!("push webhook answered {s}");
        }
        let created =
            next_where(&mut deps, "the Deployment's creation", |v| v["type"] == "ADDED").await?;
        let job_done = next_where(&mut jobs, "the init Job's success", |v| {
            v["object"]["status"]["succeeded"].as_i64().unwrap_or(0) >= 1
        })
        .await?;
        let written = next_where(&mut deps, "init-status succeeded", |v| {
            v["object"]["metadata"]["annotations"]["runboat/init-status"] == "succeeded"
        })
        .await?;
        create.push(created.duration_since(t0).as_secs_f64() * 1000.0);
        init.push(written.saturating_duration_since(job_done).as_secs_f64() * 1000.0);
    }
    let (create, init) = (sorted(create), sorted(init));
    f.insert("reaction_webhook_to_deployment_ms".into(), percentile(&create, 0.5));
    f.insert("reaction_job_success_to_write_ms".into(), percentile(&init, 0.5));
    Ok(())
}

async fn lifecycle(env: &Env, m: usize, f: &mut Figures) -> Result<()> {
    let base = env.status().await?["deployed"].as_u64().unwrap_or(0);
    let server = env.server_pid();
    let (cpu0, sim0) = (cpu_secs(server), cpu_secs(env.sim_pid()));
    let t0 = Instant::now();
    let (http, api) = (env.http.clone(), env.api.clone());
    concurrent(m, 8, move |i| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let push = json!({
                "ref": format!("refs/heads/lc-{i}"),
                "after": sha(i, "life"),
                "repository": {"full_name": format!("bench/repo{:02}", i % REPOS)},
            });
            let body = push.to_string().into_bytes();
            let signature = runboat_github::WebhookSecret::new(SECRET).sign(&body);
            let req = Request::post(format!("{api}/webhooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-Hub-Signature-256", signature)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let (s, _) = send(&http, req).await?;
            if s != StatusCode::ACCEPTED {
                bail!("push webhook answered {s}");
            }
            Ok(())
        }
    })
    .await?;
    let want = base + m as u64;
    let mut last = Value::Null;
    let end = Instant::now() + DEADLINE;
    loop {
        let v = env.status().await?;
        if v["deployed"].as_u64() >= Some(want)
            && v["to_initialize"].as_u64() == Some(0)
            && v["initializing"].as_u64() == Some(0)
        {
            break;
        }
        if Instant::now() > end {
            bail!("lifecycle: not all {m} builds initialized: {v} (was {last})");
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let el = t0.elapsed().as_secs_f64();
    f.insert("lifecycle_builds_per_s".into(), m as f64 / el);
    f.insert("lifecycle_server_cpu_s".into(), cpu_secs(server) - cpu0);
    f.insert("lifecycle_kubesim_cpu_s".into(), cpu_secs(env.sim_pid()) - sim0);
    Ok(())
}

fn finish_profile(rec: Option<perf::Recording>) -> Result<()> {
    if let Some(rec) = rec {
        let report = rec.finish()?;
        println!("bench: profile {}", report.display());
    }
    Ok(())
}

/// Median, min and max of one figure over the runs.
fn stats(values: &[f64]) -> (f64, f64, f64) {
    let v = sorted(values.to_vec());
    (
        percentile(&v, 0.5),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

/// Rows of the table: key, label, unit, target (`>= x` or `< x`, 10,000 builds).
/// A target: `(at_least, value)`, e.g. `(true, 25_000.0)` for "≥ 25,000".
type Target = Option<(bool, f64)>;

const ROWS: &[(&str, &str, &str, Target)] = &[
    ("seed_creates_per_s", "seeding into kubesim (not runboat)", "creates/s", None),
    ("seed_sent_bytes", "  one seeded Deployment as sent", "bytes", None),
    ("seed_object_bytes", "  one seeded Deployment as a client reads it", "bytes", None),
    ("seed_kubesim_settle_s", "  wait for kubesim to go idle after it", "s", None),
    ("startup_until_all_counted_s", "ingest: server start → status counts all", "s", None),
    ("server_cpu_startup_s", "  server CPU until then", "s", None),
    ("ingest_events_per_s", "ingest: 3×N Deployment changes", "events/s", Some((true, 25_000.0))),
    ("ingest_server_cpu_s", "  server CPU during ingest", "s", None),
    ("mem_peak_mib", "memory: peak RSS after ingest (VmHWM)", "MiB", Some((false, 80.0))),
    ("mem_steady_mib", "memory: steady RSS after ingest (VmRSS)", "MiB", None),
    ("mem_peak_end_mib", "memory: peak RSS at the end of the run", "MiB", None),
    ("read_kubesim_settle_s", "wait for kubesim to go idle before the reads", "s", None),
    ("read_repo_rps", "GET /builds?repo= (16 conns)", "req/s", None),
    ("read_repo_p50_ms", "  p50", "ms", None),
    ("read_repo_p99_ms", "  p99", "ms", Some((false, 5.0))),
    ("read_repo_server_cpu_s", "  server CPU", "s", None),
    ("read_all_rps", "GET /builds (all, 4 conns)", "req/s", None),
    ("read_all_p50_ms", "  p50", "ms", None),
    ("read_all_p99_ms", "  p99", "ms", None),
    ("read_all_server_cpu_s", "  server CPU", "s", None),
    ("read_status_rps", "GET /status (16 conns)", "req/s", None),
    ("read_status_p50_ms", "  p50", "ms", None),
    ("read_status_p99_ms", "  p99", "ms", None),
    ("read_status_server_cpu_s", "  server CPU", "s", None),
    ("sse_p50_ms", "SSE, 1,000 subscribers: change → arrival p50", "ms", None),
    ("sse_p99_ms", "  p99", "ms", Some((false, 50.0))),
    ("sse_max_ms", "  max", "ms", None),
    ("sse_patch_answered_ms", "  of which kubesim answering the PATCH", "ms", None),
    ("sse_server_cpu_s", "  server CPU during the burst", "s", None),
    ("sse_kubesim_cpu_s", "  kubesim CPU during the burst", "s", None),
    ("sse_kubesim_settle_s", "  wait for kubesim to go idle before it", "s", None),
    ("burst_first_ms", "SSE burst, 100 changes × 200 subscribers: first delivery", "ms", None),
    ("burst_p50_ms", "  change → arrival p50 over all deliveries", "ms", None),
    ("burst_p99_ms", "  p99", "ms", Some((false, 50.0))),
    ("burst_max_ms", "  max", "ms", None),
    ("burst_patch_p99_ms", "  of which kubesim answering a PATCH, p99", "ms", None),
    ("burst_after_answer_p99_ms", "  PATCH answered → arrival p99", "ms", None),
    ("burst_server_cpu_s", "  server CPU during the burst", "s", None),
    (
        "reaction_webhook_to_deployment_ms",
        "reaction: webhook → Deployment created",
        "ms",
        Some((false, 20.0)),
    ),
    (
        "reaction_job_success_to_write_ms",
        "reaction: init Job success → init-status write",
        "ms",
        Some((false, 20.0)),
    ),
    ("lifecycle_builds_per_s", "lifecycle: pushes → all initialized", "builds/s", None),
    ("lifecycle_server_cpu_s", "  server CPU", "s", None),
    ("lifecycle_kubesim_cpu_s", "  kubesim CPU", "s", None),
    ("server_cpu_total_s", "server CPU, whole run", "s", None),
    ("kubesim_cpu_total_s", "kubesim CPU, whole run", "s", None),
];

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "—".to_owned()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn markdown(results: &BTreeMap<(usize, Shape), Vec<Figures>>, runs: usize) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "Median of {runs} run(s), [min – max]. Targets apply at 10,000 builds and are reported, never asserted.\n\n"
    ));
    for ((n, shape), figs) in results {
        let title = match shape {
            Shape::Native => format!("{n} builds"),
            Shape::Original => format!("{n} builds shaped as the original's kubefiles make them"),
        };
        md.push_str(&format!(
            "### {title}\n\n| figure | unit | median [min – max] | target |\n|---|---|---|---|\n"
        ));
        for (key, label, unit, target) in ROWS {
            let values: Vec<f64> = figs.iter().filter_map(|f| f.get(*key).copied()).collect();
            if values.is_empty() {
                continue;
            }
            let (med, min, max) = stats(&values);
            let target = match target {
                None => String::new(),
                Some((at_least, t)) => {
                    let met = if *at_least { med >= *t } else { med < *t };
                    let op = if *at_least { "≥" } else { "<" };
                    format!("{op} {} {}", fmt_num(*t), if met { "met" } else { "**missed**" })
                }
            };
            md.push_str(&format!(
                "| {label} | {unit} | {} [{} – {}] | {target} |\n",
                fmt_num(med),
                fmt_num(min),
                fmt_num(max)
            ));
        }
        md.push('\n');
    }
    md
}

/// `cargo xtask bench [--builds N] [--shape native|original|both] [--quick] [--runs R] [--perf]`.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    let opts = parse_opts(args)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    if opts.perf {
        perf::check_available()?;
    }
    // The load generator is part of every latency figure and shares the
    // cores: it runs optimised (wrk would be too), so `cargo xtask` (a debug
    // build) builds the release xtask and hands the bench over to it.
    crate::cargo(&["build", "--release", "-p", "kubesim", "-p", "runboat-server", "-p", "xtask"])?;
    let bin = target.join("release");
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_MARK).is_none() {
        let status = std::process::Command::new(bin.join("xtask"))
            .env(RELEASE_MARK, "1")
            .arg("bench")
            .args(args)
            .status()
            .context("run the release xtask")?;
        if !status.success() {
            bail!("the benchmark failed ({status})");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = jiff::Timestamp::now();
    let mut results: BTreeMap<(usize, Shape), Vec<Figures>> = BTreeMap::new();
    for &(n, shape) in &opts.sizes {
        let label = shape.label(n);
        for run in 1..=opts.runs {
            println!("bench: {label} builds, run {run}/{}", opts.runs);
            let t = Instant::now();
            let perf =
                opts.perf.then(|| target.join("bench").join("perf").join(format!("{label}-{run}")));
            let figs = runtime.block_on(run_once(&bin, n, shape, opts.quick, perf))?;
            println!("bench: run done in {:.1} s", t.elapsed().as_secs_f64());
            results.entry((n, shape)).or_default().push(figs);
        }
    }
    let md = markdown(&results, opts.runs);
    println!("\n{md}");
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    let json = json!({
        "date": started.to_string(),
        "quick": opts.quick,
        "runs": opts.runs,
        "machine": machine(),
        "results": results.iter().map(|((n, shape), figs)| (shape.label(*n), json!(figs))).collect::<serde_json::Map<_, _>>(),
    });
    let text = serde_json::to_string_pretty(&json)?;
    let stamp = started.strftime("%Y%m%dT%H%M%SZ").to_string();
    std::fs::write(out.join(format!("{stamp}.json")), &text)?;
    std::fs::write(out.join("latest.json"), &text)?;
    let header = format!("Run {started} on {}.\n\n", machine());
    std::fs::write(out.join("latest.md"), header + &md)?;
    println!("bench: results in {}", out.display());
    Ok(())
}

/// nproc, memory and CPU model.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.1} GiB memory")
}
