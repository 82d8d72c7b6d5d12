//! runboat's domain: builds, their derived status, the in-memory build index,
//! the scheduling policies, settings, and (later) the controller loop with the
//! `Cluster` and forge traits it drives.
//!
//! This crate does no I/O and depends on no transport (no kube, no HTTP).

pub mod forge;
