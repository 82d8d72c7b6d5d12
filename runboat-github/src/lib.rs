//! GitHub integration for runboat: webhook signature verification
//! ([`signature`]), webhook parsing into typed actions ([`webhook`]), a small
//! GitHub REST client ([`client`]) and the commit-status [`GitHubForge`]
//! the controller reports build progress through.
//!
//! What it must not do: decide anything about builds (it only translates
//! GitHub events into [`WebhookAction`]s and statuses into REST calls), make
//! the controller wait on GitHub (statuses are queued and sent in the
//! background), or let a secret (webhook secret, API token) reach a log, an
//! error message or a `Debug` output.

pub mod client;
pub mod error;
pub mod forge;
pub mod signature;
pub mod webhook;

pub use client::{ClientConfig, GitHubClient, GitHubToken, PullRequestInfo, RetryPolicy};
pub use error::{ClientError, Error, PayloadError, Result, SignatureError, error_chain};
pub use forge::GitHubForge;
pub use signature::WebhookSecret;
pub use webhook::{WebhookAction, receive};
