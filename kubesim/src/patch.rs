//! Strategic merge patch (also the merge of server-side apply, whose field
//! ownership is in `managed.rs`) and JSON patch as the API server applies it.
//!
//! Strategic merge follows the patch strategies of the Kubernetes types for
//! the lists runboat's kubefiles use: containers, env, volumes, volume
//! mounts, ports, owner references and conditions merge by key; finalizers
//! merge as a set; every other list is replaced. `$patch: delete|replace`
//! and `$deleteFromPrimitiveList/<field>` are honoured; `$setElementOrder`
//! and `$retainKeys` are accepted and ignored.

use serde_json::{Map, Value};

/// The merge key of a list field, given the path of the object holding it.
fn merge_key(field: &str, parent: &[String]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "ports" => {
            // Container ports merge by containerPort, service ports by port.
            // The path names the list a container item is in, not the item.
            let in_container = parent.last().is_some_and(|p| p.ends_with("ontainers"));
            Some(if in_container { "containerPort" } else { "port" })
        }
        _ => None,
    }
}

/// Lists of scalars merged as sets.
fn is_set_list(field: &str, parent: &[String]) -> bool {
    field == "finalizers" && parent.last().is_some_and(|p| p == "metadata")
}

/// Applies a strategic merge patch to `target`.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let mut path = Vec::new();
    merge_value(target, patch, &mut path);
}

fn merge_value(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Some(patch_map) = patch.as_object() else {
        *target = strip_directives(patch);
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (key, pv) in patch_map {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) =
                (target.get_mut(field).and_then(Value::as_array_mut), pv.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        let Some(tmap) = target.as_object_mut() else { return };
        if pv.is_null() {
            tmap.remove(key);
            continue;
        }
        match (tmap.get_mut(key), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => {
                path.push(key.clone());
                merge_value(tv, pv, path);
                path.pop();
            }
            (Some(Value::Array(tlist)), Value::Array(plist)) => {
                if let Some(mk) = merge_key(key, path) {
                    path.push(key.clone());
                    merge_keyed_list(tlist, plist, mk, path);
                    path.pop();
                } else if is_set_list(key, path) {
                    for item in plist {
                        if !tlist.contains(item) {
                            tlist.push(item.clone());
                        }
                    }
                } else {
                    *tlist = plist.iter().map(strip_directives).collect();
                }
            }
            (_, Value::Object(_)) => {
                // A new object: merged into nothing, so nulls inside it are dropped.
                let mut fresh = Value::Object(Map::new());
                path.push(key.clone());
                merge_value(&mut fresh, pv, path);
                path.pop();
                tmap.insert(key.clone(), fresh);
            }
            _ => {
                tmap.insert(key.clone(), strip_directives(pv));
            }
        }
    }
}

fn merge_keyed_list(target: &mut Vec<Value>, patch: &[Value], key: &str, path: &mut Vec<String>) {
    if patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace")) {
        *target =
            patch.iter().filter(|p| p.get("$patch").is_none()).map(strip_directives).collect();
        return;
    }
    for item in patch {
        let id = item.get(key);
        let pos = id.and_then(|id| target.iter().position(|t| t.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(pos) = pos {
                target.remove(pos);
            }
            continue;
        }
        match pos {
            Some(pos) => merge_value(&mut target[pos], item, path),
            None => {
                let mut fresh = Value::Object(Map::new());
                merge_value(&mut fresh, item, path);
                target.push(fresh);
            }
        }
    }
}

/// Applies a JSON patch (RFC 6902) the way kube-apiserver does, with
/// evanphx/json-patch v4, which departs from the RFC in one way that clients
/// rely on: `replace` of a member missing from an object whose parent exists
/// sets it, like `add` (v4's `partialDoc.get` answers nil without an error
/// for a missing key, and `set` inserts). Only array indexes must exist.
/// When the parent itself is missing (or is not a container), v4 answers
/// "replace operation does not apply: doc is missing path: <path>", and
/// an index past the end of an array "doc is missing key: <path>".
/// Every other operation follows the RFC, as in v4. Operations apply in
/// order to `doc`, which is left half-patched on an error: callers patch a
/// copy.
pub(crate) fn json_patch_v4(
    doc: &mut Value,
    ops: &[json_patch::PatchOperation],
) -> Result<(), String> {
    for op in ops {
        if let json_patch::PatchOperation::Replace(r) = op {
            let path = r.path.to_string();
            if let Some(cut) = path.rfind('/') {
                let missing_path =
                    || format!("replace operation does not apply: doc is missing path: {path}");
                let key = path[cut + 1..].replace("~1", "/").replace("~0", "~");
                match doc.pointer_mut(&path[..cut]) {
                    Some(Value::Object(map)) => {
                        map.insert(key, r.value.clone());
                    }
                    Some(Value::Array(items)) => {
                        match key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                            Some(slot) => *slot = r.value.clone(),
                            None => {
                                return Err(format!(
                                    "replace operation does not apply: doc is missing key: {path}"
                                ));
                            }
                        }
                    }
                    _ => return Err(missing_path()),
                }
                continue;
            }
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Removes patch directives from a value that is inserted as is.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn deployment(env: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "odoo", "image": "odoo:17", "env": env, "ports": [{"containerPort": 8069}]},
            {"name": "mail", "image": "mailhog"}
        ]}}}})
    }

    #[test]
    fn containers_and_env_merge_by_name() {
        let mut target =
            deployment(json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "odoo", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}
        ]}}}});
        strategic_merge(&mut target, &patch);
        let containers = &target["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().map(Vec::len), Some(2));
        assert_eq!(containers[0]["image"], "odoo:17");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let mut target = deployment(json!([]));
        let patch = deployment(json!([]));
        strategic_merge(&mut target, &patch);
        strategic_merge(&mut target, &patch);
        assert_eq!(
            target["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 8069}]),
            "re-applying a container's ports does not duplicate them"
        );
        let more = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "odoo", "ports": [{"containerPort": 8069, "name": "http"}, {"containerPort": 8072}]}
        ]}}}});
        strategic_merge(&mut target, &more);
        assert_eq!(
            target["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 8069, "name": "http"}, {"containerPort": 8072}])
        );
    }

    #[test]
    fn directives() {
        let mut target = deployment(json!([{"name": "A", "value": "1"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "mail", "$patch": "delete"}]}}}});
        strategic_merge(&mut target, &patch);
        assert_eq!(
            target["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len),
            Some(1)
        );
        let mut meta = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic_merge(&mut meta, &json!({"metadata": {"finalizers": ["c"]}}));
        assert_eq!(meta["metadata"]["finalizers"], json!(["a", "b", "c"]));
        strategic_merge(
            &mut meta,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(meta["metadata"]["finalizers"], json!(["b", "c"]));
        let mut svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        strategic_merge(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8069}, {"port": 443}]}}),
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8069}, {"port": 443}])
        );
    }

    fn ops(v: Value) -> Vec<json_patch::PatchOperation> {
        serde_json::from_value(v).expect("valid JSON patch")
    }

    #[test]
    fn json_patch_replace_of_a_missing_member_adds_it_like_evanphx_v4() {
        let mut doc = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"ports": [1, 2]}});
        json_patch_v4(
            &mut doc,
            &ops(json!([
                {"op": "replace", "path": "/metadata/annotations/runboat~1last-scaled", "value": "now"},
                {"op": "replace", "path": "/spec/ports/1", "value": 3},
                {"op": "add", "path": "/spec/ports/-", "value": 4}
            ])),
        )
        .expect("v4 applies it");
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"a": "1", "runboat/last-scaled": "now"}}, "spec": {"ports": [1, 3, 4]}})
        );
    }

    #[test]
    fn json_patch_replace_needs_the_parent_and_existing_indexes() {
        let mut doc = json!({"metadata": {"name": "x"}, "spec": {"ports": [1]}});
        let err = json_patch_v4(
            &mut doc,
            &ops(json!([{"op": "replace", "path": "/metadata/annotations/x", "value": "1"}])),
        );
        assert_eq!(
            err,
            Err("replace operation does not apply: doc is missing path: /metadata/annotations/x"
                .into())
        );
        let err = json_patch_v4(
            &mut doc,
            &ops(json!([{"op": "replace", "path": "/spec/ports/1", "value": 2}])),
        );
        assert_eq!(
            err,
            Err("replace operation does not apply: doc is missing key: /spec/ports/1".into())
        );
        // Other operations keep the RFC's rules.
        assert!(
            json_patch_v4(&mut doc, &ops(json!([{"op": "remove", "path": "/metadata/labels"}])))
                .is_err()
        );
        assert!(
            json_patch_v4(&mut doc, &ops(json!([{"op": "add", "path": "/a/b", "value": 1}])))
                .is_err()
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z]{0,3}".prop_map(Value::String)
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z$/]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_plain() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z]{0,3}".prop_map(Value::String)
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::btree_map("[a-z]{1,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest! {
        #[test]
        fn strategic_merge_equals_merge_patch_without_lists(mut a in arb_plain(), p in arb_plain()) {
            let mut b = a.clone();
            strategic_merge(&mut a, &p);
            json_patch::merge(&mut b, &p);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn strategic_merge_never_panics(mut t in arb_json(), p in arb_json()) {
            strategic_merge(&mut t, &p);
        }
    }
}
