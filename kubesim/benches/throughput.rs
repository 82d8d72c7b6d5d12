//! List and watch throughput of kubesim over real HTTP, at 10,000 and
//! 100,000 stored Deployments (runboat-sized, about 1.5 KB of JSON each).
//!
//! The client reads raw bytes from a TCP socket and only counts them (and
//! the event lines of a watch), so the figures are the server's, not a JSON
//! decoder's. Criterion reports objects/s; the body size is printed to
//! stderr once per case so MB/s follows from the time.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubesim::{Config, ControllerConfig, KubeSim};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn deployment(i: usize) -> serde_json::Value {
    let build = format!("b{i:06}");
    json!({
        "metadata": {
            "name": format!("{build}-odoo"),
            "labels": {"runboat/build": build, "app.kubernetes.io/managed-by": "runboat"},
            "annotations": {
                "runboat/repo": "oca/server-tools", "runboat/target-branch": "17.0", "runboat/pr": "1234",
                "runboat/git-commit": "0123456789abcdef0123456789abcdef01234567", "runboat/init-status": "succeeded",
                "runboat/last-scaled": "2025-01-01T00:00:00Z",
            },
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"runboat/build": build}},
            "template": {
                "metadata": {"labels": {"runboat/build": build}, "annotations": {"kubectl.kubernetes.io/default-container": "odoo"}},
                "spec": {
                    "containers": [
                        {"name": "odoo", "image": "ghcr.io/oca/oca-ci/py3.10-odoo17.0:latest",
                         "env": [{"name": "PGHOST", "value": "postgres"}, {"name": "PGDATABASE", "value": build},
                                 {"name": "ADDONS_DIR", "value": "/mnt/data/odoo-addons-dir"}],
                         "ports": [{"containerPort": 8069}],
                         "volumeMounts": [{"name": "data", "mountPath": "/mnt/data"}]},
                        {"name": "mailhog", "image": "mailhog/mailhog", "ports": [{"containerPort": 8025}]}
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("{build}-data")}}]
                }
            }
        }
    })
}

/// Sends a GET and reads the whole response, or until `lines` newlines
/// were seen in it. Returns the bytes read.
async fn fetch(addr: &str, path: &str, lines: Option<usize>) -> usize {
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: kubesim\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    let mut seen = 0;
    let mut last = 0u8;
    loop {
        let n = sock.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        total += n;
        if let Some(want) = lines {
            // An event line ends in "}\n"; header and chunk lines end in "\r\n".
            for &b in &buf[..n] {
                if b == b'\n' && last == b'}' {
                    seen += 1;
                }
                last = b;
            }
            if seen >= want {
                break;
            }
        }
    }
    total
}

/// The process's resident memory, from /proc (Linux), for the report.
fn resident_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    sim: KubeSim,
    addr: String,
    /// The resourceVersion before the objects were created.
    start_rv: u64,
}

fn fixture(count: usize, namespaces: usize) -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = rt.block_on(async {
        let config = Config {
            controllers: ControllerConfig::none(),
            history_window: 2 * count + 10,
            ..Config::default()
        };
        KubeSim::start_with(config).await.expect("kubesim")
    });
    for n in 0..namespaces {
        sim.create_namespace(&format!("ns{n}")).expect("namespace");
    }
    let start_rv = sim.resource_version();
    let started = std::time::Instant::now();
    for i in 0..count {
        sim.create("deployments", &format!("ns{}", i % namespaces), deployment(i)).expect("seeded");
    }
    eprintln!(
        "seeded {count} deployments in {:?} ({:.0} creates/s), resident memory {}",
        started.elapsed(),
        count as f64 / started.elapsed().as_secs_f64(),
        resident_memory()
    );
    let addr = sim.url().trim_start_matches("http://").to_string();
    Fixture { rt, sim, addr, start_rv }
}

fn report(name: &str, f: &Fixture, path: &str, lines: Option<usize>, objects: usize) {
    let started = std::time::Instant::now();
    let bytes = f.rt.block_on(fetch(&f.addr, path, lines));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {objects} objects, {:.1} MB in {:.1} ms: {:.0} objects/s, {:.0} MB/s (single run)",
        bytes as f64 / 1e6,
        secs * 1e3,
        objects as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}

fn bench_at(c: &mut Criterion, count: usize) {
    // 10 namespaces: a namespaced list returns a tenth of the objects.
    let f = fixture(count, 10);
    let mut group = c.benchmark_group(format!("kubesim_{count}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));

    let per_ns = count / 10;
    let ns_path = "/apis/apps/v1/namespaces/ns0/deployments";
    report(&format!("list namespaced ({count} stored)"), &f, ns_path, None, per_ns);
    group.throughput(Throughput::Elements(per_ns as u64));
    group.bench_function("list_namespaced", |b| {
        b.iter(|| f.rt.block_on(fetch(&f.addr, ns_path, None)))
    });

    let all_path = "/apis/apps/v1/deployments";
    report(&format!("list all ({count} stored)"), &f, all_path, None, count);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("list_all", |b| b.iter(|| f.rt.block_on(fetch(&f.addr, all_path, None))));

    let selector_path = "/apis/apps/v1/deployments?labelSelector=runboat%2Fbuild%3Db000042";
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("list_label_selector_scan", |b| {
        b.iter(|| f.rt.block_on(fetch(&f.addr, selector_path, None)))
    });

    // A watch replaying history: up to 30,000 events from the start.
    let events = count.min(30_000);
    let watch_path = format!("/apis/apps/v1/deployments?watch=true&resourceVersion={}", f.start_rv);
    report(&format!("watch replay ({count} stored)"), &f, &watch_path, Some(events), events);
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("watch_replay", |b| {
        b.iter(|| f.rt.block_on(fetch(&f.addr, &watch_path, Some(events))))
    });
    group.finish();
    drop(f.sim);
}

fn benches(c: &mut Criterion) {
    bench_at(c, 10_000);
    bench_at(c, 100_000);
}

criterion_group!(throughput, benches);
criterion_main!(throughput);
