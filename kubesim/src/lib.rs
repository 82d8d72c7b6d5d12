//! kubesim: a simulated Kubernetes API server spoken to over real HTTP, for
//! tests, the demo and benchmarks. It is a test double, not a cluster: it
//! keeps objects in memory, speaks the wire protocol of the API server for
//! what runboat uses (discovery, CRUD, patches, server-side apply, watches,
//! pod logs) and simulates the Deployment, Job and garbage-collection
//! controllers. It must not pretend to run containers or schedule anything,
//! and must not be used as a cluster in production.
//!
//! ```no_run
//! # async fn demo() -> kubesim::Result<()> {
//! use kubesim::{FailRule, JobRule, JobScript, KubeSim};
//! let sim = KubeSim::start_instant().await?;
//! let client = sim.client(); // a ready kube::Client
//! sim.add_job_rule(JobRule::by_label("runboat/job-kind", "initialize", JobScript::fail().with_log("boom\n")));
//! sim.fail_next(FailRule::new(1, 503).verb("list").resource("deployments").retry_after(1));
//! # drop(client);
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod config;
mod controllers;
mod error;
mod managed;
mod patch;
mod protobuf;
mod resources;
mod selector;
mod server;
mod sim;
mod status;
mod store;
mod table;
mod validate;

pub use auth::Access;
pub use config::{
    Config, ControlAction, ControllerConfig, FailRule, JobHook, JobOutcome, JobRule, JobScript,
};
pub use error::{Error, Result};
pub use sim::{Handle, KubeSim, kubeconfig_yaml, kubeconfig_yaml_with_token};
pub use status::ApiError;
pub use store::JobRecord;
