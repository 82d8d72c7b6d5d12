//! kubesim: a simulated Kubernetes API server spoken to over real HTTP, for
//! tests, the demo and benchmarks. It is a test double, not a cluster.
//!
//! Skeleton: the implementation is tracked by the kubesim issue.
