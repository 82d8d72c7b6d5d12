//! GitHub integration: webhook signature verification and parsing, the REST
//! client, and the commit-status forge used by the controller.
//!
//! Skeleton: the implementation is tracked by the runboat-github issue.
