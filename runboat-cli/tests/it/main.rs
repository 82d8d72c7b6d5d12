//! The real `runboat` binary against a real runboat-server router served on
//! 127.0.0.1 in-process, over the real controller and runboat-core's
//! simulated cluster (short simulated durations, real clock).

mod commands;
mod errors;
mod support;
mod watch;
