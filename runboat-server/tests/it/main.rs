//! runboat-server's integration tests, one binary. Router tests drive every
//! endpoint through `tower::ServiceExt::oneshot`, no socket, over the real
//! controller on core's simulated cluster (`support::Harness`; `fake` is a
//! fake GitHub); `controller` follows whole lifecycles. `e2e` runs the real
//! binary against kubesim through KubeCluster; `browser` drives the web UI in
//! headless Chromium (with RUNBOAT_SLOW_TESTS=1); `binary` checks what the
//! binary says when it cannot run; `abuse` attacks the real binary (issue
//! 15's cheap attacks, bounded) and reports for RELIABILITY.md.
//! `wake` checks the waiting page in-process; `wake_e2e` runs the real binary
//! on kubesim behind a stand-in ingress controller (Chromium part with
//! RUNBOAT_SLOW_TESTS=1).

mod abuse;
mod api;
mod binary;
mod browser;
mod controller;
mod e2e;
mod eta;
mod events;
mod fake;
mod leader;
mod openapi;
mod replicas;
mod serve;
mod supersede;
mod support;
mod ui;
mod wake;
mod wake_e2e;
mod webhook;
