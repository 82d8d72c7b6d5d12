//! `cargo bench -p runboat-k8s --bench cluster`: `KubeCluster` against an
//! in-process kubesim.
//!
//! - Watch ingest: 10,000 runboat Deployments listed (one `Relisted`), then
//!   30,000 changes (new Deployments created in kubesim's store while the
//!   stream is not polled) streamed through the watcher mapping; events/s of
//!   the listing and of draining the changes.
//! - Render + apply: `apply_kubefiles` in mode `deployment` (render, dry run
//!   of the set, apply of every object) with the embedded native kubefiles
//!   and with the kustomize variant (`kubectl kustomize`, when kubectl is on
//!   PATH); applies/s.
//!
//! A plain bench binary (one run each, figures printed), so the whole run
//! takes well under a minute.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kubesim::{ControllerConfig, KubeSim};
use runboat_core::{Cluster, ClusterEvent, CommitInfo, KubefilesMode, Settings};
use runboat_k8s::KubeCluster;
use serde_json::{Value, json};

const NS: &str = "runboat-builds";

fn settings(extra: &str) -> Arc<Settings> {
    Arc::new(
        Settings::from_toml_str(&format!(
            r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "{NS}"
build_domain = "runboat.example.com"
{extra}

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }}]
"#
        ))
        .expect("settings"),
    )
}

async fn sim() -> KubeSim {
    KubeSim::start_with(kubesim::Config {
        namespaces: vec!["default".into(), NS.into()],
        controllers: ControllerConfig::none(),
        ..kubesim::Config::default()
    })
    .await
    .expect("kubesim")
}

fn deployment(i: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("b{i}-odoo"), "labels": {"runboat/build": format!("b{i}")},
                      "annotations": {"runboat/init-status": "todo", "runboat/repo": "oca/x",
                                      "runboat/target-branch": "16.0", "runboat/pr": "",
                                      "runboat/git-commit": format!("{i:040x}")}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"runboat/build": format!("b{i}")}},
                 "template": {"metadata": {"labels": {"runboat/build": format!("b{i}")}},
                              "spec": {"containers": [{"name": "odoo", "image": "odoo"}]}}},
    })
}

async fn watch_ingest(listed: usize, changes: usize) {
    let sim = sim().await;
    let h = sim.handle();
    for i in 0..listed {
        h.create("deployments", NS, deployment(i)).expect("seed");
    }
    let cluster = KubeCluster::new(sim.client(), settings("")).await.expect("cluster");
    let start = Instant::now();
    let mut events = cluster.deployment_events();
    let Some(ClusterEvent::Relisted(all)) = events.next().await else { panic!("a listing") };
    assert_eq!(all.len(), listed);
    let listing = start.elapsed();
    // The changes are made while the stream is not polled, so what is timed
    // is kubesim serving the backlog and the watcher mapping ingesting it,
    // not the producer.
    let producing = Instant::now();
    for i in listed..listed + changes {
        h.create("deployments", NS, deployment(i)).expect("change");
    }
    let produce_time = producing.elapsed();
    let streaming = Instant::now();
    let mut received = 0;
    while received < changes {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
            Ok(Some(ClusterEvent::Applied(_))) => received += 1,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(_) => panic!("stream stalled at {received}"),
        }
    }
    let stream_time = streaming.elapsed();
    println!(
        "watch ingest: listed {listed} in {:.0} ms ({:.0} objects/s); {changes} changes (made in {:.0} ms) streamed in {:.0} ms ({:.0} events/s); overall {:.0} events/s",
        listing.as_secs_f64() * 1e3,
        listed as f64 / listing.as_secs_f64(),
        produce_time.as_secs_f64() * 1e3,
        stream_time.as_secs_f64() * 1e3,
        changes as f64 / stream_time.as_secs_f64(),
        (listed + changes) as f64 / (listing + stream_time).as_secs_f64(),
    );
}

async fn render_apply(label: &str, extra: &str, builds: u64) {
    let sim = sim().await;
    let cluster = KubeCluster::new(sim.client(), settings(extra)).await.expect("cluster");
    let commit = |n: u64| {
        CommitInfo::new("oca/mis-builder", "16.0", Some(n + 1), &format!("{n:040x}"))
            .expect("commit")
    };
    // Warm the discovery cache.
    cluster
        .apply_kubefiles(&commit(0).build_name(), &commit(0), KubefilesMode::Deployment)
        .await
        .expect("apply");
    let start = Instant::now();
    for n in 1..=builds {
        cluster
            .apply_kubefiles(&commit(n).build_name(), &commit(n), KubefilesMode::Deployment)
            .await
            .expect("apply");
    }
    let elapsed = start.elapsed();
    println!(
        "render+apply {label}: {builds} builds in {:.0} ms ({:.1} ms/build, {:.1} builds/s)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3 / builds as f64,
        builds as f64 / elapsed.as_secs_f64(),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        if quick {
            watch_ingest(100, 300).await;
            render_apply("native", "", 2).await;
            return;
        }
        watch_ingest(10_000, 30_000).await;
        render_apply("native", "", 100).await;
        let kustomize = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kubefiles/kustomize");
        if runboat_k8s::check_kustomize_available().await.is_ok() {
            let extra =
                format!("build_default_kubefiles_path = {:?}", kustomize.display().to_string());
            render_apply("kustomize", &extra, 20).await;
        } else {
            println!("render+apply kustomize: skipped (no kubectl on PATH)");
        }
    });
}
