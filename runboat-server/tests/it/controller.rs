//! The server over the real controller and the simulated cluster (paused
//! clock: the simulated jobs' minutes pass in milliseconds).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use runboat_core::forge::NoForge;
use runboat_core::sim::{SimCluster, SimConfig};
use runboat_core::{Cluster, Controller, ControllerConfig, ControllerHandle};
use runboat_github::WebhookSecret;
use runboat_server::{AppState, ServerOptions, app};
use serde_json::{Value, json};

use crate::events::SseReader;
use crate::support::{admin, get, req, send, settings, sha};

struct Sim {
    sim: SimCluster,
    handle: ControllerHandle,
    state: AppState,
}

async fn start() -> Sim {
    let sim = SimCluster::new(SimConfig::default());
    let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
    let settings = settings();
    let handle = Controller::spawn(
        cluster,
        Arc::new(NoForge),
        settings.clone(),
        ControllerConfig::default(),
    );
    handle.ready().await;
    let state = AppState::new(handle.clone(), None, ServerOptions::default());
    Sim { sim, handle, state }
}

/// Reads events until the build `name` has `status` (or is deleted, for
/// `"del"`), returning the statuses seen on the way.
async fn until(sse: &mut SseReader, name: &str, status: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let ev = sse.next().await.expect("stream open");
        let data: &Value = &ev.data;
        if data["build"]["name"] != name {
            continue;
        }
        let st = if data["event"] == "del" {
            "del".to_owned()
        } else {
            data["build"]["status"].as_str().expect("status").to_owned()
        };
        if seen.last() != Some(&st) {
            seen.push(st.clone());
        }
        if st == status {
            return seen;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn webhook_to_started_to_undeployed_over_the_controller() {
    let s = start().await;
    let app = app(s.state.clone());
    assert_eq!(send(app.clone(), get("/readyz")).await.status, StatusCode::OK);

    let mut sse = SseReader::open(&s.state, "/api/v1/build-events?repo=oca/web").await;
    sse.patience = Duration::from_secs(600);

    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/16.0",
        "after": sha(1),
        "repository": {"full_name": "OCA/web"},
    }))
    .expect("json");
    let delivery = Request::post("/webhooks/github")
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", WebhookSecret::new("whsecret").sign(&body))
        .body(Body::from(body))
        .expect("request");
    let a = send(app.clone(), delivery).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let name = a.detail().trim_start_matches("deploying build ").to_owned();

    // Initialization runs in the simulated cluster, then the build stops.
    let seen = until(&mut sse, &name, "stopped").await;
    assert_eq!(seen, ["initializing", "stopped"]);

    let a = send(app.clone(), req("POST", &format!("/api/v1/builds/{name}/stop"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.detail(), "stop ignored: build is stopped");

    let a = send(app.clone(), req("POST", &format!("/api/v1/builds/{name}/start"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let seen = until(&mut sse, &name, "started").await;
    assert_eq!(seen.last().map(String::as_str), Some("started"));

    let b = send(app.clone(), get(&format!("/api/v1/builds/{name}"))).await.json();
    assert_eq!(b["status"], "started");
    let a = send(app.clone(), get(&format!("/builds/{name}?live"))).await;
    assert_eq!(a.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        a.headers.get(header::LOCATION).expect("location"),
        b["deploy_link"].as_str().expect("link")
    );

    let a = send(app.clone(), get(&format!("/api/v1/builds/{name}/log"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains(&format!("odoo serving {name}")));

    let status = send(app.clone(), get("/api/v1/status")).await.json();
    assert_eq!((status["started"].as_u64(), status["deployed"].as_u64()), (Some(1), Some(1)));

    let a = send(app.clone(), admin("DELETE", &format!("/api/v1/builds/{name}"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let seen = until(&mut sse, &name, "del").await;
    assert!(seen.contains(&"undeploying".to_owned()), "{seen:?}");
    assert!(!s.sim.has_resources(&name), "every resource deleted");
    assert!(s.sim.deployment(&name).is_none());

    let m = send(app.clone(), get("/metrics")).await.text();
    assert!(m.contains("runboat_controller_actions_total"), "{m}");
    assert!(m.contains("runboat_controller_watch_restarts_total 0\n"), "{m}");
    for kind in ["deploy", "initialize", "init-succeeded", "start", "undeploy"] {
        assert!(
            m.contains(&format!(
                "runboat_controller_actions_ended_total{{kind=\"{kind}\",outcome=\"ok\"}} 1\n"
            )),
            "{kind}: {m}"
        );
    }
    s.handle.shutdown().await;
    // The controller is gone: commands answer 503.
    let a = send(app, req("POST", &format!("/api/v1/builds/{name}/start"))).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn init_log_and_unsupported_deploys_over_the_controller() {
    let s = start().await;
    let app = app(s.state.clone());
    let mut sse = SseReader::open(&s.state, "/api/v1/build-events").await;
    sse.patience = Duration::from_secs(600);
    let commit =
        runboat_core::CommitInfo::new("oca/web", "16.0", Some(4), &sha(2)).expect("commit");
    let name = commit.build_name();
    assert_eq!(
        s.handle.deploy_commit(commit).await.expect("deploy"),
        runboat_core::CommandOutcome::Done
    );
    until(&mut sse, &name, "initializing").await;
    // Wait for the init job to exist: the init log shows ANSI colours as HTML.
    let mut attempts = 0;
    let log = loop {
        attempts += 1;
        assert!(attempts < 240, "no init log within 2 virtual minutes");
        let a = send(app.clone(), get(&format!("/api/v1/builds/{name}/init-log"))).await;
        if a.status == StatusCode::OK {
            break a.text();
        }
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        // Let the simulated cluster progress (virtual time).
        tokio::time::advance(Duration::from_millis(500)).await;
    };
    assert!(log.contains("initializing") && log.contains("<span"), "{log}");

    let unsupported =
        runboat_core::CommitInfo::new("oca/web", "main", None, &sha(3)).expect("commit");
    assert_eq!(
        s.handle.deploy_commit(unsupported).await.expect("deploy"),
        runboat_core::CommandOutcome::Unsupported
    );
    s.handle.shutdown().await;
}
