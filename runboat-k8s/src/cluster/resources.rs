//! Resource type names of `deployment_resource_types` → API resources.

use kube::core::{ApiResource, GroupVersionKind};

use crate::error::{Error, Result};

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

/// The API resource of a configured type name (case-insensitive).
pub(crate) fn resource_type(name: &str) -> Result<ApiResource> {
    let wanted = name.trim().to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|(names, ..)| names.contains(&wanted.as_str()))
        .map(|(_, group, version, kind, plural)| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
        })
        .ok_or_else(|| Error::UnknownResourceType {
            name: name.to_owned(),
            known: KNOWN.iter().map(|(names, ..)| names[0]).collect::<Vec<_>>().join(", "),
        })
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
            let ar = resource_type(name).expect("known");
            assert_eq!((ar.plural.as_str(), ar.group.as_str()), (plural, group));
        }
        assert!(matches!(
            resource_type("widgets"),
            Err(Error::UnknownResourceType { name, .. }) if name == "widgets"
        ));
    }
}
