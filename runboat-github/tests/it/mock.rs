//! A tiny mock of the GitHub REST API: scripted answers per (method, path),
//! every request recorded with its arrival time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub(crate) struct MockResponse {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl MockResponse {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, headers: Vec::new(), body: body.into(), delay: Duration::ZERO }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: serde_json::Value,
    pub(crate) at: Instant,
}

#[derive(Default)]
struct MockState {
    routes: Mutex<HashMap<(Method, String), VecDeque<MockResponse>>>,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

pub(crate) struct MockGitHub {
    pub(crate) url: String,
    state: Arc<MockState>,
}

impl MockGitHub {
    pub(crate) async fn start() -> Self {
        let state = Arc::new(MockState::default());
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}"), state }
    }

    /// Answer `method path` with `responses` in order; the last repeats.
    pub(crate) fn on(&self, method: Method, path: &str, responses: Vec<MockResponse>) {
        self.state
            .routes
            .lock()
            .expect("routes")
            .insert((method, path.to_owned()), responses.into());
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("requests").clone()
    }

    /// Wait until at least `n` requests arrived (deadline 10 s).
    pub(crate) async fn wait_for_requests(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let arrived = self.state.arrived.notified();
                if self.requests().len() >= n {
                    return;
                }
                arrived.await;
            }
        })
        .await
        .expect("requests arrived before the deadline");
    }
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let response = {
        let mut routes = state.routes.lock().expect("routes");
        routes.get_mut(&(parts.method.clone(), path.clone())).and_then(|queue| {
            if queue.len() > 1 { queue.pop_front() } else { queue.front().cloned() }
        })
    };
    state.requests.lock().expect("requests").push(Recorded {
        method: parts.method,
        path,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        at: Instant::now(),
    });
    state.arrived.notify_waiters();
    let Some(response) = response else {
        return (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response();
    };
    if !response.delay.is_zero() {
        tokio::time::sleep(response.delay).await;
    }
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(*name, value);
    }
    builder
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(response.body))
        .expect("mock response")
}
