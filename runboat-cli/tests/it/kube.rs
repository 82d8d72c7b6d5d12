//! The same binary against the production wiring of runboat-server
//! (`run_with_cluster`: controller, GitHub webhook, HTTP server) on the
//! production cluster client (runboat-k8s's `KubeCluster`, default
//! kubefiles) talking HTTP to kubesim, all on 127.0.0.1 in this process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kubesim::{ControllerConfig, KubeSim};
use runboat_core::{Cluster, CommitInfo, Settings};
use runboat_github::WebhookSecret;
use runboat_server::ServerOptions;
use serde_json::json;
use tokio::time::Instant;

use crate::support::{PATIENCE, Run, admin, run, runboat, sha};

const NS: &str = "runboat-cli-e2e";
const SECRET: &str = "cli-webhook-secret";

fn settings() -> Settings {
    Settings::from_toml_str(&format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "hunter2"
build_namespace = "{NS}"
build_domain = "e2e.example.com"
base_url = "http://runboat.e2e.example.com"
github_webhook_secret = "{SECRET}"
disable_commit_statuses = true

[[repos]]
repo = "^oca/.*"
branch = "^16\\.0$"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }}]
"#
    ))
    .expect("settings")
}

/// Runs `args` until `done` accepts the result (deadline [`PATIENCE`]).
async fn until(url: &str, args: &[&str], done: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = run(runboat(url), args).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "runboat {args:?} never got there: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_kubesim_through_the_cli() {
    let config = kubesim::Config {
        namespaces: vec!["default".into(), NS.into()],
        controllers: ControllerConfig {
            pod_ready_delay: Duration::from_millis(200),
            job_duration: Duration::from_millis(200),
            ..ControllerConfig::default()
        },
        ..kubesim::Config::default()
    };
    let sim = KubeSim::start_with(config).await.expect("kubesim starts");
    let settings = settings();
    let cluster = runboat_k8s::KubeCluster::new(sim.client(), Arc::new(settings.clone()))
        .await
        .expect("KubeCluster");
    let cluster: Arc<dyn Cluster> = Arc::new(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runboat_server::run::run_with_cluster(
        settings,
        cluster,
        ServerOptions::default(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    until(&url, &["status"], |r| r.code == 0).await;

    // A signed push webhook deploys a build.
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/16.0",
        "after": sha(50),
        "repository": {"full_name": "OCA/web"},
    }))
    .expect("json");
    let delivery = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", WebhookSecret::new(SECRET).sign(&body))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let http = Client::builder(TokioExecutor::new()).build_http();
    let answer = http.request(delivery).await.expect("webhook delivered");
    assert_eq!(answer.status(), 202);
    let name = CommitInfo::new("oca/web", "16.0", None, &sha(50)).expect("commit").build_name();

    // Initialized by a kubesim Job, then stopped.
    let r =
        until(&url, &["show", &name, "--json"], |r| r.code == 0 && r.json()["status"] == "stopped")
            .await;
    assert_eq!(r.json()["commit_info"]["repo"], "oca/web");
    let r = run(runboat(&url), &["builds", "--repo", "oca/web"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains(&name) && r.stdout.contains("stopped"), "{r:?}");

    let r = run(runboat(&url), &["start", &name, "--wait"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains(&format!("{name} is started: http://")), "{r:?}");
    let r = run(runboat(&url), &["status", "--json"]).await;
    assert_eq!(r.json()["started"], 1, "{r:?}");
    let r = run(runboat(&url), &["logs", &name, "--init"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("initialize completed successfully"), "{r:?}");

    let r = run(runboat(&url), &["stop", &name]).await;
    r.expect_code(0);
    until(&url, &["show", &name, "--json"], |r| r.code == 0 && r.json()["status"] == "stopped")
        .await;

    let r = run(admin(&url), &["undeploy", &name]).await;
    r.expect_code(0);
    // The cleanup job runs, then every object is gone.
    until(&url, &["show", &name], |r| r.code == 3).await;

    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, server).await.expect("stops").expect("join").expect("ok");
    sim.shutdown().await;
}
