//! `GET /api/v1/build-events`: server-sent events of the builds passing the
//! filters.
//!
//! Protocol (compatible with the original's clients, which listen to
//! unnamed messages):
//! - first every matching build, oldest first, each as a message whose data
//!   is `{"event": "upd", "build": {...}}` (in the original's ascending
//!   search order: per repo, pull requests then branches, oldest first);
//! - then every change of a matching build as `{"event": "upd"|"del",
//!   "build": {...}}`, in the order the index made them;
//! - with a `status` filter, a build that stops matching is sent as `del`
//!   (so a "started builds" view does not keep stopped ones);
//! - a subscriber that fell so far behind that changes were dropped gets a
//!   named event `resync` (data `{"event": "resync", "reason": "..."}`),
//!   meaning "forget what you have", then the full matching set again as
//!   `upd` messages, then live changes: it is never silently skipped;
//! - keep-alive comments at the configured interval; the stream ends when
//!   the server shuts down, and a client disconnect drops the subscription
//!   at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use runboat_api::{BuildEvent, Detail, EventKind, Filters, Resync};
use runboat_core::{Build, IndexEvent, SearchFilters, SortOrder};
use tokio::sync::{broadcast, watch};

use crate::AppState;
use crate::api::{FilterParams, query};
use crate::error::ApiError;
use crate::limits::{PeerAddr, Refusal, SlotGuard, client_ip};

#[utoipa::path(get, path = "/api/v1/build-events", tag = "builds", params(Filters),
    description = "Server-sent events of the builds passing the filters (empty values mean \
        \"any\"). First every matching build, oldest first, then every change, each as an \
        unnamed message (SSE event type `message`, as the original's clients expect) whose data \
        is a `BuildEvent`: `{\"event\": \"upd\"|\"del\", \"build\": {...}}`. A client that \
        fell behind receives an event named `resync` (data: `Resync`: forget your state), then \
        the whole matching set again. Keep-alive comments are sent periodically; the stream \
        does not end by itself.",
    responses(
        (status = 200, description = "the event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "a parameter is invalid", body = Detail),
        (status = 429, description = "this client has too many open event streams (see `Retry-After`)", body = Detail),
        (status = 503, description = "too many open event streams, or not ready (see `Retry-After`)", body = Detail),
    ))]
/// The handler.
pub(crate) async fn build_events(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    q: Result<Query<FilterParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    crate::api::ready(&state)?;
    let filters = query(q)?.into_filters()?;
    let client = client_ip(&state.options().limits, &headers, peer.as_deref());
    let slot = state.event_streams().acquire(client).map_err(|refusal| match refusal {
        Refusal::Full => ApiError::Busy {
            detail: "too many open event streams: retry later".to_owned(),
            retry_after: 5,
        },
        Refusal::ClientFull => ApiError::TooManyRequests {
            detail: "too many open event streams from this client".to_owned(),
            retry_after: 5,
        },
    })?;
    let keep_alive = state.options().keep_alive;
    Ok(Sse::new(subscribe(state, filters, slot)?).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// The data of the last event of each build, serialised once for all the
/// subscribers it goes to (a change fans out to every open stream).
#[derive(Debug, Default)]
pub struct EventCache {
    entries: Mutex<HashMap<String, CachedEvent>>,
}

/// Event kind, the build as sent, the serialised data.
type CachedEvent = (EventKind, Build, Arc<str>);

/// Entries kept at most; the cache is emptied when it would grow beyond.
const EVENT_CACHE_MAX: usize = 4096;

impl EventCache {
    fn data(&self, state: &AppState, kind: EventKind, build: &Build) -> Arc<str> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, b, data)) = entries.get(&build.name)
            && *k == kind
            && b == build
        {
            return data.clone();
        }
        let event = BuildEvent { event: kind, build: state.build_view(build) };
        let data: Arc<str> = serde_json::to_string(&event).unwrap_or_default().into();
        if entries.len() >= EVENT_CACHE_MAX {
            entries.clear();
        }
        entries.insert(build.name.clone(), (kind, build.clone(), data.clone()));
        data
    }
}

/// One subscriber's state.
struct Subscription {
    state: AppState,
    filters: SearchFilters,
    rx: broadcast::Receiver<IndexEvent>,
    shutdown: watch::Receiver<bool>,
    /// Events to send before the snapshot (a `resync`) or live ones.
    pending: VecDeque<Event>,
    /// The builds of the snapshot not sent yet: serialised one at a time as
    /// the client reads, so a slow subscriber holds builds, not a copy of
    /// every event's text.
    snapshot: VecDeque<Build>,
    /// This stream's place under the caps, released on drop.
    _slot: SlotGuard,
    /// Names sent and not deleted since, tracked only with a status filter
    /// (the only filter a build can stop matching).
    shown: Option<HashSet<String>>,
}

/// The event stream of the builds passing `filters`: the snapshot, then
/// the live changes.
pub fn subscribe(
    state: AppState,
    filters: SearchFilters,
    slot: SlotGuard,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + Send + 'static, ApiError> {
    let shutdown = state.shutdown_signal();
    let (rx, snapshot) = snapshot(&state, &filters);
    let mut sub = Subscription {
        shown: filters.status.map(|_| HashSet::new()),
        state,
        filters,
        rx,
        shutdown,
        pending: VecDeque::new(),
        snapshot: VecDeque::new(),
        _slot: slot,
    };
    sub.queue_snapshot(snapshot);
    Ok(futures::stream::unfold(sub, |mut sub| async move {
        let event = sub.next().await?;
        Some((Ok(event), sub))
    }))
}

/// Subscribes and copies the matching builds under one index guard, so no
/// change falls between the two.
fn snapshot(
    state: &AppState,
    filters: &SearchFilters,
) -> (broadcast::Receiver<IndexEvent>, Vec<Build>) {
    state.read(|index| {
        let rx = index.subscribe();
        let builds = index.search(filters, SortOrder::Asc).into_iter().cloned().collect();
        (rx, builds)
    })
}

enum Next {
    Shutdown,
    Received(Result<IndexEvent, broadcast::error::RecvError>),
}

impl Subscription {
    fn message(&self, kind: EventKind, build: &Build) -> Event {
        Event::default().data(self.state.event_cache().data(&self.state, kind, build).as_ref())
    }

    fn queue_snapshot(&mut self, builds: Vec<Build>) {
        if let Some(shown) = &mut self.shown {
            shown.extend(builds.iter().map(|b| b.name.clone()));
        }
        self.snapshot = builds.into();
    }

    fn handle(&mut self, event: IndexEvent) {
        let build = event.build();
        let matches = self.filters.matches(build);
        let kind = match (&event, &mut self.shown) {
            (IndexEvent::Upd(_), None) if matches => EventKind::Upd,
            (IndexEvent::Del(_), None) if matches => EventKind::Del,
            (_, None) => return,
            (IndexEvent::Upd(b), Some(shown)) if matches => {
                shown.insert(b.name.clone());
                EventKind::Upd
            }
            // Shown before, not matching any more (or deleted): a `del`.
            (_, Some(shown)) => {
                if !shown.remove(&build.name) {
                    return;
                }
                EventKind::Del
            }
        };
        let message = self.message(kind, build);
        self.pending.push_back(message);
    }

    fn resync(&mut self, skipped: u64) {
        tracing::info!(skipped, "event subscriber fell behind: resynchronising");
        let (rx, snapshot) = snapshot(&self.state, &self.filters);
        self.rx = rx;
        self.pending.clear();
        self.snapshot.clear();
        if let Some(shown) = &mut self.shown {
            shown.clear();
        }
        let reason = format!("{skipped} changes were dropped while this client was behind");
        let data = Resync { event: "resync".to_owned(), reason };
        let data = serde_json::to_string(&data).unwrap_or_default();
        self.pending.push_back(Event::default().event("resync").data(data));
        self.queue_snapshot(snapshot);
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if let Some(build) = self.snapshot.pop_front() {
                return Some(self.message(EventKind::Upd, &build));
            }
            let next = tokio::select! {
                _ = self.shutdown.changed() => Next::Shutdown,
                r = self.rx.recv() => Next::Received(r),
            };
            match next {
                Next::Shutdown => return None,
                Next::Received(Ok(event)) => self.handle(event),
                Next::Received(Err(broadcast::error::RecvError::Lagged(n))) => self.resync(n),
                // The index is gone: the controller stopped.
                Next::Received(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }
}
