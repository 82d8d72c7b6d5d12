//! `GET /api/v1/build-events`: reading the stream.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use runboat_core::sim::SimConfig;
use runboat_core::{BuildStatus, CommitInfo, InitStatus};
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

/// Collects the events of builds of `names` until `last` (a build name and
/// an event kind or status) was seen; gives `(name, event or status)`.
async fn collect(sse: &mut SseReader, last: (&str, &str)) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        let ev = sse.next().await.expect("stream open");
        assert_eq!(ev.name, None, "{ev:?}");
        let name = ev.data["build"]["name"].as_str().expect("name").to_owned();
        let what = if ev.data["event"] == "del" {
            "del".to_owned()
        } else {
            ev.data["build"]["status"].as_str().expect("status").to_owned()
        };
        let done = (name.as_str(), what.as_str()) == last;
        if seen.last() != Some(&(name.clone(), what.clone())) {
            seen.push((name, what));
        }
        if done {
            return seen;
        }
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test(start_paused = true)]
async fn snapshot_oldest_first_then_live_changes_filtered() {
    let h = Harness::moving().await;
    let newer = h.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Stopped, 100).await;
    let older = h.add("oca/web", "16.0", Some(2), &sha(1), BuildStatus::Stopped, 50).await;
    let other = h.add("oca/crm", "16.0", None, &sha(3), BuildStatus::Stopped, 10).await;

    let mut sse = SseReader::open(&h.state, "/api/v1/build-events?repo=oca/web").await;
    sse.patience = Duration::from_secs(600);
    assert_eq!(sse.expect("upd").await.0, older.name);
    let (name, build) = sse.expect("upd").await;
    assert_eq!(name, newer.name);
    assert_eq!(build["status"], "stopped");
    assert_eq!(build["webui_link"], format!("https://runboat.example.com/builds/{name}").as_str());

    // Changes of other repos are not sent; changes of this one are, in order.
    h.handle.start(&other.name).await.expect("start");
    h.wait_status(&other.name, Some(BuildStatus::Started)).await;
    h.handle.start(&newer.name).await.expect("start");
    h.wait_status(&newer.name, Some(BuildStatus::Started)).await;
    h.handle.undeploy(&older.name).await.expect("undeploy");
    let mut seen = collect(&mut sse, (&older.name, "del")).await;
    // (A change that leaves a build stopped, e.g. its last-scaled time, is
    // an `upd` too; only the status moves matter here.)
    seen.retain(|(_, what)| what != "stopped");
    assert_eq!(
        seen,
        pairs(&[
            (&newer.name, "starting"),
            (&newer.name, "started"),
            (&older.name, "undeploying"),
            (&older.name, "del"),
        ])
    );

    // Shutdown ends the stream.
    h.state.shutdown();
    assert!(sse.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn status_filter_sends_del_when_a_build_stops_matching() {
    let h = Harness::moving().await;
    let a = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    let b = h.add("oca/web", "15.0", None, &sha(2), BuildStatus::Stopped, 1).await;
    let mut sse = SseReader::open(&h.state, "/api/v1/build-events?status=started").await;
    sse.patience = Duration::from_secs(600);
    assert_eq!(sse.expect("upd").await.0, a.name);
    h.handle.stop(&a.name).await.expect("stop");
    let (n, build) = sse.expect("del").await;
    assert_eq!((n.as_str(), build["status"].as_str()), (a.name.as_str(), Some("stopping")));
    // Starting never matched: nothing; started does.
    h.handle.start(&b.name).await.expect("start");
    let (n, build) = sse.expect("upd").await;
    assert_eq!((n.as_str(), build["status"].as_str()), (b.name.as_str(), Some("started")));
}

#[tokio::test]
async fn build_name_filter_follows_one_build() {
    let h = Harness::new().await;
    let a = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let other = h.add("oca/web", "15.0", None, &sha(2), BuildStatus::Stopped, 1).await;
    let mut sse =
        SseReader::open(&h.state, &format!("/api/v1/build-events?build_name={}", a.name)).await;
    assert_eq!(sse.expect("upd").await.0, a.name);
    h.handle.start(&other.name).await.expect("start");
    h.wait_status(&other.name, Some(BuildStatus::Starting)).await;
    h.handle.start(&a.name).await.expect("start");
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (a.name.as_str(), Some("starting")));
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_and_resynchronised() {
    // Room for many builds: the limits must not undeploy any.
    let settings = crate::support::settings_with("max_deployed = 100000");
    let h = Harness::build(settings, SimConfig::default(), ServerOptions::default()).await;
    let kept = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let pr = h.add("oca/web", "16.0", Some(1), &sha(2), BuildStatus::Stopped, 1).await;
    let mut sse = SseReader::open(&h.state, "/api/v1/build-events?repo=oca/web").await;
    // The original's ascending search order: pull requests, then branches.
    assert_eq!(sse.expect("upd").await.0, pr.name);
    assert_eq!(sse.expect("upd").await.0, kept.name);

    // Far more changes than the index's event buffer holds (of another
    // repo, but every change goes through each subscription) while the
    // client reads nothing.
    let noise = runboat_core::index::DEFAULT_EVENT_CAPACITY + 100;
    for i in 0..noise {
        let commit =
            CommitInfo::new("oca/noise", "16.0", Some(i as u64 + 1), &sha(3)).expect("commit");
        h.sim.insert_deployment(&commit, InitStatus::Succeeded, 0, jiff::Timestamp::now());
    }
    let all_in = h.wait_for(|c| (c.with_index(|i| i.len()) == noise + 2).then_some(())).await;
    assert!(all_in.is_some(), "every build listed");

    let ev = sse.next().await.expect("resync");
    assert_eq!(ev.name.as_deref(), Some("resync"), "{ev:?}");
    assert_eq!(ev.data["event"], "resync");
    assert!(ev.data["reason"].as_str().expect("reason").contains("dropped"));
    // Then the full current set, in the same order, with the latest values.
    assert_eq!(sse.expect("upd").await.0, pr.name);
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (kept.name.as_str(), Some("stopped")));
    // And live again.
    h.handle.start(&kept.name).await.expect("start");
    let (n, b) = sse.expect("upd").await;
    assert_eq!((n.as_str(), b["status"].as_str()), (kept.name.as_str(), Some("starting")));
}

#[tokio::test]
async fn bad_filters_are_400_and_keep_alive_comments_flow() {
    let h = Harness::with_options(ServerOptions {
        keep_alive: Duration::from_millis(20),
        ..ServerOptions::default()
    })
    .await;
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
    let h = Harness::new().await;
    let sse = SseReader::open(&h.state, "/api/v1/build-events").await;
    let sse2 = SseReader::open(&h.state, "/api/v1/build-events?repo=oca/web").await;
    assert_eq!(h.state.open_event_streams(), 2);
    drop(sse);
    assert_eq!(h.state.open_event_streams(), 1);
    drop(sse2);
    assert_eq!(h.state.open_event_streams(), 0);
}
