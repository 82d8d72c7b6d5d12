//! kube errors → [`ClusterError`]: what the controller must do differently
//! (not found, conflict, invalid, retry later).

use runboat_core::ClusterError;
use runboat_core::cluster::ErrorDetail;

/// Maps a kube error; `what` says which call failed. The API server's
/// status (or kube's error when there is none) is kept as the source, so a
/// chain of the error shows the cause once.
pub(crate) fn cluster_error(what: &str, err: kube::Error) -> ClusterError {
    let kind: fn(ErrorDetail) -> ClusterError = match &err {
        kube::Error::Api(status) => match status.code {
            404 => ClusterError::NotFound,
            409 => ClusterError::Conflict,
            400 | 422 => ClusterError::Invalid,
            // 410 Gone on a list, 429 throttling, 5xx and anything
            // unexpected: trying again later is the only option.
            _ => ClusterError::Transient,
        },
        // Serialization of what we send, or a request we cannot even build.
        kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => ClusterError::Invalid,
        // Connection, TLS, timeouts, bad responses from a proxy...
        _ => ClusterError::Transient,
    };
    match err {
        // The API server's own answer is the cause (kube's wrapper would
        // print its message three times in a chain).
        kube::Error::Api(status) => kind(ErrorDetail::caused_by(what, *status)),
        err => kind(ErrorDetail::caused_by(what, err)),
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
        assert!(matches!(cluster_error("get", api(404)), ClusterError::NotFound(_)));
        assert!(matches!(cluster_error("patch", api(409)), ClusterError::Conflict(_)));
        // The API server's message is in the source, shown once in the chain.
        let invalid = cluster_error("apply of b1-odoo", api(422));
        assert!(matches!(&invalid, ClusterError::Invalid(m) if m.message() == "apply of b1-odoo"));
        let chain = runboat_core::error::chain(&invalid).to_string();
        assert!(chain.starts_with("invalid: apply of b1-odoo: "), "{chain}");
        assert_eq!(chain.matches("boom").count(), 1, "{chain}");
        assert!(matches!(cluster_error("apply", api(400)), ClusterError::Invalid(_)));
        for code in [429, 500, 503, 504, 410] {
            assert!(cluster_error("list", api(code)).is_transient(), "{code}");
        }
        assert!(is_not_found(&api(404)) && !is_not_found(&api(409)));
        assert!(is_conflict(&api(409)));
    }
}
