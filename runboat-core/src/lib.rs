//! runboat's domain: builds, their derived status, the in-memory build index,
//! the scheduling policies, settings, and (later) the controller loop with the
//! `Cluster` and forge traits it drives.
//!
//! This crate does no I/O and depends on no transport (no kube, no HTTP):
//! everything here is plain data and pure functions, testable without a
//! cluster. Times are `jiff::Timestamp`, the type k8s-openapi uses.

pub mod build;
pub mod commit;
pub mod contract;
pub mod error;
pub mod forge;
pub mod index;
pub mod policy;
pub mod settings;
pub mod status;
#[cfg(test)]
mod testutil;

pub use build::{Build, BuildView};
pub use commit::CommitInfo;
pub use error::{Error, Result};
pub use index::{BuildIndex, IndexEvent, SearchFilters, SortOrder, StatusCounts};
pub use policy::{Action, Limits, decide};
pub use settings::{BuildRule, RepoRule, Secret, Settings};
pub use status::{BuildStatus, DeploymentFacts, InitStatus};
