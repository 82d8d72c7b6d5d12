//! `GET /api/v1/build-events`: reading the stream.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use runboat_core::BuildStatus;
use runboat_server::{AppState, ServerOptions};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{Harness, get, sha};

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct Sse {
    pub(crate) name: Option<String>,
    pub(crate) data: Value,
}

/// Reads events off a response body.
pub(crate) struct SseReader {
    body: Body,
    buf: String,
    /// How long to wait for one event (virtual time under a paused clock).
    pub(crate) patience: Duration,
}

impl SseReader {
    pub(crate) async fn open(state: &AppState, uri: &str) -> SseReader {
        let resp = runboat_server::app(state.clone()).oneshot(get(uri)).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers().get("content-type").expect("content type"), "text/event-stream");
        SseReader { body: resp.into_body(), buf: String::new(), patience: Duration::from_secs(10) }
    }

    /// The next event (skipping keep-alive comments), or `None` when the
    /// stream ended. Fails after `patience`.
    pub(crate) async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(self.patience, self.next_inner())
            .await
            .unwrap_or_else(|_| panic!("no event within {:?}", self.patience))
    }

    async fn next_inner(&mut self) -> Option<Sse> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return Some(Sse { name, data: serde_json::from_str(&data).expect("JSON data") });
            }
            let frame = self.body.frame().await?.expect("frame");
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
            }
        }
    }

    /// The next event, which must be an unnamed `kind` message; returns the
    /// build's name.
    pub(crate) async fn expect(&mut self, kind: &str) -> (String, Value) {
        let ev = self.next().await.expect("an event");
        assert_eq!(ev.name, None, "{ev:?}");
        assert_eq!(ev.data["event"], kind, "{ev:?}");
        (ev.data["build"]["name"].as_str().expect("name").to_owned(), ev.data["build"].clone())
    }
}

#[tokio::test]
async fn snapshot_oldest_first_then_live_changes_filtered() {
    let h = Harness::new();
    let newer = h.backend.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Stopped, 100);
    let older = h.backend.add("oca/web", "16.0", Some(2), &sha(1), BuildStatus::Stopped, 50);
    let other = h.backend.add("oca/crm", "16.0", None, &sha(3), BuildStatus::Stopped, 10);

    let mut sse = SseReader::open(&h.state, "/api/v1/build-events?repo=oca/web").await;
    assert_eq!(sse.expect("upd").await.0, older.name);
    let (name, build) = sse.expect("upd").await;
    assert_eq!(name, newer.name);
    assert_eq!(build["status"], "stopped");
    assert_eq!(build["webui_link"], format!("https://runboat.example.com/builds/{name}").as_str());

    // Changes of other repos are not sent; changes of this one are, in order.
    h.backend.set_status(&other.name, BuildStatus::Started);
    h.backend.set_status(&newer.name, BuildStatus::Starting);
    h.backend.set_status(&newer.name, BuildStatus::Started);
    h.backend.remove(&older.name);
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (newer.name.as_str(), Some("starting")));
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (newer.name.as_str(), Some("started")));
    assert_eq!(sse.expect("del").await.0, older.name);

    // Shutdown ends the stream.
    h.state.shutdown();
    assert!(sse.next().await.is_none());
}

#[tokio::test]
async fn status_filter_sends_del_when_a_build_stops_matching() {
    let h = Harness::new();
    let a = h.backend.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0);
    let b = h.backend.add("oca/web", "15.0", None, &sha(2), BuildStatus::Stopped, 1);
    let mut sse = SseReader::open(&h.state, "/api/v1/build-events?status=started").await;
    assert_eq!(sse.expect("upd").await.0, a.name);
    h.backend.set_status(&a.name, BuildStatus::Stopping);
    let (n, build) = sse.expect("del").await;
    assert_eq!((n.as_str(), build["status"].as_str()), (a.name.as_str(), Some("stopping")));
    h.backend.set_status(&b.name, BuildStatus::Starting); // never matched: nothing
    h.backend.set_status(&b.name, BuildStatus::Started);
    assert_eq!(sse.expect("upd").await.0, b.name);
}

#[tokio::test]
async fn build_name_filter_follows_one_build() {
    let h = Harness::new();
    let a = h.backend.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0);
    let other = h.backend.add("oca/web", "15.0", None, &sha(2), BuildStatus::Stopped, 1);
    let mut sse =
        SseReader::open(&h.state, &format!("/api/v1/build-events?build_name={}", a.name)).await;
    assert_eq!(sse.expect("upd").await.0, a.name);
    h.backend.set_status(&other.name, BuildStatus::Started);
    h.backend.set_status(&a.name, BuildStatus::Started);
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (a.name.as_str(), Some("started")));
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_and_resynchronised() {
    let h = Harness::new();
    // Replace the index by one with a tiny event buffer.
    *h.backend.index.write().expect("lock") = runboat_core::BuildIndex::with_event_capacity(2);
    let kept = h.backend.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0);
    let gone = h.backend.add("oca/web", "16.0", Some(1), &sha(2), BuildStatus::Stopped, 1);
    let mut sse = SseReader::open(&h.state, "/api/v1/build-events").await;
    // The original's ascending search order: pull requests, then branches.
    assert_eq!(sse.expect("upd").await.0, gone.name);
    assert_eq!(sse.expect("upd").await.0, kept.name);

    // Far more changes than the buffer holds while the client reads nothing.
    for i in 0..10 {
        let status = if i % 2 == 0 { BuildStatus::Starting } else { BuildStatus::Stopped };
        h.backend.set_status(&kept.name, status);
    }
    h.backend.remove(&gone.name);
    let added = h.backend.add("oca/web", "17.0", None, &sha(3), BuildStatus::Initializing, 2);

    let ev = sse.next().await.expect("resync");
    assert_eq!(ev.name.as_deref(), Some("resync"), "{ev:?}");
    assert_eq!(ev.data["event"], "resync");
    assert!(ev.data["reason"].as_str().expect("reason").contains("dropped"));
    // Then the full current set, in the same order, with the latest values.
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (kept.name.as_str(), Some("stopped")));
    assert_eq!(sse.expect("upd").await.0, added.name);
    // And live again.
    h.backend.set_status(&added.name, BuildStatus::Failed);
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (added.name.as_str(), Some("failed")));
}

#[tokio::test]
async fn bad_filters_are_400_and_keep_alive_comments_flow() {
    let h = Harness::with_options(ServerOptions {
        keep_alive: Duration::from_millis(20),
        ..ServerOptions::default()
    });
    let a = h.send(get("/api/v1/build-events?status=nope")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.detail().contains("\"nope\""));

    let resp = runboat_server::app(h.state.clone())
        .oneshot(get("/api/v1/build-events"))
        .await
        .expect("infallible");
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("keep-alive within 10 s")
        .expect("frame")
        .expect("ok");
    let bytes = frame.into_data().expect("data");
    assert!(bytes.starts_with(b":"), "a comment: {bytes:?}");
}

#[tokio::test]
async fn a_disconnect_frees_the_subscription() {
    let h = Harness::new();
    let sse = SseReader::open(&h.state, "/api/v1/build-events").await;
    let sse2 = SseReader::open(&h.state, "/api/v1/build-events?repo=oca/web").await;
    assert_eq!(h.state.open_event_streams(), 2);
    drop(sse);
    assert_eq!(h.state.open_event_streams(), 1);
    drop(sse2);
    assert_eq!(h.state.open_event_streams(), 0);
}
