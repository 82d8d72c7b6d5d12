//! Init status (stored in an annotation) and build status (derived from the
//! observed Deployment, never stored), and the plain facts they come from.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Progress of a build's initialization, as the `runboat/init-status`
/// annotation stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitStatus {
    /// To initialize as soon as there is capacity.
    Todo,
    /// The initialization job is running.
    Started,
    /// The initialization job succeeded.
    Succeeded,
    /// The initialization job failed.
    Failed,
}

impl InitStatus {
    /// Every init status, in declaration order.
    pub const ALL: [InitStatus; 4] =
        [InitStatus::Todo, InitStatus::Started, InitStatus::Succeeded, InitStatus::Failed];

    /// The annotation string (`todo`, `started`, `succeeded`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            InitStatus::Todo => "todo",
            InitStatus::Started => "started",
            InitStatus::Succeeded => "succeeded",
            InitStatus::Failed => "failed",
        }
    }

    /// Position in [`InitStatus::ALL`], for counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for InitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InitStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        InitStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::UnknownInitStatus { value: s.to_owned() })
    }
}

/// What a build is doing, derived from its Deployment by
/// [`BuildStatus::derive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// To initialize, or initializing.
    Initializing,
    /// Initialization failed.
    Failed,
    /// Initialized, 0 replicas.
    Stopped,
    /// 0 desired replicas but some still running.
    Stopping,
    /// Scaling up.
    Starting,
    /// Running.
    Started,
    /// Deleted, waiting for its cleanup (the finalizer keeps it).
    Undeploying,
}

impl BuildStatus {
    /// Every status, in declaration order.
    pub const ALL: [BuildStatus; 7] = [
        BuildStatus::Initializing,
        BuildStatus::Failed,
        BuildStatus::Stopped,
        BuildStatus::Stopping,
        BuildStatus::Starting,
        BuildStatus::Started,
        BuildStatus::Undeploying,
    ];

    /// The wire name (`initializing`, `failed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Initializing => "initializing",
            BuildStatus::Failed => "failed",
            BuildStatus::Stopped => "stopped",
            BuildStatus::Stopping => "stopping",
            BuildStatus::Starting => "starting",
            BuildStatus::Started => "started",
            BuildStatus::Undeploying => "undeploying",
        }
    }

    /// Position in [`BuildStatus::ALL`], for counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Statuses a build may be undeployed from by the limits policy
    /// (stopped, stopping or failed).
    pub fn is_evictable(self) -> bool {
        matches!(self, BuildStatus::Stopped | BuildStatus::Stopping | BuildStatus::Failed)
    }

    /// Derives the status by SPEC's rules:
    ///
    /// | condition                                            | status         |
    /// |------------------------------------------------------|----------------|
    /// | deletion timestamp set                               | `undeploying`  |
    /// | init `todo` or `started`                             | `initializing` |
    /// | init `failed`                                        | `failed`       |
    /// | init `succeeded`, spec 0, status replicas > 0        | `stopping`     |
    /// | init `succeeded`, spec 0, status replicas 0          | `stopped`      |
    /// | init `succeeded`, spec > 0, available == spec        | `started`      |
    /// | init `succeeded`, spec > 0, available != spec        | `starting`     |
    ///
    /// Missing replica counts count as 0 (missing available replicas as
    /// "unknown", never equal to a positive spec), as in the original.
    pub fn derive(
        init_status: InitStatus,
        deleting: bool,
        spec_replicas: Option<i32>,
        status_replicas: Option<i32>,
        available_replicas: Option<i32>,
    ) -> BuildStatus {
        if deleting {
            return BuildStatus::Undeploying;
        }
        match init_status {
            InitStatus::Todo | InitStatus::Started => BuildStatus::Initializing,
            InitStatus::Failed => BuildStatus::Failed,
            InitStatus::Succeeded => {
                let spec = spec_replicas.unwrap_or(0);
                if spec <= 0 {
                    if status_replicas.unwrap_or(0) > 0 {
                        BuildStatus::Stopping
                    } else {
                        BuildStatus::Stopped
                    }
                } else if available_replicas == Some(spec) {
                    BuildStatus::Started
                } else {
                    BuildStatus::Starting
                }
            }
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BuildStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::UnknownBuildStatus { value: s.to_owned() })
    }
}

/// What was observed of a build's Deployment: plain data, so the status
/// rules are testable without Kubernetes types. runboat-k8s fills it from a
/// `k8s_openapi` Deployment (whose timestamps are jiff `Timestamp`s and
/// whose replica counts are `i32`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.annotations`: at least those of the contract
    /// (`runboat/…`); runboat-k8s's watches keep only those.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.replicas`.
    pub spec_replicas: Option<i32>,
    /// `status.replicas`.
    pub status_replicas: Option<i32>,
    /// `status.availableReplicas`.
    pub available_replicas: Option<i32>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<Timestamp>,
    /// `metadata.creationTimestamp`.
    pub creation_timestamp: Option<Timestamp>,
    /// When the `Available` condition last became `True` (`None` while it
    /// is not): with the last scale to 1, how long a start took.
    pub available_since: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_status_strings_round_trip() {
        for st in InitStatus::ALL {
            assert_eq!(st.as_str().parse::<InitStatus>().expect("parse"), st);
            assert_eq!(serde_json::to_value(st).expect("json"), st.as_str());
        }
        assert!(matches!(
            "Todo".parse::<InitStatus>(),
            Err(Error::UnknownInitStatus { value }) if value == "Todo"
        ));
    }

    #[test]
    fn build_status_strings_round_trip() {
        for st in BuildStatus::ALL {
            assert_eq!(st.as_str().parse::<BuildStatus>().expect("parse"), st);
            assert_eq!(serde_json::to_value(st).expect("json"), st.as_str());
        }
        assert!("running".parse::<BuildStatus>().is_err());
    }

    // SPEC's status table, row by row.
    #[test]
    fn deletion_timestamp_means_undeploying_whatever_else() {
        for init in InitStatus::ALL {
            assert_eq!(
                BuildStatus::derive(init, true, Some(1), Some(1), Some(1)),
                BuildStatus::Undeploying
            );
        }
    }

    #[test]
    fn todo_or_started_init_means_initializing() {
        for init in [InitStatus::Todo, InitStatus::Started] {
            assert_eq!(
                BuildStatus::derive(init, false, Some(0), None, None),
                BuildStatus::Initializing
            );
            assert_eq!(
                BuildStatus::derive(init, false, Some(1), Some(1), Some(1)),
                BuildStatus::Initializing
            );
        }
    }

    #[test]
    fn failed_init_means_failed() {
        assert_eq!(
            BuildStatus::derive(InitStatus::Failed, false, Some(0), None, None),
            BuildStatus::Failed
        );
        assert_eq!(
            BuildStatus::derive(InitStatus::Failed, false, Some(1), Some(1), Some(1)),
            BuildStatus::Failed
        );
    }

    #[test]
    fn succeeded_zero_replicas_is_stopping_while_pods_remain_then_stopped() {
        let s = InitStatus::Succeeded;
        assert_eq!(BuildStatus::derive(s, false, Some(0), Some(1), Some(1)), BuildStatus::Stopping);
        assert_eq!(BuildStatus::derive(s, false, Some(0), Some(0), None), BuildStatus::Stopped);
        assert_eq!(BuildStatus::derive(s, false, Some(0), None, None), BuildStatus::Stopped);
        assert_eq!(BuildStatus::derive(s, false, None, None, None), BuildStatus::Stopped);
    }

    #[test]
    fn succeeded_with_replicas_is_started_when_all_available_else_starting() {
        let s = InitStatus::Succeeded;
        assert_eq!(BuildStatus::derive(s, false, Some(1), Some(1), Some(1)), BuildStatus::Started);
        assert_eq!(BuildStatus::derive(s, false, Some(1), Some(1), Some(0)), BuildStatus::Starting);
        assert_eq!(BuildStatus::derive(s, false, Some(1), None, None), BuildStatus::Starting);
        assert_eq!(BuildStatus::derive(s, false, Some(2), Some(2), Some(1)), BuildStatus::Starting);
    }
}
