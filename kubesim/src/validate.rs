//! Validation that matters: names, labels, and the required fields of the
//! workload kinds, with the messages of the real API server.

use serde_json::Value;

use crate::resources::{self, ResId};
use crate::selector::LabelSelector;
use crate::status::Cause;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Whether `s` is an RFC 1123 label (at most 63 chars).
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum)
}

/// Whether `s` is an RFC 1123 subdomain (at most 253 chars).
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn is_qualified_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Why `key` is not a valid label key, if it is not.
pub(crate) fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_qualified_part(name) {
        return Some(QUALIFIED_NAME_MSG.into());
    }
    None
}

/// Why `value` is not a valid label value, if it is not.
pub(crate) fn label_value_error(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !is_qualified_part(value) {
        return Some(LABEL_VALUE_MSG.into());
    }
    None
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

fn check_labels(labels: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(map) = labels.as_object() else { return };
    for (k, v) in map {
        if let Some(err) = label_key_error(k) {
            causes.push(Cause::invalid(field, k, err));
        }
        match v.as_str() {
            Some(s) => {
                if let Some(err) = label_value_error(s) {
                    causes.push(Cause::invalid(field.to_string(), s, err));
                }
            }
            None => {
                causes.push(Cause::invalid(field, &v.to_string(), "label values must be strings"))
            }
        }
    }
}

fn check_pod_spec(spec: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required(format!("{field}.containers")));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{field}.containers"))),
        Some(list) if list.is_empty() => {
            causes.push(Cause::required(format!("{field}.containers")))
        }
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                let f = format!("{field}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(format!("{f}.name"))),
                    Some(n) if !is_dns1123_label(n) => {
                        causes.push(Cause::invalid(format!("{f}.name"), n, DNS1123_LABEL_MSG))
                    }
                    _ => {}
                }
                if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{f}.image")));
                }
            }
        }
    }
}

fn selector_of(sel: &Value) -> LabelSelector {
    let mut reqs = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push(crate::selector::Requirement::Equals(
                k.clone(),
                v.as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            use crate::selector::Requirement as R;
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => reqs.push(R::In(key, values)),
                Some("NotIn") => reqs.push(R::NotIn(key, values)),
                Some("Exists") => reqs.push(R::Exists(key)),
                Some("DoesNotExist") => reqs.push(R::DoesNotExist(key)),
                _ => {}
            }
        }
    }
    LabelSelector(reqs)
}

/// The label selector of a workload's `spec.selector`.
pub(crate) fn workload_selector(obj: &Value) -> Option<LabelSelector> {
    obj.get("spec")?.get("selector").filter(|s| s.is_object()).map(selector_of)
}

/// Sorted labels of an object.
pub(crate) fn labels_of(obj: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Validates an object about to be stored; the causes of a 422 if invalid.
pub(crate) fn validate(res: ResId, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let def = resources::def(res);
    let name = str_at(obj, &["metadata", "name"]).unwrap_or_default();
    let name_ok = match def.plural {
        "namespaces" => is_dns1123_label(name),
        "services" => is_dns1035_label(name),
        _ => is_dns1123_subdomain(name),
    };
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if !name_ok {
        let msg = match def.plural {
            "namespaces" => DNS1123_LABEL_MSG,
            "services" => DNS1035_LABEL_MSG,
            _ => DNS1123_SUBDOMAIN_MSG,
        };
        causes.push(Cause::invalid("metadata.name", name, msg));
    }
    if let Some(meta) = obj.get("metadata") {
        if let Some(labels) = meta.get("labels") {
            check_labels(labels, "metadata.labels", &mut causes);
        }
        if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
            for (k, v) in ann {
                if let Some(err) = label_key_error(k) {
                    causes.push(Cause::invalid("metadata.annotations", k, err));
                }
                if !v.is_string() {
                    causes.push(Cause::invalid(
                        "metadata.annotations",
                        k,
                        "annotation values must be strings",
                    ));
                }
            }
        }
    }
    match def.plural {
        "deployments" | "replicasets" => {
            let template_labels = obj.pointer("/spec/template/metadata/labels");
            match obj.pointer("/spec/selector") {
                None | Some(Value::Null) => causes.push(Cause::required("spec.selector")),
                Some(sel) => {
                    let selector = selector_of(sel);
                    if selector.is_empty() {
                        causes.push(Cause::invalid(
                            "spec.selector",
                            &sel.to_string(),
                            "empty selector is invalid for deployment",
                        ));
                    } else {
                        let labels = template_labels
                            .map(|l| labels_of(&serde_json::json!({"metadata": {"labels": l}})))
                            .unwrap_or_default();
                        if !selector.matches(&labels) {
                            let shown = template_labels
                                .map(|l| {
                                    let pairs: Vec<String> = l
                                        .as_object()
                                        .map(|m| {
                                            m.iter()
                                                .map(|(k, v)| {
                                                    format!(
                                                        "{k}:{}",
                                                        v.as_str().unwrap_or_default()
                                                    )
                                                })
                                                .collect()
                                        })
                                        .unwrap_or_default();
                                    format!("map[{}]", pairs.join(" "))
                                })
                                .unwrap_or_else(|| "map[]".into());
                            causes.push(Cause::invalid(
                                "spec.template.metadata.labels",
                                &shown,
                                "`selector` does not match template `labels`",
                            ));
                        }
                    }
                }
            }
            if let Some(l) = template_labels {
                check_labels(l, "spec.template.metadata.labels", &mut causes);
            }
            if let Some(r) = obj.pointer("/spec/replicas")
                && r.as_i64().is_none_or(|n| n < 0)
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &r.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            check_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes);
        }
        "jobs" => {
            check_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes);
            let policy = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if policy != "Never" && policy != "OnFailure" {
                causes.push(Cause::unsupported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    &["OnFailure", "Never"],
                ));
            }
        }
        "pods" => check_pod_spec(obj.get("spec"), "spec", &mut causes),
        "services" => {
            if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
                for (i, p) in ports.iter().enumerate() {
                    if p.get("port").and_then(Value::as_i64).is_none() {
                        causes.push(Cause::required(format!("spec.ports[{i}].port")));
                    }
                }
            }
        }
        "configmaps" | "secrets" => {
            for field in ["data", "stringData", "binaryData"] {
                if let Some(map) = obj.get(field).and_then(Value::as_object) {
                    for k in map.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                        if !ok {
                            causes.push(Cause::invalid(format!("{field}[{k}]"), k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                        }
                    }
                }
            }
        }
        "ingresses" => {
            if let Some(rules) = obj.pointer("/spec/rules").and_then(Value::as_array) {
                for (i, r) in rules.iter().enumerate() {
                    if let Some(host) = r.get("host").and_then(Value::as_str) {
                        let wildcard = host.strip_prefix("*.").unwrap_or(host);
                        if !is_dns1123_subdomain(wildcard) {
                            causes.push(Cause::invalid(
                                format!("spec.rules[{i}].host"),
                                host,
                                DNS1123_SUBDOMAIN_MSG,
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    causes
}

/// Paths that must hold objects (or be absent/null) before the server
/// defaults and indexes into them.
const OBJECT_PATHS: &[&str] = &[
    "/metadata",
    "/metadata/labels",
    "/metadata/annotations",
    "/spec",
    "/status",
    "/data",
    "/stringData",
    "/binaryData",
    "/spec/selector",
    "/spec/selector/matchLabels",
    "/spec/resources",
    "/spec/template",
    "/spec/template/metadata",
    "/spec/template/metadata/labels",
    "/spec/template/metadata/annotations",
    "/spec/template/spec",
];

/// Paths that must hold arrays of objects (or be absent/null).
const OBJECT_LIST_PATHS: &[&str] = &[
    "/metadata/ownerReferences",
    "/spec/ports",
    "/spec/rules",
    "/spec/containers",
    "/spec/initContainers",
    "/spec/template/spec/containers",
    "/spec/template/spec/initContainers",
    "/status/conditions",
    "/status/containerStatuses",
];

/// Why an object does not have the shape of a Kubernetes object, if it
/// does not: answered as 400, like the real server's decoding errors.
pub(crate) fn shape_error(v: &Value) -> Option<String> {
    if !v.is_object() {
        return Some("the body must be a JSON object".into());
    }
    for p in OBJECT_PATHS {
        if let Some(x) = v.pointer(p)
            && !x.is_object()
            && !x.is_null()
        {
            return Some(format!("{}: expected an object", &p[1..].replace('/', ".")));
        }
    }
    for p in OBJECT_LIST_PATHS {
        if let Some(x) = v.pointer(p) {
            let ok = x.is_null() || x.as_array().is_some_and(|a| a.iter().all(Value::is_object));
            if !ok {
                return Some(format!("{}: expected a list of objects", &p[1..].replace('/', ".")));
            }
        }
    }
    if let Some(f) = v.pointer("/metadata/finalizers")
        && !f.is_null()
        && !f.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Some("metadata.finalizers: expected a list of strings".into());
    }
    for containers in [
        "/spec/containers",
        "/spec/initContainers",
        "/spec/template/spec/containers",
        "/spec/template/spec/initContainers",
    ] {
        for c in v.pointer(containers).and_then(Value::as_array).into_iter().flatten() {
            for list in ["ports", "env", "volumeMounts"] {
                if let Some(x) = c.get(list)
                    && !x.is_null()
                    && !x.as_array().is_some_and(|a| a.iter().all(Value::is_object))
                {
                    return Some(format!("{containers}[].{list}: expected a list of objects"));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(is_dns1123_label("b-123"));
        assert!(!is_dns1123_label("B"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_dns1035_label("svc"));
        assert!(!is_dns1035_label("1svc"));
    }

    #[test]
    fn label_keys_and_values() {
        assert_eq!(label_key_error("runboat/build"), None);
        assert_eq!(label_key_error("app.kubernetes.io/name"), None);
        assert!(label_key_error("Bad Prefix/x").is_some());
        assert!(label_key_error("a/").is_some());
        assert_eq!(label_value_error(""), None);
        assert!(label_value_error("-x").is_some());
        assert!(label_value_error(&"x".repeat(64)).is_some());
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "d"}, "spec": {"selector": selector, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let ok = deployment(json!({"matchLabels": {"a": "1"}}), json!({"a": "1", "b": "2"}));
        assert_eq!(validate(resources::DEPLOYMENTS, &ok), vec![]);
        let bad = deployment(json!({"matchLabels": {"a": "2"}}), json!({"a": "1"}));
        let causes = validate(resources::DEPLOYMENTS, &bad);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        let missing = json!({"metadata": {"name": "d"}, "spec": {}});
        let fields: Vec<String> =
            validate(resources::DEPLOYMENTS, &missing).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["spec.selector", "spec.template.spec.containers"]);
    }

    proptest! {
        #[test]
        fn label_rules_agree_with_the_regex(s in "[-A-Za-z0-9_./ ]{0,70}") {
            let re = regex::Regex::new("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").expect("regex");
            prop_assert_eq!(label_value_error(&s).is_none(), re.is_match(&s) && s.len() <= 63);
            let label = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex");
            prop_assert_eq!(is_dns1123_label(&s), label.is_match(&s) && s.len() <= 63);
        }
    }
}
