//! Watches: resume from a resourceVersion, event order, label-filtered
//! transitions, bookmarks, timeouts, 410 Gone, and kube's watcher relisting.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;

use crate::{configmap, sim, status_of};

fn describe(ev: &WatchEvent<ConfigMap>) -> String {
    match ev {
        WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.as_deref().unwrap_or_default()),
        WatchEvent::Modified(c) => {
            format!("MODIFIED {}", c.metadata.name.as_deref().unwrap_or_default())
        }
        WatchEvent::Deleted(c) => {
            format!("DELETED {}", c.metadata.name.as_deref().unwrap_or_default())
        }
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {} {}", s.code, s.reason),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_in_order() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &configmap("before", json!({}))).await.expect("created");
    let list = api.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("list rv");

    api.create(&PostParams::default(), &configmap("a", json!({}))).await.expect("created");
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "2"}})))
        .await
        .expect("patched");
    api.delete("a", &DeleteParams::default()).await.expect("deleted");

    let events: Vec<String> = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(1), &rv)
        .await
        .expect("watch")
        .map_ok(|e| describe(&e))
        .try_collect()
        .await
        .expect("events");
    assert_eq!(events, vec!["ADDED a", "MODIFIED a", "DELETED a"]);
}

#[tokio::test]
async fn label_filtered_watches_see_objects_enter_and_leave() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let rv = sim.resource_version().to_string();
    api.create(&PostParams::default(), &configmap("x", json!({"runboat/build": "b1"})))
        .await
        .expect("created");
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"runboat/build": "b2"}}})),
    )
    .await
    .expect("relabelled");
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"runboat/build": "b1"}}})),
    )
    .await
    .expect("relabelled back");
    api.patch("x", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "3"}})))
        .await
        .expect("patched");
    let events: Vec<String> = api
        .watch(
            &WatchParams::default().disable_bookmarks().labels("runboat/build=b1").timeout(1),
            &rv,
        )
        .await
        .expect("watch")
        .map_ok(|e| describe(&e))
        .try_collect()
        .await
        .expect("events");
    assert_eq!(events, vec!["ADDED x", "DELETED x", "ADDED x", "MODIFIED x"]);
}

#[tokio::test]
async fn watch_from_zero_starts_with_the_current_state_and_bookmarks_arrive() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &configmap("one", json!({}))).await.expect("created");
    let mut stream =
        api.watch(&WatchParams::default().timeout(5), "0").await.expect("watch").boxed();
    let first = stream.try_next().await.expect("event").expect("some event");
    assert_eq!(describe(&first), "ADDED one");
    // The bookmark interval of the test server is 100 ms.
    let next = tokio::time::timeout(Duration::from_secs(3), stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("event");
    match next {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, sim.resource_version().to_string())
        }
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn watch_timeout_ends_the_stream_with_a_bookmark() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let rv = sim.resource_version().to_string();
    let started = std::time::Instant::now();
    let events: Vec<String> = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .map_ok(|e| describe(&e))
        .try_collect()
        .await
        .expect("events");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(events.last().map(String::as_str), Some("BOOKMARK"));
}

#[tokio::test]
async fn a_compacted_resource_version_answers_410_expired() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let rv = sim.resource_version().to_string();
    api.create(&PostParams::default(), &configmap("a", json!({}))).await.expect("created");
    sim.compact_history();
    let events: Vec<WatchEvent<ConfigMap>> = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(1), &rv)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    match &events[0] {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("too old resource version: "), "{}", s.message);
        }
        other => panic!("expected 410, got {}", describe(other)),
    }
    // A list at an exact version that is gone answers 410 too.
    let err = status_of(
        api.list(&ListParams::default().at(&rv).matching(kube::api::VersionMatch::Exact)).await,
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn kube_watcher_relists_after_410() {
    let config = kubesim::Config {
        controllers: kubesim::ControllerConfig::instant(),
        bookmark_interval: Duration::from_secs(3600),
        namespaces: vec!["ns".into()],
        ..kubesim::Config::default()
    };
    let sim = kubesim::KubeSim::start_with(config).await.expect("starts");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &configmap("a", json!({"runboat/build": "b"})))
        .await
        .expect("created");
    let mut stream =
        watcher(api.clone(), watcher::Config::default().labels("runboat/build")).boxed();
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await.expect("watcher event") {
        let done = matches!(ev, watcher::Event::InitDone);
        seen.push(ev);
        if done {
            break;
        }
    }
    assert!(matches!(
        seen.as_slice(),
        [watcher::Event::Init, watcher::Event::InitApply(_), watcher::Event::InitDone]
    ));
    // Drop the connection, and while the watcher reconnects (slowed down),
    // change things it cannot see and forget the history: its resume gets
    // 410 Gone and it relists.
    sim.set_latency(Duration::from_millis(300));
    sim.close_watches();
    sim.create(
        "configmaps",
        "ns",
        json!({"metadata": {"name": "b", "labels": {"runboat/build": "b"}}}),
    )
    .expect("created");
    sim.create("configmaps", "ns", json!({"metadata": {"name": "unlabelled"}})).expect("created");
    sim.compact_history();
    let mut relisted = Vec::new();
    let mut errors = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await.expect("relist in time") {
            Some(Ok(watcher::Event::InitApply(c))) => {
                relisted.push(c.metadata.name.unwrap_or_default())
            }
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            Some(Err(_)) => errors += 1,
            None => panic!("watcher ended"),
        }
    }
    sim.set_latency(Duration::ZERO);
    assert_eq!(errors, 1, "the 410 is reported once");
    assert_eq!(relisted, vec!["a", "b"]);
}

#[tokio::test]
async fn streaming_lists_send_initial_events_then_the_end_bookmark() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &configmap(n, json!({}))).await.expect("created");
    }
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
        {
            Some(watcher::Event::InitApply(c)) => names.push(c.metadata.name.unwrap_or_default()),
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("ended"),
        }
    }
    assert_eq!(names, vec!["a", "b"]);
    api.create(&PostParams::default(), &configmap("c", json!({}))).await.expect("created");
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
    {
        Some(watcher::Event::Apply(c)) => assert_eq!(c.metadata.name.as_deref(), Some("c")),
        other => panic!("expected apply, got {other:?}"),
    }
}

/// 10,000 objects through kube's paginated initial list, then 1,000 more
/// through the watch (slow: only with RUNBOAT_SLOW_TESTS=1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_at_scale() {
    if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() != Ok("1") {
        return;
    }
    let sim = crate::sim_with(kubesim::ControllerConfig::none()).await;
    for i in 0..10_000 {
        sim.create("configmaps", "ns", json!({"metadata": {"name": format!("c{i:05}"), "labels": {"runboat/build": format!("b{i}")}}}))
            .expect("seeded");
    }
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let mut stream =
        watcher(api.clone(), watcher::Config::default().labels("runboat/build")).boxed();
    let mut initial = 0;
    loop {
        match stream.try_next().await.expect("event").expect("some") {
            watcher::Event::InitApply(_) => initial += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, 10_000);
    for i in 0..1_000 {
        sim.create(
            "configmaps",
            "ns",
            json!({"metadata": {"name": format!("d{i:05}"), "labels": {"runboat/build": "x"}}}),
        )
        .expect("created");
    }
    let mut applied = 0;
    while applied < 1_000 {
        match tokio::time::timeout(Duration::from_secs(30), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("some")
        {
            watcher::Event::Apply(_) => applied += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_resource_version_from_the_future_times_out_like_the_watch_cache() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let future = (sim.resource_version() + 1000).to_string();
    let events: Vec<WatchEvent<ConfigMap>> = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(10), &future)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("events");
    match events.as_slice() {
        [WatchEvent::Error(s)] => assert_eq!((s.code, s.reason.as_str()), (504, "Timeout")),
        other => panic!("expected one 504, got {}", other.len()),
    }
}
