//! Integration tests of runboat-k8s, one binary.

mod support;

mod adopt;

mod cluster;
mod contract;
mod default_kubefiles;
mod injection;
mod kustomize;
mod lease;
mod lifecycle;
mod native;
mod original;
mod scripts;
