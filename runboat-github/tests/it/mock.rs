//! The GitHub REST API as the tests script it, on wiremock's server:
//! scripted answers per (method, path), in order (the last repeats), and
//! every request recorded with its arrival time (the retry tests measure
//! the wait between two attempts; wiremock's own request log has no time,
//! so a `Respond` records on arrival, before any delay).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use tokio::sync::Notify;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

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

    fn template(&self) -> ResponseTemplate {
        let mut template = ResponseTemplate::new(self.status)
            .set_body_raw(self.body.clone(), "application/json; charset=utf-8");
        for (name, value) in &self.headers {
            template = template.insert_header(*name, value.as_str());
        }
        template.set_delay(self.delay)
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
struct Log {
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

impl Log {
    fn record(&self, request: &wiremock::Request) {
        self.requests.lock().expect("requests").push(Recorded {
            method: request.method.clone(),
            path: request.url.path().to_owned(),
            headers: request.headers.clone(),
            body: serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null),
            at: Instant::now(),
        });
        self.arrived.notify_waiters();
    }
}

/// The answers of one route, in order; the last repeats.
struct Script {
    responses: Mutex<VecDeque<MockResponse>>,
    log: Arc<Log>,
}

impl Respond for Script {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        self.log.record(request);
        let mut queue = self.responses.lock().expect("responses");
        let next = if queue.len() > 1 { queue.pop_front() } else { queue.front().cloned() };
        next.map_or_else(not_found, |r| r.template())
    }
}

/// Any other request: recorded, and GitHub's 404.
struct Unscripted(Arc<Log>);

impl Respond for Unscripted {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        self.0.record(request);
        not_found()
    }
}

fn not_found() -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_raw(r#"{"message":"Not Found"}"#, "application/json")
}

pub(crate) struct MockGitHub {
    pub(crate) url: String,
    server: MockServer,
    log: Arc<Log>,
}

impl MockGitHub {
    pub(crate) async fn start() -> Self {
        let server = MockServer::start().await;
        let log = Arc::new(Log::default());
        // Scripted routes have the default priority (5); this one only
        // answers what none of them matches.
        Mock::given(any())
            .respond_with(Unscripted(log.clone()))
            .with_priority(10)
            .mount(&server)
            .await;
        Self { url: server.uri(), server, log }
    }

    /// Answer `method path` with `responses` in order; the last repeats.
    pub(crate) async fn on(&self, method_: Method, path_: &str, responses: Vec<MockResponse>) {
        let script = Script { responses: Mutex::new(responses.into()), log: self.log.clone() };
        Mock::given(method(method_.as_str()))
            .and(path(path_))
            .respond_with(script)
            .mount(&self.server)
            .await;
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.log.requests.lock().expect("requests").clone()
    }

    /// Wait until at least `n` requests arrived (deadline 10 s).
    pub(crate) async fn wait_for_requests(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let arrived = self.log.arrived.notified();
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
