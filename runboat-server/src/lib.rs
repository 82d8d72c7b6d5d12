//! The runboat HTTP server: REST API, GitHub webhook, server-sent events, web
//! UI and metrics, wired to the controller.
//!
//! Skeleton: the implementation is tracked by the runboat-server issue.
