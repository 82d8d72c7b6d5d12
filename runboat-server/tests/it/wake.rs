//! Wake on request: requests for a build's host (routed to runboat while
//! the build sleeps) get the waiting page, and start the build.

use axum::http::{StatusCode, header};
use runboat_core::sim::{SimConfig, SimMethod};
use runboat_core::{BuildStatus, CommitInfo};
use runboat_server::ServerOptions;

use crate::support::{Harness, get, settings_with, sha};

const WAKE: &str = "wake_service = \"runboat-wake:8080\"";

fn at(host: &str, path: &str) -> axum::http::Request<axum::body::Body> {
    let mut r = get(path);
    r.headers_mut().insert(header::HOST, host.parse().expect("host"));
    r
}

fn host_of(repo: &str, pr: Option<u64>, n: u8) -> String {
    let c = CommitInfo::new(repo, "16.0", pr, &sha(n)).expect("commit");
    format!("{}.runboat.example.com", c.slug())
}

fn scales(h: &Harness, name: &str) -> usize {
    h.sim.calls().iter().filter(|c| c.method == SimMethod::Scale && c.build_name == name).count()
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn a_request_to_a_stopped_build_wakes_it_and_the_page_follows_it() {
    let h =
        Harness::build(settings_with(WAKE), SimConfig::default(), ServerOptions::default()).await;
    let b = h.add("oca/web", "16.0", Some(7), &sha(1), BuildStatus::Stopped, 0).await;
    let host = host_of("oca/web", Some(7), 1);

    let a = h.send(at(&host, "/web/login?redirect=%2Fodoo")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.content_type().starts_with("text/html"));
    let html = a.text();
    for part in [
        b.name.as_str(),
        "oca/web",
        "16.0",
        "#7",
        "Starting.",
        "unknown",
        "https://runboat.example.com/builds/",
        "http-equiv=\"refresh\" content=\"3\"",
    ] {
        assert!(html.contains(part), "{part} missing: {html}");
    }
    assert_eq!(a.headers.get(header::RETRY_AFTER).map(|v| v.to_str().ok()), Some(Some("3")));
    assert_eq!(scales(&h, &b.name), 1, "the request started the build");

    // Reloads while it starts do not start it again.
    let a = h.send(at(&format!("{host}:443"), "/web/login?redirect=%2Fodoo")).await;
    assert!(a.text().contains("Starting."), "{}", a.text());
    let mail = h.send(at(&host.replace(".runboat.", ".mail.runboat."), "/")).await;
    assert!(mail.text().contains(b.name.as_str()), "the mail host too");
    assert_eq!(scales(&h, &b.name), 1);

    // Started: the page reloads at once (the Ingress is being switched).
    h.wait_status(&b.name, Some(BuildStatus::Started)).await;
    let a = h.send(at(&host, "/web")).await;
    assert!(a.text().contains("Ready") && a.text().contains("content=\"1\""), "{}", a.text());
    let metrics = h.send(get("/metrics")).await.text();
    assert_eq!(metric(&metrics, "runboat_wakes_total"), Some(1));
    assert_eq!(metric(&metrics, "runboat_wake_page_views_total"), Some(4));
    let recorded = h.wait_for(|_| h.state.wake().estimate("oca/web")).await;
    assert!(recorded.is_some(), "the wake-to-ready time is recorded");
    let metrics = h.send(get("/metrics")).await.text();
    assert_eq!(metric(&metrics, "runboat_wake_to_ready_seconds_count"), Some(1));

    // The next wake of this repo has an estimate.
    let b2 = h.add("oca/web", "16.0", Some(8), &sha(2), BuildStatus::Stopped, 1).await;
    let a = h.send(at(&host_of("oca/web", Some(8), 2), "/")).await;
    assert!(a.text().contains("Estimated time until ready: about"), "{}", a.text());
    assert_eq!(scales(&h, &b2.name), 1);
}

#[tokio::test]
async fn unknown_failed_and_board_hosts() {
    let h = Harness::build(settings_with(WAKE), crate::support::still(), ServerOptions::default())
        .await;
    // No such build: a 404 page with the board's link.
    let a = h.send(at("nothing-here.runboat.example.com", "/x")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.text().contains("href=\"https://runboat.example.com\""), "{}", a.text());
    // A failed build: its status and init log, and no start.
    let f = h.add("oca/web", "16.0", Some(9), &sha(3), BuildStatus::Failed, 0).await;
    for _ in 0..3 {
        let a = h.send(at(&host_of("oca/web", Some(9), 3), "/")).await;
        let html = a.text();
        assert!(html.contains("failed") && !html.contains("http-equiv"), "{html}");
        assert!(html.contains(&format!("/api/v1/builds/{}/init-log", f.name)), "{html}");
    }
    assert_eq!(scales(&h, &f.name), 0, "a failed build is never started");
    // The board's own host and other hosts reach the routes.
    let a = h.send(at("runboat.example.com", "/api/v1/status")).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h.send(at("10.0.0.7:8000", "/healthz")).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_wake_service_build_hosts_reach_the_routes() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", Some(7), &sha(1), BuildStatus::Stopped, 0).await;
    let a = h.send(at(&host_of("oca/web", Some(7), 1), "/api/v1/status")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(scales(&h, &b.name), 0);
}

#[tokio::test]
async fn a_server_whose_actions_need_the_admin_does_not_wake_anonymously() {
    let options = ServerOptions { admin_for_actions: true, ..ServerOptions::default() };
    let h = Harness::build(settings_with(WAKE), crate::support::still(), options).await;
    let b = h.add("oca/web", "16.0", Some(7), &sha(1), BuildStatus::Stopped, 0).await;
    let a = h.send(at(&host_of("oca/web", Some(7), 1), "/")).await;
    assert!(a.text().contains("admin credentials"), "{}", a.text());
    assert_eq!(scales(&h, &b.name), 0);
}

#[tokio::test]
async fn an_initializing_build_says_how_many_are_queued_before_it() {
    // Initialization paused: both builds wait, the older first.
    let settings = settings_with(&format!("{WAKE}\nmax_initializing = 0"));
    let h = Harness::build(settings, crate::support::still(), ServerOptions::default()).await;
    let first = h.add("oca/web", "16.0", Some(1), &sha(1), BuildStatus::Initializing, 0).await;
    let second = h.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Initializing, 5).await;
    let a = h.send(at(&host_of("oca/web", Some(2), 2), "/")).await;
    assert!(a.text().contains("queued behind 1 build(s)"), "{}", a.text());
    let a = h.send(at(&host_of("oca/web", Some(1), 1), "/")).await;
    assert!(a.text().contains("next in line"), "{}", a.text());
    assert_eq!(scales(&h, &first.name) + scales(&h, &second.name), 0);
}

#[tokio::test(start_paused = true)]
async fn an_initializing_build_shows_the_estimate_learnt_from_the_cluster() {
    let config = SimConfig {
        init_job: runboat_core::sim::JobScript::succeed_after(std::time::Duration::from_secs(240)),
        ..SimConfig::default()
    };
    let h = Harness::build(settings_with(WAKE), config, ServerOptions::default()).await;
    let commit =
        |n: u8| CommitInfo::new("oca/web", "16.0", Some(u64::from(n)), &sha(n)).expect("c");
    // Before any history: unknown.
    assert_eq!(h.handle.deploy_commit(commit(1)).await, Ok(runboat_core::CommandOutcome::Done));
    h.wait_status(&commit(1).build_name(), Some(BuildStatus::Initializing)).await;
    let a = h.send(at(&host_of("oca/web", Some(1), 1), "/")).await;
    assert!(a.text().contains("Estimated time until ready: unknown."), "{}", a.text());
    // A first initialization of this repository and branch took 4 min
    // (on the paused clock).
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    while h.handle.get(&commit(1).build_name()).map(|b| b.status) != Some(BuildStatus::Stopped) {
        assert!(tokio::time::Instant::now() < end, "the first build never initialized");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(h.handle.deploy_commit(commit(2)).await, Ok(runboat_core::CommandOutcome::Done));
    h.wait_status(&commit(2).build_name(), Some(BuildStatus::Initializing)).await;
    let a = h.send(at(&host_of("oca/web", Some(2), 2), "/")).await;
    assert!(a.text().contains("Estimated time until ready: about 4 min"), "{}", a.text());
}
