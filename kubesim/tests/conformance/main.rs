//! Conformance tests: kube-rs clients (and kubectl, when on PATH) against
//! kubesim over real HTTP. Where the real API server's behaviour is known,
//! the tests assert exactly that: status codes, `Status.reason`, event order.

mod binary;
mod controllers;
mod crud;
mod faults;
mod kubectl;
mod patch;
pub(crate) mod python;
mod rbac;
mod watch;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::Status;
use kubesim::{Config, ControllerConfig, KubeSim};
use serde_json::json;

/// A server with instant controllers and quick bookmarks.
pub(crate) async fn sim() -> KubeSim {
    sim_with(ControllerConfig::instant()).await
}

pub(crate) async fn sim_with(controllers: ControllerConfig) -> KubeSim {
    let config = Config {
        controllers,
        bookmark_interval: Duration::from_millis(100),
        namespaces: vec!["default".into(), "ns".into()],
        ..Config::default()
    };
    KubeSim::start_with(config).await.expect("kubesim starts")
}

/// A client that does not retry 429/503/504 (kube retries them by default),
/// to observe injected faults.
pub(crate) fn no_retry_client(sim: &KubeSim) -> kube::Client {
    let mut config = kube::Config::new(sim.url().parse().expect("url"));
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// The Status of a failed API call.
pub(crate) fn status_of<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub(crate) fn deployment(name: &str, build: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"runboat/build": build}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"runboat/build": build}},
            "template": {
                "metadata": {"labels": {"runboat/build": build}},
                "spec": {"containers": [
                    {"name": "odoo", "image": "odoo:17", "env": [{"name": "A", "value": "1"}]},
                    {"name": "mailhog", "image": "mailhog:1"}
                ]}
            }
        }
    }))
    .expect("valid deployment")
}

pub(crate) fn job(name: &str, build: &str, kind: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"runboat/build": build, "runboat/job-kind": kind}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"runboat/build": build, "runboat/job-kind": kind}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "init", "image": "odoo:17"}]}
            }
        }
    }))
    .expect("valid job")
}

pub(crate) fn configmap(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .expect("valid configmap")
}

pub(crate) const WAIT: Duration = Duration::from_secs(10);
