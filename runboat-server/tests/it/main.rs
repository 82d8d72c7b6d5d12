//! Router tests: every endpoint through `tower::ServiceExt::oneshot`, no
//! socket. `fake` is an in-memory backend whose commands change the index
//! at once; `controller` drives the real controller over the simulated
//! cluster.

mod api;
mod binary;
mod browser;
mod controller;
mod e2e;
mod events;
mod fake;
mod serve;
mod support;
mod ui;
mod webhook;
