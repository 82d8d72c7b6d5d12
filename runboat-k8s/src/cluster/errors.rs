//! kube errors → [`ClusterError`]: what the controller must do differently
//! (not found, conflict, invalid, retry later).

use runboat_core::ClusterError;

/// Maps a kube error; `what` says which call failed (for the message).
pub(crate) fn cluster_error(what: &str, err: &kube::Error) -> ClusterError {
    match err {
        kube::Error::Api(status) => {
            let message = format!("{what}: {} ({})", status.message, status.reason);
            match status.code {
                404 => ClusterError::NotFound(message),
                409 => ClusterError::Conflict(message),
                400 | 422 => ClusterError::Invalid(message),
                // 410 Gone on a list, 429 throttling, 5xx and anything
                // unexpected: trying again later is the only option.
                _ => ClusterError::Transient(message),
            }
        }
        // Serialization of what we send, or a request we cannot even build.
        kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => {
            ClusterError::Invalid(format!("{what}: {err}"))
        }
        // Connection, TLS, timeouts, bad responses from a proxy...
        _ => ClusterError::Transient(format!("{what}: {err}")),
    }
}

/// True for a 404 answer.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// True for a 409 answer.
pub(crate) fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("boom", "Reason").with_code(code).boxed())
    }

    #[test]
    fn status_codes_map_to_what_the_controller_does() {
        assert!(matches!(cluster_error("get", &api(404)), ClusterError::NotFound(_)));
        assert!(matches!(cluster_error("patch", &api(409)), ClusterError::Conflict(_)));
        assert!(
            matches!(cluster_error("apply", &api(422)), ClusterError::Invalid(m) if m.contains("boom"))
        );
        assert!(matches!(cluster_error("apply", &api(400)), ClusterError::Invalid(_)));
        for code in [429, 500, 503, 504, 410] {
            assert!(cluster_error("list", &api(code)).is_transient(), "{code}");
        }
        assert!(is_not_found(&api(404)) && !is_not_found(&api(409)));
        assert!(is_conflict(&api(409)));
    }
}
