//! The generated OpenAPI document against the router and the wire types:
//! a route or a field missing from the document fails here.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use runboat_core::BuildStatus;
use runboat_server::openapi::API_PATHS;
use serde_json::Value;

use crate::events::SseReader;
use crate::support::{Harness, StatusOnly, admin, get, sha};

async fn document(h: &Harness) -> Value {
    let a = h.send(get("/api/v1/openapi.json")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type().starts_with("application/json"));
    a.json()
}

#[tokio::test]
async fn every_route_and_method_of_the_router_is_documented_and_nothing_else() {
    let h = Harness::new().await;
    let doc = document(&h).await;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let routed: BTreeSet<String> = API_PATHS.iter().map(|p| format!("/api/v1{p}")).collect();
    let routed: BTreeSet<&str> = routed.iter().map(String::as_str).collect();
    assert_eq!(documented, routed, "documented paths vs the router's");

    for path in routed {
        let uri = path.replace("{name}", "bnope");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let answer = h.app().oneshot_status(admin(method, &uri)).await;
            let in_doc = paths[path].get(method.to_lowercase()).is_some();
            let in_router = answer != StatusCode::METHOD_NOT_ALLOWED;
            assert_eq!(in_doc, in_router, "{method} {path}: answered {answer}");
        }
    }
}

/// The property names of schema `name`.
fn properties(doc: &Value, name: &str) -> BTreeSet<String> {
    let schema = &doc["components"]["schemas"][name];
    schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name}: {schema}"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

#[tokio::test]
async fn every_field_of_the_wire_types_is_in_its_schema() {
    let h = Harness::new().await;
    let doc = document(&h).await;
    let pr = h.add("oca/web", "16.0", Some(3), &sha(1), BuildStatus::Stopped, 0).await;
    // Pinned, so that `pinned` (omitted when false) is there.
    let pin = h.send(admin("POST", &format!("/api/v1/builds/{}/pin", pr.name))).await;
    assert_eq!(pin.status, StatusCode::OK, "{}", pin.text());
    h.wait_for(|c| c.get(&pr.name).filter(|b| b.pinned)).await.expect("pinned");

    let build = h.send(get(&format!("/api/v1/builds/{}", pr.name))).await.json();
    // The fields omitted when unknown or absent (a stopped build of a
    // pull request without history) are documented all the same.
    let mut documented = properties(&doc, "Build");
    for omitted in ["eta_seconds", "superseded_by"] {
        assert!(documented.remove(omitted), "{omitted} is documented");
    }
    assert_eq!(keys(&build), documented);
    let stages = ["created", "init_started", "init_finished", "started", "stopped"];
    assert_eq!(properties(&doc, "Timeline"), stages.iter().map(|s| (*s).to_owned()).collect());
    assert_eq!(keys(&build["commit_info"]), properties(&doc, "CommitInfo"));
    let status = h.send(get("/api/v1/status")).await.json();
    // `leadership` only with leader election (the e2e leader test reads it).
    let mut status_keys = keys(&status);
    assert!(status_keys.insert("leadership".to_owned()));
    assert_eq!(status_keys, properties(&doc, "StatusCounts"));
    let leader = runboat_api::LeaderStatus {
        identity: "pod-a".into(),
        leader: true,
        holder: Some("pod-a".into()),
    };
    let leader = serde_json::to_value(leader).expect("json");
    assert_eq!(keys(&leader), properties(&doc, "LeaderStatus"));
    let repos = h.send(get("/api/v1/repos")).await.json();
    assert_eq!(keys(&repos[0]), properties(&doc, "Repo"));
    let summary = h.send(get("/api/v1/repos/summary")).await.json();
    assert_eq!(keys(&summary[0]), properties(&doc, "RepoSummary"));
    let error = h.send(get("/api/v1/builds/bnope")).await.json();
    assert_eq!(keys(&error), properties(&doc, "Detail"));
    let action = h.send(admin("POST", &format!("/api/v1/builds/{}/start", pr.name))).await;
    assert_eq!(action.status, StatusCode::OK, "{}", action.text());
    assert!(keys(&action.json()).is_subset(&properties(&doc, "BuildAction")));
    // An ignored action also has `ignored` (absent when false).
    h.wait_status(&pr.name, Some(BuildStatus::Starting)).await;
    let ignored = h.send(admin("POST", &format!("/api/v1/builds/{}/start", pr.name))).await;
    assert_eq!(ignored.json()["ignored"], true, "{}", ignored.text());
    assert_eq!(keys(&ignored.json()), properties(&doc, "BuildAction"));
    let undeployed = h.send(admin("DELETE", "/api/v1/builds?pr=3")).await.json();
    assert_eq!(keys(&undeployed), properties(&doc, "Undeployed"));
    let mut sse = SseReader::open(&h.state, "/api/v1/build-events").await;
    let event = sse.next().await.expect("an event");
    assert_eq!(keys(&event.data), properties(&doc, "BuildEvent"));
    let resync = runboat_api::Resync { event: "resync".into(), reason: "test".into() };
    let resync = serde_json::to_value(resync).expect("json");
    assert_eq!(keys(&resync), properties(&doc, "Resync"));

    // The largest pull request number documented is the one the server
    // takes.
    let params = doc["paths"]["/api/v1/builds/trigger/pr"]["post"]["parameters"]
        .as_array()
        .expect("parameters");
    let pr = params.iter().find(|p| p["name"] == "pr").expect("pr");
    assert_eq!(pr["schema"]["maximum"].as_u64(), Some(runboat_api::MAX_PR));

    // The statuses the schema lists are exactly the API's.
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["BuildStatus"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    let known: BTreeSet<&str> = runboat_api::BuildStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(listed, known);
}
