//! runboat's domain: builds, their derived status, the in-memory build index,
//! the scheduling policies, settings, and the controller loop with the
//! [`Cluster`] and forge traits it drives.
//!
//! This crate does no I/O and depends on no transport (no kube, no HTTP):
//! everything here is plain data, pure functions, and the async
//! [`controller`] that talks to the cluster only through the [`Cluster`]
//! trait. Times are `jiff::Timestamp`, the type k8s-openapi uses.
//!
//! Feature `testing` adds [`sim`], an in-memory simulated cluster for tests
//! and benchmarks (of this crate and of others).

pub mod build;
pub mod cluster;
pub mod commit;
pub mod contract;
pub mod controller;
pub mod error;
pub mod forge;
pub mod index;
pub mod policy;
pub mod progress;
pub mod rng;
pub mod settings;
#[cfg(feature = "testing")]
pub mod sim;
pub mod status;
#[cfg(test)]
mod testutil;

pub use build::{Build, Route, wire_status};
pub use cluster::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, JobFacts, JobKind, JobPhase, KubefilesMode,
    LogFollow, LogSource, LogTail,
};
pub use commit::CommitInfo;
pub use controller::{
    ActionCount, CommandError, CommandOutcome, CommandResult, Controller, ControllerConfig,
    ControllerHandle, ControllerStats, IgnoredReason, Late, RetryPolicy,
};
pub use error::{Error, Result};
pub use index::{BuildIndex, IndexEvent, SearchFilters, SortOrder, StatusCounts};
pub use policy::{Limits, Step, Task, decide};
pub use settings::{BuildRule, RepoRule, Secret, Settings};
pub use status::{BuildStatus, DeploymentFacts, InitStatus};
