//! Bearer-token authentication and RBAC authorization, on when
//! [`crate::Config::rbac`] is set (off by default: every request is allowed).
//!
//! Tokens are opaque strings minted by kubesim: one admin token (group
//! `system:masters`, every right, the identity of [`crate::KubeSim::client`]
//! and of the default kubeconfig) and service-account tokens
//! (`system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>`, `system:authenticated`). A request with an
//! unknown token answers 401; one without a token is `system:anonymous`,
//! or, with [`crate::Config::unauthenticated_as_admin`], `system:unsecured`
//! in `system:masters`: what kube-apiserver's former insecure port did with
//! every request. kubectl needs it: client-go never sends credentials to a
//! plain-HTTP server (clientcmd reads the user's auth only for TLS), and
//! kubesim speaks plain HTTP. kube-rs does send them.
//!
//! Authorization follows kube-apiserver's RBAC authorizer
//! (`plugin/pkg/auth/authorizer/rbac`): ClusterRoleBindings grant their
//! ClusterRole everywhere; RoleBindings grant their Role or ClusterRole in
//! their namespace. A rule matches when its verbs, apiGroups, resources
//! (`resource/subresource`, `*`, `*/subresource`) and resourceNames (empty:
//! all) match the request. A denial answers 403 with the API server's
//! `Forbidden` Status and message. Discovery (`/api`, `/apis`, `/version`,
//! `/openapi`) is allowed to everyone, as the `system:discovery` and
//! `system:public-info-viewer` bindings allow it. `dryRun=All` needs the
//! verb of the real write, as on the real server. Not implemented:
//! aggregated ClusterRoles, escalation checks on writes of RBAC objects,
//! non-resource URL rules, impersonation, token expiry.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::resources::{self, ResId};
use crate::status::ApiError;
use crate::store::State;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) user: String,
    pub(crate) groups: Vec<String>,
}

impl Identity {
    fn anonymous() -> Self {
        Identity { user: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()] }
    }
}

/// One authorization decision's attributes, as recorded by kubesim: who
/// asked for which verb on which resource, and whether it was allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    pub user: String,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// Empty for the core group.
    pub api_group: String,
    /// Plural name, e.g. `deployments`.
    pub resource: String,
    /// e.g. `log`, `scale`, `status`; empty for the main resource.
    pub subresource: String,
    /// Empty at the cluster scope.
    pub namespace: String,
    pub allowed: bool,
}

/// Tokens, counters and the record of decisions.
pub(crate) struct Auth {
    pub(crate) enabled: bool,
    unauthenticated_as_admin: bool,
    pub(crate) admin_token: String,
    tokens: Mutex<HashMap<String, Identity>>,
    pub(crate) forbidden: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    decisions: Mutex<BTreeSet<Access>>,
}

/// The request attributes RBAC decides on.
pub(crate) struct Attributes<'a> {
    pub(crate) verb: &'a str,
    pub(crate) res: ResId,
    pub(crate) subresource: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
}

impl Auth {
    pub(crate) fn new(enabled: bool, unauthenticated_as_admin: bool, seed: u64) -> Self {
        let admin_token = format!("kubesim-admin-{seed:016x}");
        let mut tokens = HashMap::new();
        tokens.insert(
            admin_token.clone(),
            Identity {
                user: "kubesim-admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        );
        Auth {
            enabled,
            unauthenticated_as_admin,
            admin_token,
            tokens: Mutex::new(tokens),
            forbidden: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            decisions: Mutex::new(BTreeSet::new()),
        }
    }

    /// Mints a token for a user with these groups.
    pub(crate) fn mint(&self, identity: Identity, seed: u64, id: u64) -> String {
        let token = format!("kubesim-{:016x}{id:08x}", seed.rotate_left(17) ^ id);
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.clone(), identity);
        token
    }

    /// The caller of a request, from its `Authorization: Bearer` header;
    /// 401 for a token kubesim did not mint.
    pub(crate) fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let Some(value) = authorization else {
            if self.unauthenticated_as_admin {
                return Ok(Identity {
                    user: "system:unsecured".into(),
                    groups: vec!["system:masters".into(), "system:authenticated".into()],
                });
            }
            return Ok(Identity::anonymous());
        };
        let token = value.strip_prefix("Bearer ").map(str::trim).unwrap_or_default();
        let found = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned();
        found.ok_or_else(|| {
            self.unauthorized.fetch_add(1, Ordering::Relaxed);
            ApiError::new(401, "Unauthorized", "Unauthorized")
        })
    }

    /// Allows or denies a resource request, recording the decision.
    pub(crate) fn authorize(
        &self,
        state: &State,
        who: &Identity,
        attrs: &Attributes<'_>,
    ) -> Result<(), ApiError> {
        let def = resources::def(attrs.res);
        let allowed = allowed(state, who, attrs);
        self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(Access {
            user: who.user.clone(),
            verb: attrs.verb.to_string(),
            api_group: def.group.to_string(),
            resource: def.plural.to_string(),
            subresource: attrs.subresource.to_string(),
            namespace: attrs.namespace.to_string(),
            allowed,
        });
        if allowed {
            return Ok(());
        }
        self.forbidden.fetch_add(1, Ordering::Relaxed);
        Err(forbidden(who, attrs))
    }

    pub(crate) fn decisions(&self) -> Vec<Access> {
        self.decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn clear_decisions(&self) {
        self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// The Status of a denial, as `responsewriters.Forbidden` renders it:
/// `apierrors.NewForbidden(groupResource, name, forbiddenMessage(attrs))`.
fn forbidden(who: &Identity, attrs: &Attributes<'_>) -> ApiError {
    let def = resources::def(attrs.res);
    let mut resource = def.plural.to_string();
    if !attrs.subresource.is_empty() {
        resource = format!("{resource}/{}", attrs.subresource);
    }
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", attrs.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        who.user, attrs.verb, def.group
    );
    let message = if attrs.name.is_empty() {
        format!("{} is forbidden: {why}", def.qualified())
    } else {
        format!("{} \"{}\" is forbidden: {why}", def.qualified(), attrs.name)
    };
    ApiError {
        details: Some(json!({"name": attrs.name, "group": def.group, "kind": def.plural})),
        ..ApiError::new(403, "Forbidden", message)
    }
}

fn allowed(state: &State, who: &Identity, attrs: &Attributes<'_>) -> bool {
    if who.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let values = |res: ResId, ns: Option<&str>| -> Vec<Value> {
        state
            .objects
            .get(res)
            .map(|m| {
                m.iter()
                    .filter(|((o_ns, _), _)| ns.is_none_or(|ns| ns == o_ns))
                    .map(|(_, o)| o.value())
                    .collect()
            })
            .unwrap_or_default()
    };
    let rules_of = |kind: &str, name: &str, ns: &str| -> Vec<Value> {
        let found = match kind {
            "ClusterRole" => state.get(resources::CLUSTERROLES, "", name),
            "Role" => state.get(resources::ROLES, ns, name),
            _ => None,
        };
        found
            .and_then(|o| o.value().get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    };
    let grants = |binding: &Value, binding_ns: &str| -> bool {
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if !subjects.is_some_and(|s| s.iter().any(|s| applies_to(s, who, binding_ns))) {
            return false;
        }
        let role_ref = &binding["roleRef"];
        let kind = role_ref["kind"].as_str().unwrap_or_default();
        let name = role_ref["name"].as_str().unwrap_or_default();
        rules_of(kind, name, binding_ns).iter().any(|r| rule_allows(r, attrs))
    };
    if values(resources::CLUSTERROLEBINDINGS, None).iter().any(|b| grants(b, "")) {
        return true;
    }
    !attrs.namespace.is_empty()
        && values(resources::ROLEBINDINGS, Some(attrs.namespace))
            .iter()
            .any(|b| grants(b, attrs.namespace))
}

/// `appliesTo` of the RBAC authorizer: a subject names the user, one of
/// its groups, or its service account (namespace defaulting to the
/// binding's).
fn applies_to(subject: &Value, who: &Identity, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => who.user == name,
        "Group" => who.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            !ns.is_empty() && who.user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn strings(rule: &Value, key: &str) -> Vec<String> {
    rule.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `RuleAllows` of rbac/v1 helpers: verb, API group, resource (with
/// subresource) and resource name all match.
fn rule_allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let def = resources::def(attrs.res);
    let verbs = strings(rule, "verbs");
    if !verbs.iter().any(|v| v == "*" || v == attrs.verb) {
        return false;
    }
    let groups = strings(rule, "apiGroups");
    if !groups.iter().any(|g| g == "*" || g == def.group) {
        return false;
    }
    let combined = if attrs.subresource.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}/{}", def.plural, attrs.subresource)
    };
    let resources = strings(rule, "resources");
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|sub| sub == attrs.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(rule, "resourceNames");
    names.is_empty() || names.iter().any(|n| n == attrs.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(verb: &'a str, res: ResId, sub: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes { verb, res, subresource: sub, namespace: "ns", name }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let rule =
            json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]});
        assert!(rule_allows(&rule, &attrs("get", resources::DEPLOYMENTS, "", "x")));
        assert!(!rule_allows(&rule, &attrs("delete", resources::DEPLOYMENTS, "", "x")));
        assert!(!rule_allows(&rule, &attrs("patch", resources::DEPLOYMENTS, "scale", "x")));
        assert!(!rule_allows(&rule, &attrs("get", resources::PODS, "", "x")), "core group");
        let rule = json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]});
        assert!(rule_allows(&rule, &attrs("get", resources::PODS, "log", "p")));
        assert!(!rule_allows(&rule, &attrs("get", resources::PODS, "", "p")));
        let rule = json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]});
        assert!(rule_allows(&rule, &attrs("patch", resources::DEPLOYMENTS, "scale", "x")));
        assert!(!rule_allows(&rule, &attrs("patch", resources::DEPLOYMENTS, "", "x")));
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"], "resourceNames": ["a"]});
        assert!(rule_allows(&rule, &attrs("get", resources::DEPLOYMENTS, "", "a")));
        assert!(!rule_allows(&rule, &attrs("get", resources::DEPLOYMENTS, "", "b")));
        assert!(!rule_allows(&rule, &attrs("list", resources::DEPLOYMENTS, "", "")));
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let sa = Identity {
            user: "system:serviceaccount:ctl:runboat".into(),
            groups: vec!["system:serviceaccounts".into()],
        };
        let s = json!({"kind": "ServiceAccount", "name": "runboat", "namespace": "ctl"});
        assert!(applies_to(&s, &sa, "builds"));
        let s = json!({"kind": "ServiceAccount", "name": "runboat"});
        assert!(applies_to(&s, &sa, "ctl"), "the binding's namespace by default");
        assert!(!applies_to(&s, &sa, "builds"));
        let s = json!({"kind": "Group", "name": "system:serviceaccounts"});
        assert!(applies_to(&s, &sa, "builds"));
        let s = json!({"kind": "User", "name": "system:serviceaccount:ctl:runboat"});
        assert!(applies_to(&s, &sa, ""));
    }

    #[test]
    fn denials_read_like_the_api_server() {
        let who = Identity { user: "system:serviceaccount:ns:sa".into(), groups: vec![] };
        let e = forbidden(&who, &attrs("get", resources::PODS, "log", "p1"));
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "pods \"p1\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"ns\""
        );
        let e = forbidden(&who, &attrs("deletecollection", resources::DEPLOYMENTS, "", ""));
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"system:serviceaccount:ns:sa\" cannot deletecollection resource \"deployments\" in API group \"apps\" in the namespace \"ns\""
        );
    }
}
