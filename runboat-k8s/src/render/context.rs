//! The variables a kubefile is rendered with.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use runboat_core::{CommitInfo, KubefilesMode};

use crate::error::{Error, Result};

/// Everything a kubefile can use, exactly the original runboat's rendering variables.
///
/// `build_secret_env` holds secrets: the `Debug` output shows its keys only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderContext {
    /// The namespace every object goes to.
    pub namespace: String,
    /// Which subset of the objects is wanted.
    pub mode: KubefilesMode,
    /// The build name: a DNS label, prefix of every object name and value of the
    /// `runboat/build` label.
    pub build_name: String,
    /// The build slug, first label of the build's host names.
    pub build_slug: String,
    /// The domain under which builds are served.
    pub build_domain: String,
    /// The commit being built.
    pub commit_info: CommitInfo,
    /// The Odoo image, without tag.
    pub image_name: String,
    /// The Odoo image tag.
    pub image_tag: String,
    /// Environment variables of the build (not secret).
    #[serde(default)]
    pub build_env: BTreeMap<String, String>,
    /// Secret environment variables of the build: they belong in a Secret only.
    #[serde(default)]
    pub build_secret_env: BTreeMap<String, String>,
    /// Free-form variables for the kubefiles (resources, ingress class, TLS...).
    #[serde(default)]
    pub build_template_vars: BTreeMap<String, serde_json::Value>,
}

impl fmt::Debug for RenderContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a BTreeMap<String, String>);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.keys().map(|key| (key, "<redacted>"))).finish()
            }
        }
        f.debug_struct("RenderContext")
            .field("namespace", &self.namespace)
            .field("mode", &self.mode)
            .field("build_name", &self.build_name)
            .field("build_slug", &self.build_slug)
            .field("build_domain", &self.build_domain)
            .field("commit_info", &self.commit_info)
            .field("image_name", &self.image_name)
            .field("image_tag", &self.image_tag)
            .field("build_env", &self.build_env)
            .field("build_secret_env", &Redacted(&self.build_secret_env))
            .field("build_template_vars", &self.build_template_vars)
            .finish()
    }
}

/// Longest build name: object names are `<build_name>-<suffix>` and label values are
/// limited to 63 characters.
const MAX_BUILD_NAME_LEN: usize = 63;

impl RenderContext {
    /// Checks what the renderer relies on: a build name that is a DNS label starting
    /// with a letter (it becomes a label value and a name prefix) and a DNS-label
    /// namespace.
    pub fn validate(&self) -> Result<()> {
        if !is_dns_label(&self.build_name, MAX_BUILD_NAME_LEN)
            || !self.build_name.starts_with(|c: char| c.is_ascii_lowercase())
        {
            return Err(Error::InvalidContext {
                reason: format!(
                    "build name {:?} is not a DNS label starting with a letter",
                    self.build_name
                ),
            });
        }
        if !is_dns_label(&self.namespace, 63) {
            return Err(Error::InvalidContext {
                reason: format!("namespace {:?} is not a DNS label", self.namespace),
            });
        }
        Ok(())
    }

    /// Replaces every secret value found in `message` by `***`, so an error quoting
    /// rendered text (a YAML snippet, kubectl's stderr) cannot leak a secret.
    pub(crate) fn redact(&self, message: &str) -> String {
        let mut message = message.to_owned();
        // Very short values are not secrets worth redacting, and would mangle messages.
        for value in self.build_secret_env.values().filter(|value| value.len() >= 4) {
            if message.contains(value.as_str()) {
                message = message.replace(value.as_str(), "***");
            }
        }
        message
    }
}

fn is_dns_label(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> RenderContext {
        RenderContext {
            namespace: "runboat-builds".into(),
            mode: KubefilesMode::Deployment,
            build_name: "b0123456789abcdef".into(),
            build_slug: "oca-mis-builder-16-0-pr12-0123456789ab".into(),
            build_domain: "runboat.example.com".into(),
            commit_info: CommitInfo::new(
                "oca/mis-builder",
                "16.0",
                Some(12),
                "0123456789abcdef0123456789abcdef01234567",
            )
            .expect("valid commit"),
            image_name: "ghcr.io/oca/oca-ci/py3.10-odoo16.0".into(),
            image_tag: "latest".into(),
            build_env: BTreeMap::new(),
            build_secret_env: BTreeMap::from([("PGPASSWORD".into(), "hunter2-secret".into())]),
            build_template_vars: BTreeMap::new(),
        }
    }

    #[test]
    fn debug_hides_secret_values() {
        let debug = format!("{:?}", sample());
        assert!(debug.contains("PGPASSWORD"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn modes_round_trip_through_their_names() {
        for mode in KubefilesMode::ALL {
            assert_eq!(KubefilesMode::from_name(mode.as_str()), Some(mode));
            let json = serde_json::to_string(&mode).expect("serialise");
            assert_eq!(json, format!("\"{mode}\""));
        }
        assert_eq!(KubefilesMode::from_name("Deployment"), None);
    }

    #[test]
    fn validate_rejects_names_that_cannot_prefix_objects() {
        let mut ctx = sample();
        assert!(ctx.validate().is_ok());
        for bad in ["", "1abc", "B123", "b_1", "b-", &"b".repeat(64)] {
            ctx.build_name = bad.to_owned();
            assert!(
                matches!(ctx.validate(), Err(Error::InvalidContext { .. })),
                "accepted build name {bad:?}"
            );
        }
        let mut ctx = sample();
        ctx.namespace = "Bad Namespace".into();
        assert!(matches!(ctx.validate(), Err(Error::InvalidContext { .. })));
    }

    #[test]
    fn redact_replaces_secret_values() {
        let ctx = sample();
        assert_eq!(ctx.redact("value hunter2-secret at line 3"), "value *** at line 3");
    }
}
