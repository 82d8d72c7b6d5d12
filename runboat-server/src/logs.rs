//! `GET /api/v1/builds/{name}/init-log` and `/log`: the build's logs as HTML
//! with the ANSI colours rendered, or plain text with `Accept: text/plain`;
//! with `?follow`, a streamed answer that keeps sending what the log gains
//! while the pod runs.
//!
//! Following polls the log every [`FOLLOW_POLL`] and sends the new suffix
//! (the cluster interface reads whole logs; when a log does not extend the
//! previous one — a new pod — it is sent again after a marker line). The
//! stream ends when the build is gone, when the log stops growing once the
//! build is no longer in the state that produces it (initializing for the
//! init log; starting, started or stopping for the log), or at shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use runboat_core::BuildStatus;
use tokio::sync::watch;

use runboat_api::{Detail, LogOptions};

use crate::AppState;
use crate::api::{html_escape, query, render_log, strip_ansi, wants_plain_text};
use crate::error::ApiError;

/// Interval between two reads of a followed log.
pub const FOLLOW_POLL: Duration = Duration::from_secs(2);

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The initialization job's log.
    Init,
    /// The running instance's log.
    Run,
}

impl LogKind {
    fn label(self) -> &'static str {
        match self {
            LogKind::Init => "init log",
            LogKind::Run => "log",
        }
    }

    /// True while the build is in the state that writes this log.
    pub fn is_active(self, status: BuildStatus) -> bool {
        match self {
            LogKind::Init => status == BuildStatus::Initializing,
            LogKind::Run => matches!(
                status,
                BuildStatus::Starting | BuildStatus::Started | BuildStatus::Stopping
            ),
        }
    }

    async fn read(self, state: &AppState, name: &str) -> Result<Option<String>, ApiError> {
        let controller = state.controller();
        let log = match self {
            LogKind::Init => controller.init_log(name).await,
            LogKind::Run => controller.log(name).await,
        };
        match log {
            Ok(log) => Ok(log.filter(|l| !l.is_empty())),
            // The pod went away between the build lookup and the log read.
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(ApiError::Internal(Box::new(e))),
        }
    }
}

/// True for a flag given a value other than `0`, `false` or `no`
/// (`?follow`, `?follow=1`, `?ansi=true`…).
fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v, "0" | "false" | "no"))
}

/// With `Accept: text/plain`, keep the ANSI colour sequences (`ansi=1`),
/// for terminal clients such as `runboat logs`.
fn keep_ansi(options: &LogOptions) -> bool {
    flag(options.ansi.as_deref())
}

#[utoipa::path(get, path = "/api/v1/builds/{name}/init-log", tag = "builds",
    params(("name" = String, Path, description = "build name"), LogOptions),
    description = "The initialization log: HTML with the ANSI colours rendered, or plain text \
        with `Accept: text/plain`.",
    responses(
        (status = 200, description = "the log", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "a parameter is invalid", body = Detail),
        (status = 404, description = "no such build, or no log", body = Detail),
    ))]
pub(crate) async fn init_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LogOptions>, QueryRejection>,
) -> Result<Response, ApiError> {
    serve_log(state, name, LogKind::Init, &headers, query(q)?).await
}

#[utoipa::path(get, path = "/api/v1/builds/{name}/log", tag = "builds",
    params(("name" = String, Path, description = "build name"), LogOptions),
    description = "The running instance's log: HTML with the ANSI colours rendered, or plain \
        text with `Accept: text/plain`.",
    responses(
        (status = 200, description = "the log", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "a parameter is invalid", body = Detail),
        (status = 404, description = "no such build, or no log", body = Detail),
    ))]
pub(crate) async fn log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LogOptions>, QueryRejection>,
) -> Result<Response, ApiError> {
    serve_log(state, name, LogKind::Run, &headers, query(q)?).await
}

async fn serve_log(
    state: AppState,
    name: String,
    kind: LogKind,
    headers: &HeaderMap,
    params: LogOptions,
) -> Result<Response, ApiError> {
    state.controller().get(&name).ok_or_else(|| ApiError::unknown_build(&name))?;
    let plain = wants_plain_text(headers);
    let keep_ansi = keep_ansi(&params);
    let log = kind.read(&state, &name).await?;
    let title = format!("{name} {}", kind.label());
    if !flag(params.follow.as_deref()) {
        let log = log
            .ok_or_else(|| ApiError::NotFound(format!("no {} for build {name:?}", kind.label())))?;
        return Ok(render_log(&title, &log, plain, keep_ansi));
    }
    let follower = Follower {
        shutdown: state.shutdown_signal(),
        state,
        name,
        kind,
        plain,
        keep_ansi,
        sent: String::new(),
        started: false,
        finished: false,
        first: log,
        title,
    };
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let chunk = f.next().await?;
        Some((Ok::<Bytes, Infallible>(Bytes::from(chunk)), f))
    });
    let content_type = if plain { "text/plain; charset=utf-8" } else { "text/html; charset=utf-8" };
    Ok((
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")],
        // Proxies (nginx) must not buffer a followed log.
        [("x-accel-buffering", "no")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct Follower {
    state: AppState,
    shutdown: watch::Receiver<bool>,
    name: String,
    kind: LogKind,
    plain: bool,
    keep_ansi: bool,
    title: String,
    /// The log as sent so far.
    sent: String,
    first: Option<String>,
    started: bool,
    finished: bool,
}

impl Follower {
    fn render(&self, text: &str) -> String {
        if self.plain {
            if self.keep_ansi { text.to_owned() } else { strip_ansi(text) }
        } else {
            ansi_to_html::convert(text).unwrap_or_else(|_| html_escape(&strip_ansi(text)))
        }
    }

    fn delta(&mut self, log: String) -> String {
        let out = match log.strip_prefix(self.sent.as_str()) {
            Some(suffix) => self.render(suffix),
            None => format!("{}{}", self.render("\n--- new log ---\n"), self.render(&log)),
        };
        self.sent = log;
        out
    }

    fn end(&mut self, why: &str) -> String {
        self.finished = true;
        let line = self.render(&format!("\n--- {why} ---\n"));
        if self.plain { line } else { format!("{line}</pre></body></html>\n") }
    }

    async fn next(&mut self) -> Option<String> {
        if self.finished {
            return None;
        }
        if !self.started {
            self.started = true;
            let head = if self.plain {
                String::new()
            } else {
                format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
                     <style>body{{background:#1e1e1e;color:#ddd;margin:0}}\
                     pre{{font:13px/1.4 monospace;padding:1em;white-space:pre-wrap;word-break:break-all}}</style>\
                     </head><body><pre>",
                    html_escape(&self.title)
                )
            };
            let first = self.first.take().map(|l| self.delta(l)).unwrap_or_default();
            return Some(head + &first);
        }
        loop {
            let stop = tokio::select! {
                r = self.shutdown.wait_for(|stop| *stop) => r.is_ok(),
                () = tokio::time::sleep(FOLLOW_POLL) => false,
            };
            if stop {
                return Some(self.end("server shutting down"));
            }
            let Some(build) = self.state.controller().get(&self.name) else {
                return Some(self.end("build undeployed"));
            };
            let log = match self.kind.read(&self.state, &self.name).await {
                Ok(log) => log.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(build = %self.name, error = %crate::error::chain(&e), "following a log");
                    return Some(self.end("log unavailable"));
                }
            };
            if log != self.sent && !log.is_empty() {
                return Some(self.delta(log));
            }
            if !self.kind.is_active(build.status) {
                return Some(self.end(&format!("build is {}", build.status)));
            }
        }
    }
}
