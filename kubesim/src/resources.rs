//! The fixed table of resources kubesim serves, and their discovery documents.

use serde_json::{Value, json};

/// Index of a resource in [`RESOURCES`].
pub(crate) type ResId = usize;

/// One served resource type.
#[derive(Debug)]
pub(crate) struct ResourceDef {
    /// API group, empty for the core group.
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
    /// Subresources besides the main resource: `status`, `scale`, `log`.
    pub(crate) subresources: &'static [&'static str],
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub(crate) has_generation: bool,
    /// Field selector labels accepted besides `metadata.name`/`metadata.namespace`.
    pub(crate) field_labels: &'static [&'static str],
}

impl ResourceDef {
    /// `apps/v1` or `v1`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps` or `pods`, as in API server messages.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether the main resource ignores `status` on writes.
    pub(crate) fn has_status_subresource(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub(crate) fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

const NO: &[&str] = &[];

pub(crate) static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status"],
        has_generation: false,
        field_labels: &["status.phase"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &["status", "log"],
        has_generation: true,
        field_labels: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        subresources: &["status"],
        has_generation: false,
        field_labels: &["spec.clusterIP", "spec.type"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: NO,
        subresources: NO,
        has_generation: false,
        field_labels: &["type"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        subresources: &["status"],
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: NO,
        has_generation: false,
        field_labels: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        subresources: &["status", "scale"],
        has_generation: true,
        field_labels: NO,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        subresources: &["status", "scale"],
        has_generation: true,
        field_labels: &["status.replicas"],
    },
    ResourceDef {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short_names: NO,
        subresources: &["status"],
        has_generation: true,
        field_labels: &["status.successful"],
    },
    ResourceDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        short_names: &["ing"],
        subresources: &["status"],
        has_generation: true,
        field_labels: NO,
    },
    ResourceDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: NO,
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        subresources: NO,
        has_generation: true,
        field_labels: NO,
    },
    ResourceDef {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        subresources: &["status"],
        has_generation: true,
        field_labels: NO,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: NO,
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: NO,
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: NO,
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: NO,
        subresources: NO,
        has_generation: false,
        field_labels: NO,
    },
];

/// Well-known resource ids, kept in sync with [`RESOURCES`] by a unit test.
pub(crate) const NAMESPACES: ResId = 0;
pub(crate) const PODS: ResId = 1;
pub(crate) const EVENTS: ResId = 6;
pub(crate) const DEPLOYMENTS: ResId = 8;
pub(crate) const REPLICASETS: ResId = 9;
pub(crate) const JOBS: ResId = 10;
pub(crate) const ROLES: ResId = 15;
pub(crate) const ROLEBINDINGS: ResId = 16;
pub(crate) const CLUSTERROLES: ResId = 17;
pub(crate) const CLUSTERROLEBINDINGS: ResId = 18;

/// The group/versions served, in discovery order.
pub(crate) const GROUP_VERSIONS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("batch", "v1"),
    ("networking.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("policy", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
];

/// Finds a resource by group, version and plural name.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<ResId> {
    RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
}

pub(crate) fn def(id: ResId) -> &'static ResourceDef {
    &RESOURCES[id]
}

const VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The `APIResourceList` for one group/version.
pub(crate) fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": if matches!(r.plural, "pods" | "services" | "deployments" | "replicasets" | "jobs") { vec!["all"] } else { vec![] },
        }));
        for sub in r.subresources {
            let (kind, verbs, grp, ver): (&str, &[&str], &str, &str) = match *sub {
                "scale" => ("Scale", &["get", "patch", "update"], "autoscaling", "v1"),
                "log" => ("Pod", &["get"], "", ""),
                _ => (r.kind, &["get", "patch", "update"], "", ""),
            };
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !grp.is_empty() {
                entry["group"] = json!(grp);
                entry["version"] = json!(ver);
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version =
        if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// The `APIGroupList` served at `/apis`.
pub(crate) fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUP_VERSIONS
        .iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The `APIGroup` served at `/apis/<group>`.
pub(crate) fn api_group(group: &str) -> Option<Value> {
    let (g, v) = GROUP_VERSIONS.iter().find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}),
    )
}

/// The OpenAPI v3 index: one document per group/version. kubectl reads it
/// to learn that PATCH accepts `fieldValidation` (server-side validation).
pub(crate) fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    gvs.extend(GROUP_VERSIONS.iter().map(|(g, v)| (g.to_string(), v.to_string())));
    for (g, v) in gvs {
        let key = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=kubesim")}),
        );
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for one group/version: the item paths and
/// their operations with the parameters the server accepts; no schemas.
pub(crate) fn openapi_v3_doc(path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": if n.eq(&"force") { "boolean" } else { "string" }}, "uniqueItems": true}))
        .collect();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let base = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}});
        paths.insert(format!("{base}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(
            base,
            json!({"get": op("list"), "post": op("post"), "delete": op("deletecollection")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (kubesim)", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_ids_match_the_table() {
        assert_eq!(def(NAMESPACES).plural, "namespaces");
        assert_eq!(def(PODS).plural, "pods");
        assert_eq!(def(EVENTS).plural, "events");
        assert_eq!(def(DEPLOYMENTS).plural, "deployments");
        assert_eq!(def(REPLICASETS).plural, "replicasets");
        assert_eq!(def(JOBS).plural, "jobs");
        assert_eq!(def(ROLES).plural, "roles");
        assert_eq!(def(ROLEBINDINGS).plural, "rolebindings");
        assert_eq!(def(CLUSTERROLES).plural, "clusterroles");
        assert_eq!(def(CLUSTERROLEBINDINGS).plural, "clusterrolebindings");
    }

    #[test]
    fn discovery_lists_subresources() {
        let list = api_resource_list("apps", "v1").expect("apps/v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        assert!(names.contains(&"deployments/status"));
        assert!(api_resource_list("apps", "v2").is_none());
    }
}
