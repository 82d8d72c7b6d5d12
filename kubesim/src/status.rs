//! API errors rendered as Kubernetes `Status` objects, with the reasons,
//! codes and messages the real API server uses.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// An error answered to an API client as a `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (injected faults, 429).
    pub retry_after: Option<u64>,
}

/// One cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cause {
    pub(crate) reason: &'static str,
    pub(crate) field: String,
    pub(crate) message: String,
}

impl Cause {
    pub(crate) fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, value: &str, why: impl AsRef<str>) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {}", json!(value), why.as_ref()),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| json!(s).to_string()).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                json!(value),
                list.join(", ")
            ),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, why: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", why.into()),
        }
    }
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None, retry_after: None }
    }

    fn details(name: &str, res: &ResourceDef) -> Value {
        json!({"name": name, "group": res.group, "kind": res.plural})
    }

    pub(crate) fn not_found(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            details: Some(Self::details(name, res)),
            ..Self::new(404, "NotFound", format!("{} \"{}\" not found", res.qualified(), name))
        }
    }

    pub(crate) fn namespace_not_found(ns: &str) -> Self {
        ApiError {
            details: Some(json!({"name": ns, "kind": "namespaces"})),
            ..Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
        }
    }

    pub(crate) fn unknown_resource() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(404, "NotFound", "the server could not find the requested resource")
        }
    }

    pub(crate) fn already_exists(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            details: Some(Self::details(name, res)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", res.qualified(), name),
            )
        }
    }

    pub(crate) fn conflict(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            details: Some(Self::details(name, res)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    res.qualified(),
                    name
                ),
            )
        }
    }

    pub(crate) fn invalid(res: &ResourceDef, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> =
            causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let summary =
            if summary.len() == 1 { summary.join("") } else { format!("[{}]", summary.join(", ")) };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let kind_group = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        ApiError {
            details: Some(
                json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes}),
            ),
            ..Self::new(422, "Invalid", format!("{kind_group} \"{name}\" is invalid: {summary}"))
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn method_not_allowed() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type}"
            ),
        )
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        if let Some(secs) = self.retry_after {
            status["details"]["retryAfterSeconds"] = json!(secs);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = http::StatusCode::from_u16(self.code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        let mut builder =
            Response::builder().status(code).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(secs) = self.retry_after {
            builder = builder.header(http::header::RETRY_AFTER, secs.to_string());
        }
        builder.body(axum::body::Body::from(body)).unwrap_or_else(|_| code.into_response())
    }
}

/// A `Status` of success, answered by deletes that removed the object.
pub(crate) fn success_status(name: &str, res: &ResourceDef, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": res.group, "kind": res.plural, "uid": uid},
    })
}
