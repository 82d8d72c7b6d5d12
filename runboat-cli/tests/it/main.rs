//! The real `runboat` binary against a real runboat-server router served on
//! 127.0.0.1 in-process, over the real controller and runboat-core's
//! simulated cluster (short simulated durations, real clock); and `kube`:
//! against the server's production wiring on runboat-k8s's `KubeCluster`
//! over kubesim.

mod commands;
mod errors;
mod kube;
mod support;
mod watch;
