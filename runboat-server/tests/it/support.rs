//! Test helpers: settings, requests, answers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use http_body_util::BodyExt;
use runboat_core::Settings;
use runboat_server::{AppState, GitHubLookup, ServerOptions, app};
use serde_json::Value;
use tower::ServiceExt;

use crate::fake::{FakeBackend, FakeGitHub};

pub(crate) const SETTINGS: &str = r#"
api_admin_user = "admin"
api_admin_passwd = "hunter2"
build_namespace = "runboat-builds"
build_domain = "runboat.example.com"
base_url = "https://runboat.example.com"
github_webhook_secret = "whsecret"
additional_footer_html = "<b>footer-marker</b>"

[[repos]]
repo = "^oca/.*"
branch = "^1[5-7]\\.0$"
builds = [{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }]
"#;

pub(crate) fn settings() -> Arc<Settings> {
    Arc::new(Settings::from_toml_str(SETTINGS).expect("test settings"))
}

pub(crate) struct Harness {
    pub(crate) state: AppState,
    pub(crate) backend: Arc<FakeBackend>,
    pub(crate) github: Arc<FakeGitHub>,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Harness::with_options(ServerOptions::default())
    }

    pub(crate) fn with_options(options: ServerOptions) -> Self {
        let settings = settings();
        let backend = Arc::new(FakeBackend::new(settings.clone()));
        let github = Arc::new(FakeGitHub::default());
        let lookup: Arc<dyn GitHubLookup> = github.clone();
        let state = AppState::new(settings, backend.clone(), Some(lookup), options);
        Harness { state, backend, github }
    }

    pub(crate) fn app(&self) -> Router {
        app(self.state.clone())
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Answer {
        send(self.app(), req).await
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn detail(&self) -> String {
        self.json()["detail"].as_str().expect("detail").to_owned()
    }

    pub(crate) fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    }
}

pub(crate) async fn send(app: Router, req: Request<Body>) -> Answer {
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    Answer { status, headers, body }
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

pub(crate) fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder().method(method).uri(uri).body(Body::empty()).expect("request")
}

pub(crate) fn basic(user: &str, passwd: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{passwd}"))
    )
}

pub(crate) fn admin(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, basic("admin", "hunter2"))
        .body(Body::empty())
        .expect("request")
}

pub(crate) fn sha(n: u8) -> String {
    format!("{:040x}", u128::from(n) + 0xabc0_0000)
}
