//! Decode of one watch event as kube's watcher does it (`serde_json` into
//! `WatchEvent<K>`), with `K` the full `k8s_openapi` type versus runboat's
//! slim watch type, on an object as the API server sends it for the default
//! kubefiles (containers, probes, resources, volumes, status conditions,
//! `managedFields`).
//!
//! `cargo bench -p runboat-k8s --bench decode -- decode`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::core::WatchEvent;
use runboat_k8s::cluster::slim::{SlimDeployment, SlimJob};
use serde::de::DeserializeOwned;

const DEPLOYMENT: &str = include_str!("../src/cluster/testdata/deployment.json");
const JOB: &str = include_str!("../src/cluster/testdata/job.json");

/// The bytes of a MODIFIED watch event of `object`, compact and with
/// `type` first as on the wire (serde decodes the object of an adjacently
/// tagged `WatchEvent` in place only when the tag comes first).
fn event(object: &str) -> Vec<u8> {
    let object: serde_json::Value = serde_json::from_str(object).expect("fixture is JSON");
    format!(r#"{{"type":"MODIFIED","object":{object}}}"#).into_bytes()
}

fn decode_one<K: DeserializeOwned>(bytes: &[u8]) -> WatchEvent<K> {
    serde_json::from_slice(bytes).expect("decodes")
}

fn decode(c: &mut Criterion) {
    for (name, object) in [("deployment", DEPLOYMENT), ("job", JOB)] {
        let bytes = event(object);
        let mut group = c.benchmark_group(format!("decode_{name}_watch_event"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        if name == "deployment" {
            group.bench_function("full", |b| {
                b.iter(|| decode_one::<Deployment>(black_box(&bytes)));
            });
            group.bench_function("slim", |b| {
                b.iter(|| decode_one::<SlimDeployment>(black_box(&bytes)));
            });
        } else {
            group.bench_function("full", |b| b.iter(|| decode_one::<Job>(black_box(&bytes))));
            group.bench_function("slim", |b| b.iter(|| decode_one::<SlimJob>(black_box(&bytes))));
        }
        group.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
