//! Load benchmark of the HTTP interface with 10,000 builds:
//! `cargo bench -p runboat-server --bench load`.
//!
//! Method: the real controller over runboat-core's simulated cluster,
//! preloaded with 10,000 stopped builds (100 repos × 100 builds); requests
//! go through the whole axum router in-process (`oneshot`, no socket), one
//! at a time, timing each request including reading its body. Then 1,000
//! event-stream subscribers (each on one repo, so each gets a 100-build
//! snapshot first) wait while a new Deployment appears in the simulated
//! cluster; the delay is measured from the cluster call to each
//! subscriber's reading of the event off its response body.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use jiff::Timestamp;
use runboat_core::forge::NoForge;
use runboat_core::sim::{SimCluster, SimConfig};
use runboat_core::{Cluster, CommitInfo, Controller, ControllerConfig, InitStatus, Settings};
use runboat_server::{AppState, ServerOptions, app};
use tower::ServiceExt;

const REPOS: usize = 100;
const PER_REPO: usize = 100;
const SUBSCRIBERS: usize = 1000;
const ROUNDS: usize = 20;

fn settings() -> Settings {
    Settings::from_toml_str(
        r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "bench"
build_domain = "bench.example.com"
max_deployed = 1000000
max_started = 1000000

[[repos]]
repo = ".*"
branch = ".*"
builds = [{ image = "odoo:16" }]
"#,
    )
    .unwrap()
}

fn sha(i: usize) -> String {
    format!("{:040x}", i as u128 * 7919 + 1)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<Duration>, total: Duration) {
    samples.sort();
    println!(
        "{label:<42} n={:<6} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        samples.len(),
        samples.len() as f64 / total.as_secs_f64(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

async fn bench_get(router: &axum::Router, uri: &str, n: usize) {
    for _ in 0..n.min(50) {
        let resp = router.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await;
        resp.unwrap().into_body().collect().await.unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let resp = router.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await;
        let resp = resp.unwrap();
        assert!(resp.status().is_success(), "{uri}: {}", resp.status());
        resp.into_body().collect().await.unwrap();
        samples.push(t.elapsed());
    }
    report(&format!("GET {uri}"), samples, start.elapsed());
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let settings = Arc::new(settings());
    let sim = SimCluster::new(SimConfig::default());
    let created = Timestamp::from_second(1_700_000_000).unwrap();
    let t = Instant::now();
    for r in 0..REPOS {
        for b in 0..PER_REPO {
            let pr = if b % 2 == 0 { None } else { Some(b as u64) };
            let branch = if b % 4 < 2 { "16.0" } else { "17.0" };
            let commit =
                CommitInfo::new(&format!("bench/repo-{r:03}"), branch, pr, &sha(r * PER_REPO + b))
                    .unwrap();
            sim.insert_deployment(&commit, InitStatus::Succeeded, 0, created);
        }
    }
    let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
    let handle = Controller::spawn(
        cluster,
        Arc::new(NoForge),
        settings.clone(),
        ControllerConfig::default(),
    );
    handle.ready().await;
    while handle.with_index(|i| i.len()) < REPOS * PER_REPO {
        tokio::task::yield_now().await;
    }
    println!("{} builds loaded in {:?}", REPOS * PER_REPO, t.elapsed());
    let state = AppState::new(handle.clone(), None, ServerOptions::default());
    let router = app(state.clone());

    bench_get(&router, "/api/v1/builds?repo=bench/repo-042", 2000).await;
    bench_get(&router, "/api/v1/status", 5000).await;
    bench_get(&router, "/api/v1/builds?status=stopped&repo=bench/repo-007", 2000).await;
    bench_get(&router, "/api/v1/builds", 50).await;

    // SSE fan-out.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let targets: Arc<Vec<String>> = Arc::new(
        (0..ROUNDS)
            .map(|k| {
                CommitInfo::new(
                    "bench/repo-007",
                    "16.0",
                    Some(10_000 + k as u64),
                    &sha(900_000 + k),
                )
                .unwrap()
                .build_name()
            })
            .collect(),
    );
    for _ in 0..SUBSCRIBERS {
        let router = router.clone();
        let tx = tx.clone();
        let ready_tx = ready_tx.clone();
        let targets = targets.clone();
        tokio::spawn(async move {
            let req = Request::get("/api/v1/build-events?repo=bench/repo-007")
                .body(Body::empty())
                .unwrap();
            let mut body = router.oneshot(req).await.unwrap().into_body();
            let mut buf = String::new();
            let mut snapshot = 0;
            let mut next_round = 0;
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                let now = Instant::now();
                buf.push_str(std::str::from_utf8(&data).unwrap());
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    if !event.starts_with("data:") {
                        continue;
                    }
                    if snapshot < PER_REPO {
                        snapshot += 1;
                        if snapshot == PER_REPO {
                            let _ = ready_tx.send(());
                        }
                        continue;
                    }
                    if next_round < ROUNDS && event.contains(&targets[next_round]) {
                        let _ = tx.send((next_round, now));
                        next_round += 1;
                    }
                }
                if next_round == ROUNDS {
                    break;
                }
            }
        });
    }
    drop(ready_tx);
    let t = Instant::now();
    for _ in 0..SUBSCRIBERS {
        ready_rx.recv().await.unwrap();
    }
    println!(
        "{SUBSCRIBERS} subscribers connected, snapshots of {PER_REPO} read in {:?}",
        t.elapsed()
    );
    let mut samples = Vec::with_capacity(SUBSCRIBERS * ROUNDS);
    let total = Instant::now();
    for k in 0..ROUNDS {
        let commit =
            CommitInfo::new("bench/repo-007", "16.0", Some(10_000 + k as u64), &sha(900_000 + k))
                .unwrap();
        let t0 = Instant::now();
        sim.insert_deployment(&commit, InitStatus::Succeeded, 0, created);
        for _ in 0..SUBSCRIBERS {
            let (round, at) = rx.recv().await.unwrap();
            assert_eq!(round, k);
            samples.push(at.duration_since(t0));
        }
    }
    report(&format!("SSE cluster change -> {SUBSCRIBERS} subscribers"), samples, total.elapsed());
    handle.shutdown().await;
}
