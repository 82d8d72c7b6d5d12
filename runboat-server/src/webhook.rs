//! `POST /webhooks/github`: GitHub deliveries to controller commands.
//!
//! Answers: 401 for a missing or wrong signature (when a secret is
//! configured), 400 for a malformed delivery, 413 for an oversized body,
//! 202 with `{"detail": ...}` when a command was given to the controller,
//! 200 when the delivery was a ping or needed nothing.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runboat_core::SearchFilters;
use runboat_github::webhook::{EVENT_HEADER, MAX_BODY_BYTES};
use runboat_github::{PayloadError, WebhookAction};
use serde_json::json;

use crate::AppState;
use crate::error::{Accepted, ApiError, Subject, chain, command};

const SIGNATURE_HEADER: &str = runboat_github::signature::SIGNATURE_HEADER;

/// The handler.
pub(crate) async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "webhook body is over the {MAX_BODY_BYTES} bytes limit"
            ))
        } else {
            ApiError::BadRequest(format!("cannot read the webhook body: {}", e.body_text()))
        }
    })?;
    let event = headers
        .get(EVENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("missing {EVENT_HEADER} header")))?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let action =
        runboat_github::receive(state.webhook_secret(), event, signature, &body).map_err(|e| {
            match e {
                runboat_github::Error::Signature(e) => {
                    tracing::warn!(event, error = %e, "webhook refused");
                    ApiError::BadSignature(e.to_string())
                }
                runboat_github::Error::Payload(e @ PayloadError::TooLarge { .. }) => {
                    ApiError::PayloadTooLarge(e.to_string())
                }
                runboat_github::Error::Payload(e) => ApiError::BadRequest(chain(&e)),
                runboat_github::Error::Client(e) => ApiError::BadRequest(chain(&e)),
            }
        })?;
    let controller = state.controller();
    let accepted = |detail: String| -> Response {
        (StatusCode::ACCEPTED, Json(json!({"detail": detail}))).into_response()
    };
    let ok = |detail: String| -> Response {
        (StatusCode::OK, Json(json!({"detail": detail}))).into_response()
    };
    match action {
        WebhookAction::Deploy(commit) => {
            let name = commit.build_name();
            let result = controller.deploy_commit(commit.clone()).await;
            match command(result, Subject::Commit(&commit)) {
                Ok(Accepted::Done) => {
                    tracing::info!(%commit, build = %name, "webhook: deploy");
                    Ok(accepted(format!("deploying build {name}")))
                }
                Ok(Accepted::Ignored(reason)) => Ok(ok(reason.to_string())),
                // GitHub sends every push of the organisation: a branch no
                // rule supports is acknowledged, not an error.
                Err(e @ ApiError::Unsupported { .. }) => Ok(ok(format!("ignored: {e}"))),
                Err(e) => Err(e),
            }
        }
        WebhookAction::UndeployBranch { repo, branch } => {
            tracing::info!(%repo, %branch, "webhook: branch deleted, undeploying its builds");
            let filters = SearchFilters {
                repo: Some(repo.clone()),
                branch: Some(branch.clone()),
                ..SearchFilters::default()
            };
            let count = controller.undeploy_matching(filters).await?;
            Ok(accepted(format!("undeploying {count} build(s) of {repo} branch {branch}")))
        }
        WebhookAction::UndeployPr { repo, pr } => {
            tracing::info!(%repo, pr, "webhook: pull request closed, undeploying its builds");
            let filters = SearchFilters {
                repo: Some(repo.clone()),
                pr: Some(pr),
                ..SearchFilters::default()
            };
            let count = controller.undeploy_matching(filters).await?;
            Ok(accepted(format!("undeploying {count} build(s) of {repo} PR {pr}")))
        }
        WebhookAction::Ping => Ok(ok("pong".to_owned())),
        WebhookAction::Ignored { reason } => Ok(ok(format!("ignored: {reason}"))),
    }
}
