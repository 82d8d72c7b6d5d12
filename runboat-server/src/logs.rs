//! `GET /api/v1/builds/{name}/init-log` and `/log`: the build's logs as HTML
//! with the ANSI colours rendered, or plain text with `Accept: text/plain`;
//! with `?follow`, a streamed answer that keeps sending what the log gains
//! while the pod runs.
//!
//! Following: one upstream follow per followed log (a [`LogFeeds`] entry)
//! reads it from the cluster as it grows — the API server's own
//! `follow=true` with kube — into a window of its last [`FOLLOW_WINDOW`]
//! bytes that all the log's followers read from: the API server's load does
//! not grow with the number of followers. When the upstream stream ends
//! (its pod ended, or the connection did) while the build still writes the
//! log, it is opened again after [`FOLLOW_REOPEN`], skipping what was seen
//! of the same pod; a new pod's log comes after a marker line. A follower
//! only remembers how far it has sent; one that falls behind the window gets
//! a line saying how much it skipped. The upstream ends when its last
//! follower leaves. A follow counts under the event stream caps (globally
//! and per client) and one log has at most [`MAX_FOLLOWERS_PER_LOG`]
//! followers. The stream ends when the build is gone, when the log's
//! stream ends once the build is no longer in the state that produces it
//! (initializing for the init log; starting, started or stopping for the
//! log), or at shutdown.
//!
//! Without `follow`, the answer is about the last [`DEFAULT_TAIL_BYTES`] of
//! the log (`?tail_bytes=` asks for up to [`MAX_TAIL_BYTES`]), and the
//! cluster is asked for no more than that (`tailLines` and `limitBytes`);
//! a cut is said in a first line.

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
use runboat_core::{BuildStatus, LogSource, LogTail};
use tokio::sync::watch;

use runboat_api::{Detail, LogOptions};

use crate::AppState;
use crate::api::{html_escape, query, render_log, strip_ansi, wants_plain_text};
use crate::error::ApiError;
use crate::limits::{PeerAddr, Refusal, SlotGuard, client_ip};

/// Wait before opening a followed log again after its stream ended while
/// the build still writes it (or before its pod has a log).
pub const FOLLOW_REOPEN: Duration = Duration::from_secs(2);

/// Bytes of a followed log kept for its followers (the window grows to
/// twice this before it is cut).
pub const FOLLOW_WINDOW: usize = 64 * 1024;

/// Followers of one log at most (429 beyond).
pub const MAX_FOLLOWERS_PER_LOG: usize = 32;

/// Bytes of a log a request gets by default (its end).
pub const DEFAULT_TAIL_BYTES: usize = 1024 * 1024;

/// Bytes of a log a request can ask for at most (`?tail_bytes=`).
pub const MAX_TAIL_BYTES: usize = 16 * 1024 * 1024;

/// What the upstream of a followed log has read: the end of the log, and
/// whether it is over.
#[derive(Debug, Default)]
struct Window {
    /// The last bytes read (complete UTF-8).
    text: String,
    /// Offset of `text` in the whole log as read.
    start: u64,
    /// No more to read, and why.
    ended: Option<String>,
}

impl Window {
    fn end_offset(&self) -> u64 {
        self.start + self.text.len() as u64
    }

    fn push(&mut self, more: &str) {
        self.text.push_str(more);
        if self.text.len() > 2 * FOLLOW_WINDOW {
            let mut cut = self.text.len() - FOLLOW_WINDOW;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.start += cut as u64;
        }
    }
}

/// One followed log: its window, and a version bumped on each change that
/// its followers wait on (their count is the receivers').
#[derive(Debug)]
struct Feed {
    window: Mutex<Window>,
    version: watch::Sender<u64>,
}

impl Feed {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Window)) {
        f(&mut self.window());
        self.version.send_modify(|v| *v += 1);
    }
}

/// The upstreams' feeds, by build and kind.
type Feeds = HashMap<(String, LogKind), Arc<Feed>>;

/// The shared upstreams of followed logs, by build and kind.
#[derive(Debug, Default)]
pub struct LogFeeds {
    feeds: Mutex<Feeds>,
}

impl LogFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Feeds> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upstreams running now.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// A follower's view of the log, starting its upstream if it has none.
    fn follow(
        &self,
        state: &AppState,
        name: &str,
        kind: LogKind,
    ) -> Result<(Arc<Feed>, watch::Receiver<u64>), ApiError> {
        let mut feeds = self.lock();
        let key = (name.to_owned(), kind);
        if let Some(feed) = feeds.get(&key) {
            if feed.version.receiver_count() >= MAX_FOLLOWERS_PER_LOG {
                return Err(ApiError::TooManyRequests {
                    detail: format!("too many followers of this {}", kind.label()),
                    retry_after: 10,
                });
            }
            let mut rx = feed.version.subscribe();
            // What the window holds, at once.
            rx.mark_changed();
            return Ok((feed.clone(), rx));
        }
        let (version, rx) = watch::channel(0);
        let feed = Arc::new(Feed { window: Mutex::new(Window::default()), version });
        feeds.insert(key.clone(), feed.clone());
        tokio::spawn(upstream(state.clone(), key, feed.clone()));
        Ok((feed, rx))
    }
}

/// The upstream of one followed log: follows it from the cluster into the
/// feed's window, opening it again while the build writes it, until it
/// has no follower, the build is gone or done with the log, or the server
/// shuts down.
async fn upstream(state: AppState, key: (String, LogKind), feed: Arc<Feed>) {
    let (name, kind) = (&key.0, key.1);
    let mut shutdown = state.shutdown_signal();
    // The pod being read, how many of its bytes were seen, and the UTF-8
    // bytes of a chunk that ended inside a character.
    let mut pod: Option<String> = None;
    let mut seen = 0usize;
    let mut partial = Vec::new();
    let mut first = true;
    let ended = 'outer: loop {
        if !first {
            // Waits before reading again, unless told to stop.
            tokio::select! {
                // Shutting down, or the server's state is gone.
                _ = shutdown.wait_for(|stop| *stop) => break "server shutting down".to_owned(),
                () = feed.version.closed() => {}
                () = tokio::time::sleep(FOLLOW_REOPEN) => {}
            }
        }
        first = false;
        if alone(&state, &key, &feed) {
            return;
        }
        let Some(build) = state.controller().get(name) else {
            break "build undeployed".to_owned();
        };
        let opened = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break "server shutting down".to_owned(),
            r = state.controller().follow_log(name, kind.source()) => r,
        };
        let follow = match opened {
            Ok(Some(follow)) => follow,
            Ok(None) if kind.is_active(build.status) => continue,
            Ok(None) => break format!("build is {}", build.status),
            // The pod went away between the build lookup and the log read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                tracing::warn!(build = %name, error = %crate::error::chain(&e), "following a log");
                break "log unavailable".to_owned();
            }
        };
        let mut skip = 0;
        if pod.as_deref() == Some(follow.pod.as_str()) {
            skip = seen;
        } else {
            if pod.is_some() && seen > 0 {
                feed.update(|w| w.push("\n--- new log ---\n"));
            }
            pod = Some(follow.pod.clone());
            seen = 0;
            partial.clear();
        }
        let mut chunks = follow.chunks;
        loop {
            let next = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {
                    break 'outer "server shutting down".to_owned();
                }
                () = feed.version.closed() => None,
                chunk = futures::StreamExt::next(&mut chunks) => Some(chunk),
            };
            let chunk = match next {
                Some(Some(Ok(chunk))) => chunk,
                Some(Some(Err(e))) => {
                    tracing::debug!(build = %name, error = %crate::error::chain(&e), "log stream broke");
                    break;
                }
                Some(None) => break,
                // Its last follower left (unless one just came).
                None => {
                    if alone(&state, &key, &feed) {
                        return;
                    }
                    continue;
                }
            };
            let fresh = &chunk[skip.min(chunk.len())..];
            skip -= skip.min(chunk.len());
            seen += fresh.len();
            if fresh.is_empty() {
                continue;
            }
            partial.extend_from_slice(fresh);
            let text = complete_utf8(&mut partial);
            if !text.is_empty() {
                feed.update(|w| w.push(&text));
            }
        }
        // The stream ended: over if the build no longer writes this log.
        match state.controller().get(name) {
            None => break "build undeployed".to_owned(),
            Some(b) if !kind.is_active(b.status) => break format!("build is {}", b.status),
            Some(_) => {}
        }
    };
    feed.update(|w| w.ended = Some(ended));
    let mut feeds = state.log_feeds().lock();
    if feeds.get(&key).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
        feeds.remove(&key);
    }
}

/// True (and the feed forgotten) when the feed has no follower left.
/// Under the map's lock: a new follower either finds the feed before it is
/// forgotten, or starts another.
fn alone(state: &AppState, key: &(String, LogKind), feed: &Arc<Feed>) -> bool {
    let mut feeds = state.log_feeds().lock();
    if feed.version.receiver_count() > 0 {
        return false;
    }
    if feeds.get(key).is_some_and(|f| Arc::ptr_eq(f, feed)) {
        feeds.remove(key);
    }
    true
}

/// The complete UTF-8 text at the start of `bytes`, leaving there the bytes
/// of a character cut at the end (invalid bytes become U+FFFD).
fn complete_utf8(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
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

    fn source(self) -> LogSource {
        match self {
            LogKind::Init => LogSource::Init,
            LogKind::Run => LogSource::Run,
        }
    }

    /// About the last `limit` bytes of the log; `None` when there is none.
    async fn tail(
        self,
        state: &AppState,
        name: &str,
        limit: usize,
    ) -> Result<Option<LogTail>, ApiError> {
        match state.controller().log_tail(name, self.source(), limit).await {
            Ok(log) => Ok(log.filter(|l| !l.text.is_empty())),
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
            .tail(&state, &name, tail)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no {} for build {name:?}", kind.label())))?;
        let text = if log.truncated {
            format!(
                "--- earlier lines left out (ask with ?tail_bytes= up to {MAX_TAIL_BYTES}) ---\n{}",
                log.text
            )
        } else {
            log.text
        };
        return Ok(render_log(&title, &text, plain, keep_ansi));
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
    let (feed, version) = state.log_feeds().follow(&state, &name, kind)?;
    let follower = Follower {
        shutdown: state.shutdown_signal(),
        feed,
        version,
        plain,
        keep_ansi,
        sent: 0,
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

struct Follower {
    shutdown: watch::Receiver<bool>,
    feed: Arc<Feed>,
    /// The feed's version: changes wake the follower; it is one of the
    /// feed's receivers while it lives.
    version: watch::Receiver<u64>,
    plain: bool,
    keep_ansi: bool,
    title: String,
    /// Bytes of the log sent so far (an offset in the whole log).
    sent: u64,
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

    /// What the window holds beyond what was sent, and whether the log
    /// is over (with why) once that is sent.
    fn catch_up(&mut self) -> (String, Option<String>) {
        let window = self.feed.window();
        let mut out = String::new();
        if self.sent < window.start {
            out.push_str(&format!("--- {} bytes skipped ---\n", window.start - self.sent));
            self.sent = window.start;
        }
        let from = usize::try_from(self.sent - window.start).unwrap_or(usize::MAX);
        out.push_str(window.text.get(from..).unwrap_or_default());
        self.sent = window.end_offset();
        (out, window.ended.clone())
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
            let (text, ended) = self.catch_up();
            if !text.is_empty() {
                return Some(self.render(&text));
            }
            if let Some(why) = ended {
                return Some(self.end(&why));
            }
            // `None`: the server shuts down (or its state is gone).
            let changed = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => None,
                r = self.version.changed() => Some(r.is_ok()),
            };
            let Some(changed) = changed else {
                return Some(self.end("server shutting down"));
            };
            if !changed {
                return Some(self.end("log unavailable"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_between_chunks_waits_for_its_end() {
        let mut partial = "é".as_bytes()[..1].to_vec();
        assert_eq!(complete_utf8(&mut partial), "");
        partial.extend_from_slice(&"é".as_bytes()[1..]);
        partial.extend_from_slice(b"t\xe2\x82");
        assert_eq!(complete_utf8(&mut partial), "ét");
        assert_eq!(partial, b"\xe2\x82");
        // Invalid bytes are not kept waiting.
        let mut bad = b"a\xffb".to_vec();
        assert_eq!(complete_utf8(&mut bad), "a\u{fffd}b");
        assert!(bad.is_empty());
    }

    #[test]
    fn the_window_keeps_the_end_and_counts_what_it_dropped() {
        let mut w = Window::default();
        let line = "x".repeat(1023) + "\n";
        for _ in 0..(3 * FOLLOW_WINDOW / 1024) {
            w.push(&line);
        }
        let total = 3 * FOLLOW_WINDOW as u64;
        assert_eq!(w.end_offset(), total);
        assert!(w.text.len() <= 2 * FOLLOW_WINDOW && w.text.len() >= FOLLOW_WINDOW);
        assert_eq!(w.start + w.text.len() as u64, total);
        assert!(w.text.ends_with(&line));
    }
}
