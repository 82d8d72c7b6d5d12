//! Resource type names of `deployment_resource_types` → API resources.
//!
//! The usual built-in types resolve without asking the cluster; any other
//! name (a custom resource, `poddisruptionbudgets`, `certificates.cert-manager.io`)
//! is resolved through API discovery the first time it is needed, as
//! `kubectl delete <types>` resolves it for the original runboat.

use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};

use crate::error::{Error, Result};

/// A configured type: resolved, or to be resolved through discovery.
#[derive(Debug, Clone)]
pub(crate) enum DeleteType {
    /// A built-in type.
    Known(ApiResource),
    /// Any other name, as configured (lower case).
    Discover(String),
}

/// (names, group, version, kind, plural), names as kubectl accepts them.
const KNOWN: &[(&[&str], &str, &str, &str, &str)] = &[
    (&["deployment", "deployments", "deploy"], "apps", "v1", "Deployment", "deployments"),
    (&["statefulset", "statefulsets", "sts"], "apps", "v1", "StatefulSet", "statefulsets"),
    (&["service", "services", "svc"], "", "v1", "Service", "services"),
    (&["ingress", "ingresses", "ing"], "networking.k8s.io", "v1", "Ingress", "ingresses"),
    (&["configmap", "configmaps", "cm"], "", "v1", "ConfigMap", "configmaps"),
    (&["secret", "secrets"], "", "v1", "Secret", "secrets"),
    (
        &["pvc", "pvcs", "persistentvolumeclaim", "persistentvolumeclaims"],
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
    ),
    (&["job", "jobs"], "batch", "v1", "Job", "jobs"),
    (&["cronjob", "cronjobs", "cj"], "batch", "v1", "CronJob", "cronjobs"),
    (&["pod", "pods", "po"], "", "v1", "Pod", "pods"),
    (&["serviceaccount", "serviceaccounts", "sa"], "", "v1", "ServiceAccount", "serviceaccounts"),
    (
        &["networkpolicy", "networkpolicies", "netpol"],
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
];

/// The type a configured name (case-insensitive) stands for: a built-in
/// one, or a name to resolve through discovery. Only a name that cannot be
/// a resource name (`kubectl` would refuse it too) is an error.
pub(crate) fn resource_type(name: &str) -> Result<DeleteType> {
    let wanted = name.trim().to_ascii_lowercase();
    if let Some((_, group, version, kind, plural)) =
        KNOWN.iter().find(|(names, ..)| names.contains(&wanted.as_str()))
    {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        return Ok(DeleteType::Known(ApiResource::from_gvk_with_plural(&gvk, plural)));
    }
    let plausible = !wanted.is_empty()
        && wanted.len() <= 253
        && wanted.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !wanted.starts_with(['.', '-']);
    if !plausible {
        return Err(Error::UnknownResourceType {
            name: name.to_owned(),
            known: KNOWN.iter().map(|(names, ..)| names[0]).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(DeleteType::Discover(wanted))
}

/// Finds `name` (`plural`, `kind` or `plural.group`, lower case, as kubectl
/// accepts them) among the namespaced resources the cluster serves, in
/// each group's preferred version.
pub(crate) fn discover(discovery: &Discovery, name: &str) -> Option<ApiResource> {
    let (resource, group) = match name.split_once('.') {
        Some((resource, group)) => (resource, Some(group)),
        None => (name, None),
    };
    discovery
        .groups()
        .filter(|g| group.is_none_or(|wanted| g.name() == wanted))
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| caps.scope == Scope::Namespaced)
        .map(|(ar, _)| ar)
        .find(|ar| ar.plural == resource || ar.kind.to_ascii_lowercase() == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_types_resolve() {
        for (name, plural, group) in [
            ("deployment", "deployments", "apps"),
            ("service", "services", ""),
            ("ingress", "ingresses", "networking.k8s.io"),
            ("configmap", "configmaps", ""),
            ("secret", "secrets", ""),
            ("pvc", "persistentvolumeclaims", ""),
            ("Job", "jobs", "batch"),
        ] {
            let Ok(DeleteType::Known(ar)) = resource_type(name) else { panic!("{name} is known") };
            assert_eq!((ar.plural.as_str(), ar.group.as_str()), (plural, group));
        }
        for name in ["Widgets", "certificates.cert-manager.io", "poddisruptionbudgets"] {
            let Ok(DeleteType::Discover(n)) = resource_type(name) else { panic!("{name}") };
            assert_eq!(n, name.to_ascii_lowercase());
        }
        for bad in ["", " ", "a b", "-x", "x/y", "pods;rm"] {
            assert!(
                matches!(resource_type(bad), Err(Error::UnknownResourceType { .. })),
                "{bad:?}"
            );
        }
    }
}
