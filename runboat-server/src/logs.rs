//! `GET /api/v1/builds/{name}/init-log` and `/log`: the build's logs as HTML
//! with the ANSI colours rendered, or plain text with `Accept: text/plain`;
//! with `?follow`, a streamed answer that keeps sending what the log gains
//! while the pod runs.
//!
//! Following: the cluster interface has no streaming log call, so one poll
//! loop per followed log (a [`LogFeeds`] entry) reads the whole log every
//! [`FOLLOW_POLL`] and publishes it on a watch channel that all the log's
//! followers share: the API server's load does not grow with the number of
//! followers. The loop ends when its last follower leaves. Each follower
//! sends the new suffix (when a log does not extend the previous one — a
//! new pod — it is sent again after a marker line). A follow counts under
//! the event stream caps (globally and per client) and one log has at most
//! [`MAX_FOLLOWERS_PER_LOG`] followers. The stream ends when the build is
//! gone, when the log stops growing once the build is no longer in the
//! state that produces it (initializing for the init log; starting, started
//! or stopping for the log), or at shutdown.
//!
//! Without `follow`, the answer is the last [`DEFAULT_TAIL_BYTES`] of the
//! log (`?tail_bytes=` asks for up to [`MAX_TAIL_BYTES`]); the cut is said
//! in a first line. (The cluster interface reads the whole log: the bound
//! is on what is rendered and sent, not on what the API server reads.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Extension;
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
use crate::limits::{PeerAddr, Refusal, SlotGuard, client_ip};

/// Interval between two reads of a followed log.
pub const FOLLOW_POLL: Duration = Duration::from_secs(2);

/// Followers of one log at most (429 beyond).
pub const MAX_FOLLOWERS_PER_LOG: usize = 32;

/// Bytes of a log a request gets by default (its end).
pub const DEFAULT_TAIL_BYTES: usize = 1024 * 1024;

/// Bytes of a log a request can ask for at most (`?tail_bytes=`).
pub const MAX_TAIL_BYTES: usize = 16 * 1024 * 1024;

/// What a log's poll loop last saw.
#[derive(Debug, Clone)]
enum Feed {
    /// Not read yet.
    Pending,
    /// The log and the build's status when it was read.
    Log { log: Arc<str>, status: BuildStatus },
    /// No more to read, and why.
    Ended(String),
}

/// The poll loops' channels, by build and kind.
type Feeds = HashMap<(String, LogKind), Arc<watch::Sender<Feed>>>;

/// The shared poll loops of followed logs, by build and kind.
#[derive(Debug, Default)]
pub struct LogFeeds {
    feeds: Mutex<Feeds>,
}

impl LogFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Feeds> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loops running now.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// A follower's view of the log, starting its poll loop if it has none.
    fn follow(
        &self,
        state: &AppState,
        name: &str,
        kind: LogKind,
    ) -> Result<watch::Receiver<Feed>, ApiError> {
        let mut feeds = self.lock();
        let key = (name.to_owned(), kind);
        if let Some(tx) = feeds.get(&key) {
            if tx.receiver_count() >= MAX_FOLLOWERS_PER_LOG {
                return Err(ApiError::TooManyRequests {
                    detail: format!("too many followers of this {}", kind.label()),
                    retry_after: 10,
                });
            }
            let mut rx = tx.subscribe();
            // The current log at once, not at the next poll.
            rx.mark_changed();
            return Ok(rx);
        }
        let (tx, rx) = watch::channel(Feed::Pending);
        let tx = Arc::new(tx);
        feeds.insert(key.clone(), tx.clone());
        tokio::spawn(poll(state.clone(), key, tx));
        Ok(rx)
    }
}

/// The poll loop of one followed log: reads it at once, then every
/// [`FOLLOW_POLL`], until it has no follower, the build is gone, or the
/// server shuts down.
async fn poll(state: AppState, key: (String, LogKind), tx: Arc<watch::Sender<Feed>>) {
    let (name, kind) = (&key.0, key.1);
    let mut shutdown = state.shutdown_signal();
    let mut first = true;
    loop {
        if !first {
            let stop = tokio::select! {
                r = shutdown.wait_for(|stop| *stop) => r.is_ok(),
                () = tokio::time::sleep(FOLLOW_POLL) => false,
            };
            if stop {
                tx.send_replace(Feed::Ended("server shutting down".to_owned()));
                break;
            }
        }
        first = false;
        {
            // Under the map's lock: a new follower either finds this loop
            // before it leaves, or starts another.
            let mut feeds = state.log_feeds().lock();
            if tx.receiver_count() == 0 {
                feeds.remove(&key);
                return;
            }
        }
        let feed = match state.controller().get(name) {
            None => Feed::Ended("build undeployed".to_owned()),
            Some(build) => match kind.read(&state, name).await {
                Ok(log) => Feed::Log { log: log.unwrap_or_default().into(), status: build.status },
                Err(e) => {
                    tracing::warn!(build = %name, error = %crate::error::chain(&e), "following a log");
                    Feed::Ended("log unavailable".to_owned())
                }
            },
        };
        let ended = matches!(feed, Feed::Ended(_));
        tx.send_replace(feed);
        if ended {
            break;
        }
    }
    let mut feeds = state.log_feeds().lock();
    if feeds.get(&key).is_some_and(|t| Arc::ptr_eq(t, &tx)) {
        feeds.remove(&key);
    }
}

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        (status = 429, description = "following: too many streams from this client, or too many \
            followers of this log (see `Retry-After`)", body = Detail),
        (status = 503, description = "following: too many open streams (see `Retry-After`)", body = Detail),
    ))]
pub(crate) async fn init_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    q: Result<Query<LogOptions>, QueryRejection>,
) -> Result<Response, ApiError> {
    serve_log(state, name, LogKind::Init, &headers, peer.as_deref(), query(q)?).await
}

#[utoipa::path(get, path = "/api/v1/builds/{name}/log", tag = "builds",
    params(("name" = String, Path, description = "build name"), LogOptions),
    description = "The running instance's log: HTML with the ANSI colours rendered, or plain \
        text with `Accept: text/plain`.",
    responses(
        (status = 200, description = "the log", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "a parameter is invalid", body = Detail),
        (status = 404, description = "no such build, or no log", body = Detail),
        (status = 429, description = "following: too many streams from this client, or too many \
            followers of this log (see `Retry-After`)", body = Detail),
        (status = 503, description = "following: too many open streams (see `Retry-After`)", body = Detail),
    ))]
pub(crate) async fn log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    q: Result<Query<LogOptions>, QueryRejection>,
) -> Result<Response, ApiError> {
    serve_log(state, name, LogKind::Run, &headers, peer.as_deref(), query(q)?).await
}

async fn serve_log(
    state: AppState,
    name: String,
    kind: LogKind,
    headers: &HeaderMap,
    peer: Option<&PeerAddr>,
    params: LogOptions,
) -> Result<Response, ApiError> {
    state.controller().get(&name).ok_or_else(|| ApiError::unknown_build(&name))?;
    let plain = wants_plain_text(headers);
    let keep_ansi = keep_ansi(&params);
    let title = format!("{name} {}", kind.label());
    // Checked even when following (where it is unused): a bad value is
    // always a 400.
    let tail = tail_bytes(params.tail_bytes.as_deref())?;
    if !flag(params.follow.as_deref()) {
        let log = kind
            .read(&state, &name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no {} for build {name:?}", kind.label())))?;
        return Ok(render_log(&title, &tail_of(&log, tail), plain, keep_ansi));
    }
    let client = client_ip(&state.options().limits, headers, peer);
    let slot = state.event_streams().acquire(client).map_err(|refusal| match refusal {
        Refusal::Full => ApiError::Busy {
            detail: "too many open streams: retry later".to_owned(),
            retry_after: 5,
        },
        Refusal::ClientFull => ApiError::TooManyRequests {
            detail: "too many open streams from this client".to_owned(),
            retry_after: 5,
        },
    })?;
    let feed = state.log_feeds().follow(&state, &name, kind)?;
    let follower = Follower {
        shutdown: state.shutdown_signal(),
        feed,
        kind,
        plain,
        keep_ansi,
        sent: String::new(),
        started: false,
        finished: false,
        title,
        _slot: slot,
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

/// The `tail_bytes` parameter: how much of the log's end to send.
fn tail_bytes(param: Option<&str>) -> Result<usize, ApiError> {
    match param {
        None => Ok(DEFAULT_TAIL_BYTES),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_TAIL_BYTES).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "tail_bytes must be a number from 1 to {MAX_TAIL_BYTES}"
            ))),
        },
    }
}

/// The last `limit` bytes of `log` (from a line start when there is one),
/// after a line saying what was left out.
fn tail_of(log: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if log.len() <= limit {
        return log.into();
    }
    let mut start = log.len() - limit;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    if let Some(nl) = log[start..].find('\n') {
        start += nl + 1;
    }
    format!(
        "--- {start} earlier bytes left out (ask with ?tail_bytes= up to {MAX_TAIL_BYTES}) ---\n{}",
        &log[start..]
    )
    .into()
}

struct Follower {
    shutdown: watch::Receiver<bool>,
    feed: watch::Receiver<Feed>,
    kind: LogKind,
    plain: bool,
    keep_ansi: bool,
    title: String,
    /// The log as sent so far.
    sent: String,
    started: bool,
    finished: bool,
    /// This follow's place under the stream caps, released on drop.
    _slot: SlotGuard,
}

impl Follower {
    fn render(&self, text: &str) -> String {
        if self.plain {
            if self.keep_ansi { text.to_owned() } else { strip_ansi(text) }
        } else {
            ansi_to_html::convert(text).unwrap_or_else(|_| html_escape(&strip_ansi(text)))
        }
    }

    fn delta(&mut self, log: &str) -> String {
        let out = match log.strip_prefix(self.sent.as_str()) {
            Some(suffix) => self.render(suffix),
            None => format!("{}{}", self.render("\n--- new log ---\n"), self.render(log)),
        };
        log.clone_into(&mut self.sent);
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
            // A plain text follow has no head: its first chunk is the log.
            if !head.is_empty() {
                return Some(head);
            }
        }
        loop {
            // `None`: the server shuts down (or its state is gone).
            let changed = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => None,
                r = self.feed.changed() => Some(r.is_ok()),
            };
            let Some(changed) = changed else {
                return Some(self.end("server shutting down"));
            };
            if !changed {
                return Some(self.end("log unavailable"));
            }
            let feed = self.feed.borrow_and_update().clone();
            match feed {
                Feed::Pending => {}
                Feed::Ended(why) => return Some(self.end(&why)),
                Feed::Log { log, status } => {
                    if *log != *self.sent && !log.is_empty() {
                        return Some(self.delta(&log));
                    }
                    if !self.kind.is_active(status) {
                        return Some(self.end(&format!("build is {status}")));
                    }
                }
            }
        }
    }
}
