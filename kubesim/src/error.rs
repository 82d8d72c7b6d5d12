//! Errors of the kubesim library API.

use std::net::SocketAddr;

use crate::status::ApiError;

/// What can go wrong starting or driving a simulated server from Rust.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build a kube client: {message}")]
    Client { message: String },
    #[error("the API refused the request")]
    Api {
        #[source]
        source: ApiError,
    },
    #[error("unknown resource {resource}")]
    UnknownResource { resource: String },
    #[error("invalid JSON")]
    Json {
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
