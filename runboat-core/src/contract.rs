//! The Kubernetes contract shared with the original runboat: label,
//! annotation and finalizer keys and the job kinds.
//!
//! These strings are part of the compatibility contract (SPEC "Kubernetes
//! contract"): an existing namespace full of builds created by the Python
//! controller must keep working, so never change them.

/// Label carrying the build name, on every resource of a build.
pub const LABEL_BUILD: &str = "runboat/build";
/// Label carrying the job kind ([`JOB_KIND_INITIALIZE`] or [`JOB_KIND_CLEANUP`])
/// on jobs and their pods.
pub const LABEL_JOB_KIND: &str = "runboat/job-kind";

/// Deployment annotation: `owner/repo`, lower case.
pub const ANNOTATION_REPO: &str = "runboat/repo";
/// Deployment annotation: the target branch.
pub const ANNOTATION_TARGET_BRANCH: &str = "runboat/target-branch";
/// Deployment annotation: the pull request number, or empty for a branch build.
pub const ANNOTATION_PR: &str = "runboat/pr";
/// Deployment annotation: the 40-hex commit sha.
pub const ANNOTATION_GIT_COMMIT: &str = "runboat/git-commit";
/// Deployment annotation: the [`InitStatus`](crate::InitStatus) string.
pub const ANNOTATION_INIT_STATUS: &str = "runboat/init-status";
/// Deployment annotation: when the deployment was last scaled
/// (UTC ISO-8601 with seconds and `Z`, see [`format_last_scaled`]).
pub const ANNOTATION_LAST_SCALED: &str = "runboat/last-scaled";
/// Deployment annotation: `"true"` when an admin pinned the build (never
/// stopped by the limits or idle stop, never undeployed by the limits).
/// runboat's own addition: absent on the original's builds, which are
/// therefore unpinned.
pub const ANNOTATION_PINNED: &str = "runboat/pinned";
/// Deployment annotation: where runboat last pointed the build's Ingress
/// backends, `"build"` (its own Services) or `"wake"` (the wake Service
/// reaching runboat-server), with `wake_service` set. runboat's own
/// addition; absent means never routed.
pub const ANNOTATION_ROUTE: &str = "runboat/route";
/// Ingress annotation: the build's own backends (JSON) while runboat points
/// the Ingress at the wake Service, to put them back.
pub const ANNOTATION_BUILD_BACKENDS: &str = "runboat/build-backends";
/// Annotation naming the container whose log is the build log.
pub const ANNOTATION_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Finalizer that keeps an undeployed Deployment until its cleanup is done.
pub const FINALIZER_CLEANUP: &str = "runboat/cleanup";

/// Job kind of initialization jobs.
pub const JOB_KIND_INITIALIZE: &str = "initialize";
/// Job kind of cleanup jobs.
pub const JOB_KIND_CLEANUP: &str = "cleanup";

/// Formats a time as the `runboat/last-scaled` annotation wants it: UTC,
/// whole seconds, `Z` suffix (`2024-05-01T12:34:56Z`), as the original writes.
pub fn format_last_scaled(at: jiff::Timestamp) -> String {
    // Truncate sub-second precision: the original writes whole seconds.
    let secs = at.as_second();
    let at = jiff::Timestamp::from_second(secs).unwrap_or(at);
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // These strings are what existing clusters carry: a change here would
    // orphan every build created by the original controller.
    #[test]
    fn keys_are_the_originals() {
        assert_eq!(
            [
                LABEL_BUILD,
                LABEL_JOB_KIND,
                ANNOTATION_REPO,
                ANNOTATION_TARGET_BRANCH,
                ANNOTATION_PR,
                ANNOTATION_GIT_COMMIT,
                ANNOTATION_INIT_STATUS,
                ANNOTATION_LAST_SCALED,
                ANNOTATION_DEFAULT_CONTAINER,
                FINALIZER_CLEANUP,
                JOB_KIND_INITIALIZE,
                JOB_KIND_CLEANUP,
            ],
            [
                "runboat/build",
                "runboat/job-kind",
                "runboat/repo",
                "runboat/target-branch",
                "runboat/pr",
                "runboat/git-commit",
                "runboat/init-status",
                "runboat/last-scaled",
                "kubectl.kubernetes.io/default-container",
                "runboat/cleanup",
                "initialize",
                "cleanup",
            ]
        );
    }

    #[test]
    fn last_scaled_is_whole_seconds_utc_with_z() {
        let at: jiff::Timestamp = "2024-05-01T12:34:56.789+02:00".parse().expect("timestamp");
        assert_eq!(format_last_scaled(at), "2024-05-01T10:34:56Z");
        let back: jiff::Timestamp = format_last_scaled(at).parse().expect("round trip");
        assert_eq!(back.as_second(), at.as_second());
    }
}
