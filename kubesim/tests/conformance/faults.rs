//! Fault injection from Rust and from the HTTP control endpoint.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use kubesim::FailRule;
use serde_json::json;

use crate::{configmap, no_retry_client, sim, status_of};

#[tokio::test]
async fn fail_next_answers_matching_requests_with_the_given_status() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(no_retry_client(&sim), "ns");
    sim.fail_next(FailRule::new(2, 503).verb("list").resource("configmaps").retry_after(2));
    // Other verbs are not affected.
    api.create(&PostParams::default(), &configmap("a", json!({}))).await.expect("create passes");
    let err = status_of(api.list(&ListParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    assert_eq!(err.details.map(|d| d.retry_after_seconds), Some(2));
    assert_eq!(status_of(api.list(&ListParams::default()).await).code, 503);
    assert!(api.list(&ListParams::default()).await.is_ok(), "only two failures");

    sim.fail_next(FailRule::new(1, 429));
    let err = status_of(api.get("a").await);
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    sim.fail_next(FailRule::new(1, 500));
    assert_eq!(status_of(api.get("a").await).reason, "InternalError");
    sim.fail_next(FailRule::new(5, 500));
    sim.clear_faults();
    assert!(api.get("a").await.is_ok());

    // kube's default client retries 503 transparently.
    sim.fail_next(FailRule::new(1, 503));
    let retrying: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    assert!(retrying.get("a").await.is_ok());
}

#[tokio::test]
async fn retry_after_header_is_sent() {
    let sim = sim().await;
    sim.fail_next(FailRule::new(1, 429).retry_after(3));
    let req =
        http::Request::get("/api/v1/namespaces/ns/configmaps").body(Vec::new()).expect("request");
    let resp = no_retry_client(&sim).send(req.map(Into::into)).await.expect("response");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
}

#[tokio::test]
async fn the_control_endpoint_accepts_json_actions() {
    let sim = sim().await;
    let client = sim.client();
    let post = |body: serde_json::Value| {
        http::Request::post("/kubesim/faults")
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .expect("request")
    };
    let r: serde_json::Value = client
        .request(post(json!([{"action": "failNext", "count": 1, "status": 500, "verb": "get"}, {"action": "latency", "millis": 0}])))
        .await
        .expect("accepted");
    assert_eq!(r["applied"], 2);
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    assert_eq!(status_of(api.get("x").await).code, 500);
    assert_eq!(status_of(api.get("x").await).code, 404);
    let bad =
        status_of(client.request::<serde_json::Value>(post(json!({"action": "explode"}))).await);
    assert_eq!(bad.code, 400);
    let stats: serde_json::Value = client
        .request(http::Request::get("/kubesim/stats").body(Vec::new()).expect("request"))
        .await
        .expect("stats");
    assert!(stats["resourceVersion"].as_u64().is_some());
}

#[tokio::test]
async fn latency_is_added_and_close_watches_ends_streams() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    sim.set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    api.list(&ListParams::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(200));
    sim.set_latency(Duration::ZERO);

    let rv = sim.resource_version().to_string();
    let stream = api.watch(&WatchParams::default().timeout(60), &rv).await.expect("watch");
    // The response has started: the watch is open on the server.
    sim.close_watches();
    let events: Vec<_> =
        tokio::time::timeout(Duration::from_secs(5), stream.try_collect::<Vec<_>>())
            .await
            .expect("stream ended")
            .expect("ok");
    assert!(events.is_empty());
}
