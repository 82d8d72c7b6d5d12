//! Wake on request end to end: the real binary on kubesim, with
//! `wake_service`, behind a stand-in ingress controller.
//!
//! The stand-in resolves each request as an ingress controller does, from
//! the Ingress objects in kubesim: `Host` → Ingress rule → path `/` →
//! Service. The wake Service (`runboat-wake`) is forwarded to the
//! runboat-server process (same `Host`, path and query); a build's own
//! Service answers a small page naming it (kubesim's pods serve nothing);
//! no rule is the controller's 404.
//!
//! The browser part (slow: `RUNBOAT_SLOW_TESTS=1`) opens a sleeping
//! build's URL in headless Chromium through the stand-in (as its HTTP
//! proxy), saves a screenshot of the waiting page under
//! `target/screenshots/wake.png` and checks that the page ends on the
//! build's own URL.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::e2e::{NS, REPO, STEP, Server, env};

const WAKE: &str = "runboat-wake";

/// The Service the Ingress objects send `host` to (path `/`).
fn resolve(sim: &kubesim::Handle, host: &str) -> Option<String> {
    let ingresses = sim.list("ingresses", Some(NS)).expect("list ingresses");
    ingresses.iter().find_map(|i| {
        let rules = i.pointer("/spec/rules")?.as_array()?;
        let rule = rules.iter().find(|r| r["host"] == host)?;
        let paths = rule.pointer("/http/paths")?.as_array()?;
        let path = paths.iter().find(|p| p["path"] == "/")?;
        path.pointer("/backend/service/name")?.as_str().map(str::to_owned)
    })
}

#[derive(Clone)]
struct Ingress {
    sim: kubesim::Handle,
    runboat: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

async fn route(State(ingress): State<Ingress>, req: Request) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_owned())
        .unwrap_or_default();
    let path = req.uri().path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
    match resolve(&ingress.sim, &host) {
        None => (StatusCode::NOT_FOUND, "default backend - 404").into_response(),
        Some(service) if service == WAKE => {
            let forward = http::Request::builder()
                .method(req.method())
                .uri(format!("{}{path}", ingress.runboat))
                .header(header::HOST, host)
                .body(Full::default())
                .expect("request");
            let resp = ingress.http.request(forward).await.expect("runboat answers");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            Response::from_parts(parts, Body::from(body))
        }
        Some(service) => {
            let html = format!(
                "<!doctype html><title>odoo</title><h1 id=\"reached\">reached {service}</h1>"
            );
            ([(header::CONTENT_TYPE, "text/html")], html).into_response()
        }
    }
}

/// Starts the stand-in ingress controller; its address.
async fn ingress(sim: kubesim::Handle, runboat: String) -> String {
    let state = Ingress { sim, runboat, http: Client::builder(TokioExecutor::new()).build_http() };
    let app = axum::Router::new().fallback(route).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// GET `path` on `host` through the stand-in: status and body.
async fn visit(proxy: &str, host: &str, path: &str) -> (StatusCode, String) {
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("{proxy}{path}"))
        .header(header::HOST, host)
        .body(Full::default())
        .expect("request");
    let resp = http.request(req).await.expect("request");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `host` resolves to `want` (by name, or "not the wake
/// Service" for `None`).
async fn until_routed(sim: &kubesim::Handle, host: &str, want: Option<&str>) -> String {
    let ok = |s: &Option<String>| match (s, want) {
        (Some(s), Some(w)) => s == w,
        (Some(s), None) => s != WAKE,
        (None, _) => false,
    };
    let host = host.to_owned();
    assert!(
        sim.wait_until(STEP, |h| ok(&resolve(h, &host))).await,
        "{host} never routed to {want:?}: {:?}",
        resolve(sim, &host)
    );
    resolve(sim, &host).expect("routed")
}

async fn until_status(server: &Server, name: &str, status: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let (_, build) = server.get(&format!("/api/v1/builds/{name}")).await;
        if build["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never {status}: {build}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The workspace's target directory, whatever CARGO_TARGET_DIR says: where
/// people look for the screenshots (as the board's scale test does).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_sleeping_build_wakes_it_through_the_ingress() {
    let env = env().await;
    let settings = env.settings(&format!("wake_service = \"{WAKE}:80\""));
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, &settings, &[]).await;
    server.wait_ready().await;
    let sim = env.sim.handle();
    let proxy = ingress(sim.clone(), server.base.clone()).await;

    // A build, initialized: asleep, its hosts point at runboat.
    let sha = "fedcba9876543210fedcba9876543210fedcba98";
    let push = json!({"ref": "refs/heads/16.0", "after": sha, "repository": {"full_name": REPO}});
    assert_eq!(server.webhook("push", &push).await, StatusCode::ACCEPTED);
    let deadline = Instant::now() + STEP;
    let build = loop {
        let (_, builds) = server.get("/api/v1/builds").await;
        if let Some(b) = builds.as_array().and_then(|b| b.first()) {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "no build: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let name = build["name"].as_str().expect("a build").to_owned();
    let link = build["deploy_link"].as_str().expect("deploy link").to_owned();
    let host = link.trim_start_matches("http://").to_owned();
    let mail = build["deploy_link_mailhog"]
        .as_str()
        .expect("mail")
        .trim_start_matches("http://")
        .to_owned();
    until_status(&server, &name, "stopped").await;
    until_routed(&sim, &host, Some(WAKE)).await;
    until_routed(&sim, &mail, Some(WAKE)).await;

    // A request gets the waiting page and starts the build.
    let (status, page) = visit(&proxy, &host, "/web?debug=1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(page.contains(&name) && page.contains("Starting."), "{page}");
    // Once kubesim reports the pod ready, the host reaches the build.
    let own = until_routed(&sim, &host, None).await;
    assert!(own.starts_with(&name), "{own}");
    until_status(&server, &name, "started").await;
    let (status, page) = visit(&proxy, &host, "/web?debug=1").await;
    assert_eq!(
        (status, page.contains(&format!("reached {own}"))),
        (StatusCode::OK, true),
        "{page}"
    );
    let mail_service = until_routed(&sim, &mail, None).await;
    assert!(mail_service.starts_with(&name), "the mail host has the build's Service back");

    // Unknown and undeployed hosts: runboat's 404 page (what the wake
    // Service answers for a host it has no build for).
    let (status, page) = visit(&server.base, "nobody.e2e.example.com", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("http://runboat.e2e.example.com"), "{page}");
    let (_, metrics) = visit(&server.base, "127.0.0.1", "/metrics").await;
    assert!(metrics.contains("\nrunboat_wakes_total 1\n"), "{metrics}");

    // Asleep again (stopped), for the browser.
    let (status, _) = server.send(Method::POST, &format!("/api/v1/builds/{name}/stop"), true).await;
    assert_eq!(status, StatusCode::OK);
    until_routed(&sim, &host, Some(WAKE)).await;
    until_status(&server, &name, "stopped").await;

    if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() == Ok("1") {
        in_chromium(&proxy, &format!("{link}/web?debug=1#top"), &own).await;
    } else {
        eprintln!("NOTICE: the Chromium part skipped: set RUNBOAT_SLOW_TESTS=1 to run it");
    }

    // Undeployed: the Ingress is gone, the host is the controller's 404.
    let (status, _) = server.send(Method::DELETE, &format!("/api/v1/builds/{name}"), true).await;
    assert_eq!(status, StatusCode::OK);
    let gone = host.clone();
    assert!(sim.wait_until(STEP, |h| resolve(h, &gone).is_none()).await);
    let (status, _) = visit(&proxy, &host, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, page) = visit(&server.base, &host, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
}

/// `tests/browser/wake.mjs`: Chromium, with the stand-in as its proxy,
/// opens `url` and must end on it, showing the build's own page.
async fn in_chromium(proxy: &str, url: &str, own: &str) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_dir = manifest.join("tests").join("browser");
    let tools = (crate::browser::chromium(), crate::browser::on_path("node"));
    let (Some(chromium), Some(node)) = tools else {
        return crate::browser::notice("no chromium or node on PATH");
    };
    if !script_dir.join("node_modules").join("playwright-core").is_dir() {
        return crate::browser::notice(
            "playwright-core not installed (npm ci in runboat-server/tests/browser)",
        );
    }
    let screenshot = target_dir().join("screenshots").join("wake.png");
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(screenshot.with_file_name("wake-failure.png"));
    let child = StdCommand::new(node)
        .arg(script_dir.join("wake.mjs"))
        .current_dir(&script_dir)
        .env("RUNBOAT_PROXY", proxy)
        .env("RUNBOAT_BUILD_URL", url)
        .env("RUNBOAT_BUILD_SERVICE", own)
        .env("RUNBOAT_SCREENSHOT", &screenshot)
        .env("RUNBOAT_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let out = crate::browser::wait_output(child).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "wake.mjs failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("[wake] ok"), "{stdout}");
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 5_000, "suspiciously small screenshot: {} bytes", png.len());
}

/// A build whose initialization failed: its host shows the failure and the
/// init log link, however often it is requested, and is never started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_shows_its_failure_and_is_never_started() {
    let env = env().await;
    let sim = env.sim.handle();
    sim.add_job_rule(kubesim::JobRule::by_label(
        "runboat/job-kind",
        "initialize",
        kubesim::JobScript::fail(),
    ));
    let settings = env.settings(&format!("wake_service = \"{WAKE}:80\""));
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, &settings, &[]).await;
    server.wait_ready().await;
    let proxy = ingress(sim.clone(), server.base.clone()).await;
    let sha = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    let push = json!({"ref": "refs/heads/16.0", "after": sha, "repository": {"full_name": REPO}});
    assert_eq!(server.webhook("push", &push).await, StatusCode::ACCEPTED);
    let deadline = Instant::now() + STEP;
    let build = loop {
        let (_, builds) = server.get("/api/v1/builds").await;
        if let Some(b) = builds.as_array().and_then(|b| b.first()) {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "no build: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let name = build["name"].as_str().expect("name").to_owned();
    let host =
        build["deploy_link"].as_str().expect("link").trim_start_matches("http://").to_owned();
    until_status(&server, &name, "failed").await;
    until_routed(&sim, &host, Some(WAKE)).await;
    for _ in 0..5 {
        let (status, page) = visit(&proxy, &host, "/web").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(page.contains("failed to initialize"), "{page}");
        assert!(page.contains(&format!("/api/v1/builds/{name}/init-log")), "{page}");
        assert!(!page.contains("location.reload"), "a failed build's page does not reload");
    }
    let (_, build) = server.get(&format!("/api/v1/builds/{name}")).await;
    assert_eq!(build["status"], "failed");
    let replicas = sim
        .list("deployments", Some(NS))
        .expect("deployments")
        .iter()
        .find_map(|d| d.pointer("/spec/replicas").and_then(serde_json::Value::as_i64));
    assert_eq!(replicas, Some(0), "never scaled up");
    let (_, metrics) = visit(&server.base, "127.0.0.1", "/metrics").await;
    assert!(metrics.contains("\nrunboat_wakes_total 0\n"), "{metrics}");
    assert!(metrics.contains("\nrunboat_wake_page_views_total 5\n"), "{metrics}");
}
