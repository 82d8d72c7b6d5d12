//! Integration tests of runboat-github: webhook fixtures, and the REST
//! client and forge against a mock GitHub on 127.0.0.1.

mod client;
mod deployments;
mod fixtures;
mod forge;
mod mock;
