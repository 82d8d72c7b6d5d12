//! `POST /webhooks/github`: GitHub deliveries to controller commands.
//!
//! Answers: 401 for a missing or wrong signature (when a secret is
//! configured), 400 for a malformed delivery, 413 for an oversized body,
//! 202 with `{"detail": ...}` when a command was given to the controller
//! (`"queued: ..."` when it is queued but not applied within the budget),
//! 200 when the delivery was a ping, needed nothing, or is a replay of a
//! delivery ID already processed, 503 with `Retry-After` when it cannot be
//! accepted (not ready, command queue full). Every answer comes within the
//! webhook budget (default 8 s, under GitHub's 10 s) from when the request
//! head arrived: a body still not in by then is a 400.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use runboat_core::{Late, SearchFilters};
use runboat_github::webhook::{EVENT_HEADER, MAX_BODY_BYTES};
use runboat_github::{PayloadError, WebhookAction};
use serde_json::json;
use tokio::time::Instant;

use crate::AppState;
use crate::error::{Accepted, ApiError, Subject, chain, command};

const SIGNATURE_HEADER: &str = runboat_github::signature::SIGNATURE_HEADER;
/// GitHub's unique ID of a delivery (the same on a redelivery).
const DELIVERY_HEADER: &str = "X-GitHub-Delivery";

/// When a delivery's head arrived: its budget counts from then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrived(Instant);

/// Notes when the delivery arrived and gives its body the rest of the
/// budget (a body sent slowly is cut, answered 400, within the budget).
pub(crate) async fn budget(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let budget = state.options().limits.webhook_budget;
    request.extensions_mut().insert(Arrived(Instant::now()));
    let request = request
        .map(|body| axum::body::Body::new(tower_http::timeout::DeadlineBody::new(budget, body)));
    next.run(request).await
}

/// The handler.
pub(crate) async fn github(
    State(state): State<AppState>,
    arrived: Option<Extension<Arrived>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let budget = state.options().limits.webhook_budget;
    let deadline = arrived.map_or_else(Instant::now, |a| a.0.0) + budget;
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
    let delivery = headers.get(DELIVERY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    let needs_controller = matches!(
        action,
        WebhookAction::Deploy(_)
            | WebhookAction::UndeployBranch { .. }
            | WebhookAction::UndeployPr { .. }
    );
    if !needs_controller {
        return Ok(answer(&action));
    }
    // Only a verified delivery is remembered: an unsigned one cannot make a
    // later genuine delivery look like a replay.
    if !delivery.is_empty() && state.deliveries().seen_before(delivery) {
        tracing::info!(delivery, event, "webhook: delivery already processed, ignored");
        return Ok(ok(format!("delivery {delivery} already processed")));
    }
    let result = apply(&state, action, deadline).await;
    if result.as_ref().is_err_and(|e| e.status_code().is_server_error()) && !delivery.is_empty() {
        // Not accepted: GitHub's redelivery must be processed.
        state.deliveries().forget(delivery);
    }
    result
}

fn accepted(detail: String) -> Response {
    (StatusCode::ACCEPTED, Json(json!({"detail": detail}))).into_response()
}

fn ok(detail: String) -> Response {
    (StatusCode::OK, Json(json!({"detail": detail}))).into_response()
}

/// The answer of an action that needs no controller.
fn answer(action: &WebhookAction) -> Response {
    match action {
        WebhookAction::Ignored { reason } => ok(format!("ignored: {reason}")),
        _ => ok("pong".to_owned()),
    }
}

/// The 503 of a command not taken in time.
fn busy(detail: &str) -> ApiError {
    ApiError::Busy { detail: detail.to_owned(), retry_after: 10 }
}

/// Gives `action` to the controller, answering by `deadline`.
async fn apply(
    state: &AppState,
    action: WebhookAction,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let controller = state.controller();
    if !controller.is_ready() {
        return Err(busy("not ready: waiting for the first cluster listing"));
    }
    let full = "the controller is busy: its command queue is full";
    match action {
        WebhookAction::Deploy(commit) => {
            let name = commit.build_name();
            let result = match controller.deploy_commit_until(commit.clone(), deadline).await {
                Ok(result) => result,
                Err(Late::NotQueued) => return Err(busy(full)),
                Err(Late::Queued) => {
                    tracing::info!(%commit, build = %name, "webhook: deploy queued");
                    return Ok(accepted(format!("queued: deploying build {name}")));
                }
            };
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
            match controller.undeploy_matching_until(filters, deadline).await {
                Ok(count) => Ok(accepted(format!(
                    "undeploying {} build(s) of {repo} branch {branch}",
                    count?
                ))),
                Err(Late::NotQueued) => Err(busy(full)),
                Err(Late::Queued) => Ok(accepted(format!(
                    "queued: undeploying the builds of {repo} branch {branch}"
                ))),
            }
        }
        WebhookAction::UndeployPr { repo, pr } => {
            tracing::info!(%repo, pr, "webhook: pull request closed, undeploying its builds");
            let filters = SearchFilters {
                repo: Some(repo.clone()),
                pr: Some(pr),
                ..SearchFilters::default()
            };
            match controller.undeploy_matching_until(filters, deadline).await {
                Ok(count) => {
                    Ok(accepted(format!("undeploying {} build(s) of {repo} PR {pr}", count?)))
                }
                Err(Late::NotQueued) => Err(busy(full)),
                Err(Late::Queued) => {
                    Ok(accepted(format!("queued: undeploying the builds of {repo} PR {pr}")))
                }
            }
        }
        WebhookAction::Ping | WebhookAction::Ignored { .. } => Ok(answer(&action)),
    }
}
