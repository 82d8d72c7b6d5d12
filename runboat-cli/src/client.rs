//! A client of runboat-server's REST API (`/api/v1`), on hyper-util's
//! client with hyper-rustls (ring): the HTTP/TLS crates the workspace
//! already compiles.
//!
//! Every non-streaming request has a timeout. Error answers become
//! [`Error::Http`] with the server's `detail` message. The admin password
//! only ever goes into an `Authorization` header marked sensitive.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::Connection;
use crate::error::{Error, Result};
use crate::sse::{SseEvent, SseParser};

/// Timeout of a whole non-streaming request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An event stream without any byte (events or keep-alive comments, sent
/// every 15 s by default) for this long is taken as dead and reopened.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Longest error body kept for a message when it is not JSON.
const EXCERPT_CHARS: usize = 300;

pub use runboat_api::{Filters, encode};

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    runboat_api::query_string(pairs)
}

/// The REST API client. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The server URL without a trailing slash.
    base: Arc<str>,
    authorization: Option<HeaderValue>,
    /// The admin user, when credentials are sent (for messages).
    user: Option<String>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the server at `conn.url`, sending `conn`'s credentials
    /// (when there are both a user and a password).
    pub fn new(conn: &Connection) -> Result<Self> {
        let base = conn.url.trim().trim_end_matches('/').to_owned();
        // Credentials in the URL would end up in messages: refuse them
        // without repeating the URL.
        let authority = base.split("://").nth(1).unwrap_or(&base).split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(Error::Usage(
                "the server URL must not hold credentials: give them with --user and \
                 --password (or RUNBOAT_USER/RUNBOAT_PASSWORD, or the config file)"
                    .to_owned(),
            ));
        }
        let uri: Uri =
            base.parse().map_err(|e| Error::Usage(format!("invalid server URL {base:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(Error::Usage(format!(
                    "invalid server URL {base:?}: it must start with http:// or https://"
                )));
            }
        };
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(Error::Usage(format!(
                "invalid server URL {base:?}: expected scheme://host[:port][/path]"
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = if https {
            HttpsConnectorBuilder::new().with_provider_and_native_roots(provider).map_err(|e| {
                Error::Usage(format!("no trusted root certificates for {base}: {e}"))
            })?
        } else {
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Usage(format!("TLS setup: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            HttpsConnectorBuilder::new().with_tls_config(tls)
        };
        let connector = builder.https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let authorization = match (&conn.user, &conn.password) {
            (Some(user), Some(password)) => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()));
                let mut value = HeaderValue::try_from(format!("Basic {token}"))
                    .map_err(|_| Error::Usage("invalid admin credentials".to_owned()))?;
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };
        let user = authorization.as_ref().and(conn.user.clone());
        Ok(ApiClient { http, base: base.into(), authorization, user })
    }

    /// The server URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// True when credentials are sent.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// The admin user whose credentials are sent.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn unreachable(&self, reason: impl Into<String>) -> Error {
        Error::Unreachable { url: self.base.to_string(), reason: reason.into() }
    }

    /// Sends a request and returns the response once its headers are in;
    /// error statuses become [`Error::Http`] (their body read for the
    /// message).
    async fn send(&self, method: Method, path: &str, accept: &str) -> Result<Response<Incoming>> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(ACCEPT, accept)
            .header(USER_AGENT, concat!("runboat-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Usage(format!("invalid request {uri}: {e}")))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(describe_client_error(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Err(Error::Http { status: status.as_u16(), detail: error_detail(status, &body) })
    }

    async fn body(&self, response: Response<Incoming>) -> Result<Bytes> {
        let collected = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| self.unreachable("the answer did not arrive in time"))?
            .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?;
        Ok(collected.to_bytes())
    }

    async fn json(&self, method: Method, path: &str) -> Result<Value> {
        let response = self.send(method, path, "application/json").await?;
        let body = self.body(response).await?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::InvalidAnswer(format!("{path}: not JSON ({e}): {}", excerpt(&body)))
        })
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Value> {
        self.json(Method::GET, "/api/v1/status").await
    }

    /// `GET /builds` with `filters`, in the server's order.
    pub async fn builds(&self, filters: &Filters) -> Result<Vec<Value>> {
        let q = filters.query();
        let path =
            if q.is_empty() { "/api/v1/builds".to_owned() } else { format!("/api/v1/builds?{q}") };
        match self.json(Method::GET, &path).await? {
            Value::Array(builds) => Ok(builds),
            other => Err(Error::InvalidAnswer(format!("expected a list of builds, got {other}"))),
        }
    }

    /// `GET /builds/{name}`.
    pub async fn build(&self, name: &str) -> Result<Value> {
        self.json(Method::GET, &format!("/api/v1/builds/{}", encode(name))).await
    }

    /// `POST /builds/trigger/branch` (admin).
    pub async fn trigger_branch(&self, repo: &str, branch: &str) -> Result<Value> {
        let q = query(&[("repo", Some(repo)), ("branch", Some(branch))]);
        self.json(Method::POST, &format!("/api/v1/builds/trigger/branch?{q}")).await
    }

    /// `POST /builds/trigger/pr` (admin).
    pub async fn trigger_pr(&self, repo: &str, pr: u64) -> Result<Value> {
        let pr = pr.to_string();
        let q = query(&[("repo", Some(repo)), ("pr", Some(&pr))]);
        self.json(Method::POST, &format!("/api/v1/builds/trigger/pr?{q}")).await
    }

    /// `POST /builds/{name}/{action}` for `start`, `stop`, `reset`, `pin` or
    /// `unpin` (the last two admin). An
    /// action the server ignored (it does not apply to the build's state;
    /// the server answers 200, as the original did) is an error here, as a
    /// 409 was: the admin asked for something that did not happen.
    pub async fn action(&self, name: &str, action: &str) -> Result<Value> {
        not_ignored(
            self.json(Method::POST, &format!("/api/v1/builds/{}/{action}", encode(name))).await?,
        )
    }

    /// `DELETE /builds/{name}` (admin); ignored as [`ApiClient::action`].
    pub async fn undeploy(&self, name: &str) -> Result<Value> {
        not_ignored(self.json(Method::DELETE, &format!("/api/v1/builds/{}", encode(name))).await?)
    }

    /// `DELETE /builds` with `filters` (admin).
    pub async fn undeploy_matching(&self, filters: &Filters) -> Result<Value> {
        self.json(Method::DELETE, &format!("/api/v1/builds?{}", filters.query())).await
    }

    /// The build log (or init log) as plain text; with `ansi`, the server
    /// keeps the log's colour sequences.
    pub async fn log(&self, name: &str, init: bool, ansi: bool) -> Result<String> {
        let kind = if init { "init-log" } else { "log" };
        let ansi = if ansi { "?ansi=1" } else { "" };
        let path = format!("/api/v1/builds/{}/{kind}{ansi}", encode(name));
        let response = self.send(Method::GET, &path, "text/plain").await?;
        let body = self.body(response).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The build log (or init log) as plain text, streamed while the build
    /// writes it (`?follow`): the server ends the answer when the build
    /// stops writing it or is undeployed.
    pub async fn follow_log(&self, name: &str, init: bool, ansi: bool) -> Result<LogStream> {
        let kind = if init { "init-log" } else { "log" };
        let ansi = if ansi { "&ansi=1" } else { "" };
        let path = format!("/api/v1/builds/{}/{kind}?follow=1{ansi}", encode(name));
        let response = self.send(Method::GET, &path, "text/plain").await?;
        Ok(LogStream { body: response.into_body(), pending: Vec::new() })
    }

    /// Opens `GET /build-events` with `filters`.
    pub async fn events(&self, filters: &Filters) -> Result<EventStream> {
        let q = filters.query();
        let path = if q.is_empty() {
            "/api/v1/build-events".to_owned()
        } else {
            format!("/api/v1/build-events?{q}")
        };
        let response = self.send(Method::GET, &path, "text/event-stream").await?;
        Ok(EventStream { body: response.into_body(), parser: SseParser::new(), ready: Vec::new() })
    }
}

/// An open event stream.
pub struct EventStream {
    body: Incoming,
    parser: SseParser,
    /// Parsed events not returned yet, in reverse order.
    ready: Vec<SseEvent>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").field("ready", &self.ready.len()).finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.ready.pop() {
                return Ok(Some(event));
            }
            // The server sends keep-alive comments: silence means a dead
            // connection (that TCP may not notice for a long time).
            let frame = tokio::time::timeout(STREAM_IDLE_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| Error::Unreachable {
                    url: String::new(),
                    reason: format!("event stream silent for {STREAM_IDLE_TIMEOUT:?}"),
                })?;
            let Some(frame) = frame else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| Error::Unreachable {
                url: String::new(),
                reason: format!("event stream interrupted: {e}"),
            })?;
            if let Ok(data) = frame.into_data() {
                let mut events = self.parser.feed(&data);
                events.reverse();
                self.ready = events;
            }
        }
    }
}

/// A followed log.
pub struct LogStream {
    body: Incoming,
    /// Bytes of an incomplete UTF-8 character.
    pending: Vec<u8>,
}

impl fmt::Debug for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStream").finish_non_exhaustive()
    }
}

impl LogStream {
    /// The next piece of text; `None` at the end of the log.
    pub async fn next(&mut self) -> Result<Option<String>> {
        loop {
            let Some(frame) = self.body.frame().await else {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                let rest = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return Ok(Some(rest));
            };
            let frame = frame.map_err(|e| Error::Unreachable {
                url: String::new(),
                reason: format!("log stream interrupted: {e}"),
            })?;
            let Ok(data) = frame.into_data() else { continue };
            self.pending.extend_from_slice(&data);
            let valid = match std::str::from_utf8(&self.pending) {
                Ok(_) => self.pending.len(),
                // Keep an incomplete character at the end for the next chunk.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => self.pending.len(),
            };
            let rest = self.pending.split_off(valid);
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending = rest;
            if !text.is_empty() {
                return Ok(Some(text));
            }
        }
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    // The innermost cause says what happened ("Connection refused").
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    match last {
        Some(cause) if e.is_connect() => format!("cannot connect ({cause})"),
        Some(cause) => cause,
        None => e.to_string(),
    }
}

/// An action answer with `ignored: true` as the error a 409 was (exit code
/// "not allowed"), with the server's reason.
fn not_ignored(answer: Value) -> Result<Value> {
    if answer.get("ignored").and_then(Value::as_bool) == Some(true) {
        let detail = answer.get("detail").and_then(Value::as_str).unwrap_or("ignored").to_owned();
        return Err(Error::Http { status: 409, detail });
    }
    Ok(answer)
}

/// The `detail` of a JSON error body, else an excerpt of the body, else the
/// status's reason.
pub fn error_detail(status: http::StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        match value.get("detail") {
            Some(Value::String(s)) => return s.clone(),
            Some(other) if !other.is_null() => return other.to_string(),
            _ => {}
        }
    }
    let text = excerpt(body);
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use proptest::prelude::*;

    use super::*;
    use crate::config::Password;

    #[test]
    fn query_encodes_filters() {
        let f = Filters {
            repo: Some("OCA/web".into()),
            branch: Some("feat/x y".into()),
            pr: Some(12),
            ..Filters::default()
        };
        assert_eq!(f.query(), "repo=OCA%2Fweb&branch=feat%2Fx%20y&pr=12");
        assert_eq!(Filters::default().query(), "");
        assert!(Filters::default().is_empty());
    }

    #[test]
    fn error_detail_prefers_the_servers_message() {
        let d = error_detail(StatusCode::NOT_FOUND, br#"{"detail":"build \"x\" not found"}"#);
        assert_eq!(d, "build \"x\" not found");
        assert_eq!(error_detail(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
        assert_eq!(error_detail(StatusCode::BAD_GATEWAY, b"upstream down"), "upstream down");
    }

    #[test]
    fn client_debug_hides_credentials() {
        let conn = Connection {
            url: "http://127.0.0.1:1".into(),
            user: Some("admin".into()),
            password: Some(Password::new("hunter2")),
        };
        let c = ApiClient::new(&conn).expect("client");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("aHVudGVy"), "{debug}");
        assert!(c.has_credentials());
    }

    #[test]
    fn rejects_bad_urls() {
        let conn =
            Connection { url: "http://admin:hunter2@h:1".into(), user: None, password: None };
        let err = ApiClient::new(&conn).expect_err("credentials in the URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        for url in ["ftp://x", "localhost:8000", "http://", "http://h/?q=1"] {
            let conn = Connection { url: url.into(), user: None, password: None };
            let err = ApiClient::new(&conn).expect_err(url);
            assert_eq!(err.exit_code(), crate::error::exit::USAGE, "{url}");
        }
    }

    proptest! {
        #[test]
        fn encoding_round_trips(s in "\\PC{0,40}") {
            let e = encode(&s);
            prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            // Decode and compare.
            let bytes = e.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            prop_assert_eq!(String::from_utf8(out).expect("utf8"), s);
        }

        #[test]
        fn error_detail_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = error_detail(StatusCode::INTERNAL_SERVER_ERROR, &body);
        }
    }
}
