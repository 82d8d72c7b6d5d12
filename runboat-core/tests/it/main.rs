//! runboat-core integration tests: the controller against the simulated
//! cluster (feature `testing`), on tokio's paused clock.

mod common;
mod controller_sim;
mod leadership;
mod simulation;
