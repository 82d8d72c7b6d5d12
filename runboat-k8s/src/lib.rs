//! `Cluster` on a real Kubernetes API server (kube-rs), and kubefiles rendering.
//!
//! Skeleton: the implementation is tracked by the runboat-k8s issue. Nothing
//! here works yet, and nothing pretends to.
