//! runboat on a real Kubernetes cluster: kubefiles rendering (native minijinja
//! templates or kustomize directories) with runboat's contract stamped on every
//! object, and [`KubeCluster`], runboat-core's `Cluster` on kube-rs.
//!
//! Rendering does no Kubernetes API I/O: it turns kubefiles and a [`RenderContext`]
//! into JSON objects; applying them is the cluster's job. Nothing here decides
//! *when* to render or apply: that is runboat-core's controller.

pub mod cluster;
mod error;
pub mod lease;
pub mod render;

pub use cluster::KubeCluster;
pub use error::{Error, Result};
pub use lease::{LeaderElector, Leadership, LeaseConfig};
pub use render::{Format, Kubefiles, RenderContext, check_kubectl_at, check_kustomize_available};
