//! Field ownership (`metadata.managedFields`), modelled on kube-apiserver's
//! structured-merge-diff (SMD) for the fields runboat and kubectl touch.
//!
//! Each write records which field manager owns which fields, in the
//! `FieldsV1` format (`f:<field>`, `k:<merge keys as JSON>` for items of
//! keyed lists, `v:<value>` for items of set lists, `.` for a node that is
//! owned itself and has owned children):
//!
//! - Server-side apply: the manager's `Apply` entry becomes the set of
//!   fields of its configuration. A field it applied last time and no
//!   longer applies is removed from the object unless another manager owns
//!   it. A field owned by another manager that the apply would change is a
//!   conflict (409, causes of type `FieldManagerConflict`), unless `force`
//!   moves it to the applier.
//! - Other writes (create, update, JSON/merge/strategic patch, `/scale`,
//!   `/status`) record an `Update` entry owning the fields they changed, and
//!   take them from other managers without conflict. The manager is the
//!   `fieldManager` parameter, else the User-Agent up to its first `/`.
//!
//! The schema is approximated by field names, as the strategic merge patch
//! in `patch.rs` is: lists with a merge key are keyed (`containers`, `env`,
//! `volumes` by name, ports by port and protocol, …), finalizers are a set,
//! other lists and label selectors are atomic, and `labels`,
//! `annotations`, `data` and other string maps have their entries owned
//! one by one. Writes kubesim makes itself (simulated controllers, direct
//! store access) record nothing. Every computation is one walk over the
//! object and the field sets, so its cost is linear in the object's size.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// A set of field paths, as a tree keyed by path element (`f:x`, `k:{…}`,
/// `v:…`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    children: BTreeMap<String, Node>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// The path to this node is in the set itself (not only its children).
    member: bool,
    children: FieldSet,
}

/// Object fields the API server never tracks.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Maps whose keys are data (each entry owned on its own), by field name.
fn is_string_map(field: &str) -> bool {
    matches!(
        field,
        "labels"
            | "annotations"
            | "data"
            | "binaryData"
            | "stringData"
            | "nodeSelector"
            | "matchLabels"
            | "limits"
            | "requests"
            | "capacity"
            | "allocatable"
            | "hard"
            | "used"
    )
}

/// The key fields of a keyed list, by field name and parent path.
fn list_keys(field: &str, parent: &[&str]) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "ownerReferences" => &["uid"],
        "conditions" => &["type"],
        "hostAliases" => &["ip"],
        "ports" => {
            if parent.iter().rev().nth(1).is_some_and(|p| p.ends_with("ontainers")) {
                &["containerPort", "protocol"]
            } else {
                &["port", "protocol"]
            }
        }
        _ => return None,
    })
}

fn is_set_list(field: &str, parent: &[&str]) -> bool {
    field == "finalizers" && parent.last() == Some(&"metadata")
}

/// A label selector (`matchLabels`/`matchExpressions`) is atomic.
fn is_atomic_object(field: &str, v: &Value) -> bool {
    field == "selector" && (v.get("matchLabels").is_some() || v.get("matchExpressions").is_some())
}

/// The value of a list item's key field; `protocol` defaults to TCP.
fn key_value(item: &Value, key: &str) -> Value {
    match item.get(key) {
        Some(v) => v.clone(),
        None if key == "protocol" => json!("TCP"),
        None => Value::Null,
    }
}

fn item_key(item: &Value, keys: &[&str]) -> String {
    // serde_json's Map is sorted, as SMD writes key fields.
    let m: Map<String, Value> = keys.iter().map(|k| (k.to_string(), key_value(item, k))).collect();
    format!("k:{}", Value::Object(m))
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The fields set in `obj` (SMD's ToFieldSet). `status` is left out for
    /// kinds whose status is a subresource (`with_status` false), and
    /// everything but `status` for writes to `/status`.
    pub(crate) fn of_object(obj: &Value, part: Part) -> FieldSet {
        let mut set = FieldSet::default();
        let Some(m) = obj.as_object() else { return set };
        for (k, v) in m {
            let keep = match k.as_str() {
                "apiVersion" | "kind" => false,
                "status" => part != Part::Main,
                _ => part != Part::Status,
            };
            if !keep {
                continue;
            }
            if k == "metadata" {
                let mut meta = FieldSet::default();
                if let Some(mm) = v.as_object() {
                    for (mk, mv) in mm {
                        if !UNTRACKED_METADATA.contains(&mk.as_str()) {
                            meta.add_field(mk, mv, &["metadata"]);
                        }
                    }
                }
                if !meta.is_empty() {
                    set.children
                        .insert("f:metadata".into(), Node { member: false, children: meta });
                }
            } else {
                set.add_field(k, v, &[]);
            }
        }
        set
    }

    /// Adds the declared field `name` with value `v` (a struct field: not a
    /// member itself unless it is a leaf).
    fn add_field(&mut self, name: &str, v: &Value, parent: &[&str]) {
        let node = value_node(name, v, parent, false);
        if node.member || !node.children.is_empty() {
            self.children.insert(format!("f:{name}"), node);
        }
    }

    /// Every member path, in order.
    pub(crate) fn members(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.walk_members(&mut path, &mut out);
        out
    }

    fn walk_members(&self, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, node) in &self.children {
            path.push(k.clone());
            if node.member {
                out.push(path.clone());
            }
            node.children.walk_members(path, out);
            path.pop();
        }
    }

    /// The member paths whose values differ between `a` and `b`, in one
    /// walk of both (subtrees equal in both are skipped whole). With
    /// `in_a`, only paths present in `a`.
    fn differing(&self, a: Option<&Value>, b: Option<&Value>, in_a: bool) -> Vec<Vec<String>> {
        fn rec(
            set: &FieldSet,
            a: Option<&Value>,
            b: Option<&Value>,
            in_a: bool,
            path: &mut Vec<String>,
            out: &mut Vec<Vec<String>>,
        ) {
            for (k, node) in &set.children {
                let av = a.and_then(|v| step(v, k));
                if (in_a && av.is_none()) || av == b.and_then(|v| step(v, k)) {
                    continue;
                }
                let bv = b.and_then(|v| step(v, k));
                path.push(k.clone());
                if node.member {
                    out.push(path.clone());
                }
                rec(&node.children, av, bv, in_a, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        rec(self, a, b, in_a, &mut Vec::new(), &mut out);
        out
    }

    /// Calls `f` with every node and its path.
    fn walk_nodes(&self, path: &mut Vec<String>, f: &mut impl FnMut(&[String], &Node)) {
        for (k, node) in &self.children {
            path.push(k.clone());
            f(path, node);
            node.children.walk_nodes(path, f);
            path.pop();
        }
    }

    /// Whether the set holds `path` as a member.
    pub(crate) fn contains(&self, path: &[String]) -> bool {
        let mut set = self;
        for (i, el) in path.iter().enumerate() {
            let Some(node) = set.children.get(el) else { return false };
            if i + 1 == path.len() {
                return node.member;
            }
            set = &node.children;
        }
        false
    }

    /// Whether the set holds `path` or anything below it.
    fn touches(&self, path: &[String]) -> bool {
        let mut set = self;
        for el in path {
            let Some(node) = set.children.get(el) else { return false };
            set = &node.children;
        }
        true
    }

    pub(crate) fn insert(&mut self, path: &[String]) {
        let mut set = self;
        for (i, el) in path.iter().enumerate() {
            let node = set.children.entry(el.clone()).or_default();
            if i + 1 == path.len() {
                node.member = true;
            }
            set = &mut node.children;
        }
    }

    pub(crate) fn remove(&mut self, path: &[String]) {
        fn rec(set: &mut FieldSet, path: &[String]) {
            let Some((first, rest)) = path.split_first() else { return };
            let Some(node) = set.children.get_mut(first) else { return };
            if rest.is_empty() {
                node.member = false;
            } else {
                rec(&mut node.children, rest);
            }
            if !node.member && node.children.is_empty() {
                set.children.remove(first);
            }
        }
        rec(self, path);
    }

    /// Keeps only the paths that still exist in `obj`.
    fn retain_present(&mut self, obj: &Value) {
        self.children.retain(|k, node| match step(obj, k) {
            Some(child) => {
                node.children.retain_present(child);
                node.member || !node.children.is_empty()
            }
            None => false,
        });
    }

    /// The `fieldsV1` JSON form.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, node) in &self.children {
            let mut inner = match node.children.to_json() {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            if node.member && !inner.is_empty() {
                inner.insert(".".into(), json!({}));
            }
            m.insert(k.clone(), Value::Object(inner));
        }
        Value::Object(m)
    }

    pub(crate) fn from_json(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(m) = v.as_object() {
            for (k, child) in m {
                if k == "." {
                    continue;
                }
                let children = FieldSet::from_json(child);
                let empty = child.as_object().is_none_or(Map::is_empty);
                let member = empty || child.get(".").is_some();
                set.children.insert(k.clone(), Node { member, children });
            }
        }
        set
    }
}

/// The node for value `v` of field `name`; `keyed` says whether its path
/// element is a map entry or list item (a member even when not a leaf).
fn value_node(name: &str, v: &Value, parent: &[&str], keyed: bool) -> Node {
    match v {
        Value::Object(m) if !is_atomic_object(name, v) => {
            let mut children = FieldSet::default();
            let mut path: Vec<&str> = parent.to_vec();
            path.push(name);
            let entries_are_keys = is_string_map(name);
            for (k, cv) in m {
                if entries_are_keys {
                    let node = value_node(k, cv, &path, true);
                    children.children.insert(format!("f:{k}"), node);
                } else {
                    children.add_field(k, cv, &path);
                }
            }
            Node { member: keyed, children }
        }
        Value::Array(items) => {
            let mut path: Vec<&str> = parent.to_vec();
            path.push(name);
            if let Some(keys) = list_keys(name, parent) {
                let mut children = FieldSet::default();
                for item in items {
                    let node = value_node("", item, &path, true);
                    children.children.insert(item_key(item, keys), node);
                }
                Node { member: false, children }
            } else if is_set_list(name, parent) {
                let mut children = FieldSet::default();
                for item in items {
                    children
                        .children
                        .insert(format!("v:{item}"), Node { member: true, ..Node::default() });
                }
                Node { member: false, children }
            } else {
                Node { member: true, children: FieldSet::default() }
            }
        }
        _ => Node { member: true, children: FieldSet::default() },
    }
}

/// The child of `v` named by one path element.
fn step<'a>(v: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(name) = el.strip_prefix("f:") {
        return v.get(name);
    }
    let items = v.as_array()?;
    if let Some(key) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items.iter().find(|item| key.iter().all(|(k, kv)| key_value(item, k) == *kv));
    }
    if let Some(value) = el.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        return items.iter().find(|item| **item == value);
    }
    None
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, el| step(cur, el))
}

/// Removes the value at `path` from `v`.
fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else { return };
    let mut cur = v;
    for el in parent_path {
        let next = if let Some(name) = el.strip_prefix("f:") {
            cur.get_mut(name)
        } else {
            let target = step(cur, el).cloned();
            cur.as_array_mut()
                .and_then(|items| items.iter_mut().find(|i| Some(&**i) == target.as_ref()))
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
    } else if let Some(target) = step(cur, last).cloned()
        && let Some(items) = cur.as_array_mut()
    {
        items.retain(|i| *i != target);
    }
}

/// A path as SMD prints it: `.spec.replicas`, `.spec.containers[name="x"].image`.
pub(crate) fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(name) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = el.strip_prefix("k:") {
            let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", fields.join(",")));
        } else if let Some(value) = el.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource of a kind whose status is a subresource.
    Main,
    /// The `/status` subresource.
    Status,
    /// Everything (kinds without a status subresource).
    All,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) apply: bool,
    pub(crate) api_version: String,
    pub(crate) subresource: Option<String>,
    pub(crate) time: String,
    pub(crate) set: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, apply: bool, subresource: Option<&str>) -> bool {
        self.manager == manager && self.apply == apply && self.subresource.as_deref() == subresource
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": if self.apply { "Apply" } else { "Update" },
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_json(),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    /// How the API server names the manager in a conflict message.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if !self.apply {
            s.push_str(&format!(" using {} at {}", self.api_version, self.time));
        }
        s
    }
}

/// The `managedFields` entries of `obj`.
pub(crate) fn entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                apply: e.get("operation").and_then(Value::as_str) == Some("Apply"),
                api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or_default().into(),
                subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
                time: e.get("time").and_then(Value::as_str).unwrap_or_default().into(),
                set: FieldSet::from_json(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Stores `entries` in `obj` (dropping empty ones; no key when none is left).
pub(crate) fn store(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> =
        entries.iter().filter(|e| !e.set.is_empty()).map(Entry::to_json).collect();
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Records a non-apply write of `old` into `new` by `manager`: it owns the
/// fields it changed, other managers lose them, and paths that no longer
/// exist are forgotten. `new`'s own managedFields, when a client sent
/// some, replace the old ones first (as on a real server).
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    part: Part,
    api_version: &str,
    now: &str,
) {
    let sent = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    let mut list = if sent { entries(new) } else { old.map(entries).unwrap_or_default() };
    let new_set = FieldSet::of_object(new, part);
    let mut changed = FieldSet::default();
    for path in new_set.differing(old, Some(new), false) {
        changed.insert(&path);
    }
    // A string map the write brings into being (absent from the old object,
    // as from the Go zero value a create starts from) is owned itself too:
    // the API server's `.` under `f:labels` in an update's entry.
    let mut added_maps = Vec::new();
    new_set.walk_nodes(&mut Vec::new(), &mut |path, node| {
        let is_map = path.last().and_then(|el| el.strip_prefix("f:")).is_some_and(is_string_map);
        if is_map && !node.children.is_empty() && old.and_then(|o| value_at(o, path)).is_none() {
            added_maps.push(path.to_vec());
        }
    });
    for path in &added_maps {
        changed.insert(path);
    }
    let changed_paths = changed.members();
    for e in &mut list {
        for path in &changed_paths {
            e.set.remove(path);
        }
        e.set.retain_present(new);
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| e.same_owner(manager, false, subresource)) {
            Some(e) => {
                for path in &changed_paths {
                    e.set.insert(path);
                }
                e.time = now.to_string();
            }
            None => list.push(Entry {
                manager: manager.to_string(),
                apply: false,
                api_version: api_version.to_string(),
                subresource: subresource.map(str::to_string),
                time: now.to_string(),
                set: changed,
            }),
        }
    }
    store(new, &list);
}

/// Server-side apply with ownership: prunes what `manager` applied before
/// and no longer applies (unless another manager owns it), merges `config`
/// with `merge`, checks conflicts with other managers, and records the
/// manager's `Apply` entry. `live` is the object before the apply (None
/// when the apply creates it); `target` starts as its copy and ends as the
/// result.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    live: Option<&Value>,
    target: &mut Value,
    config: &Value,
    manager: &str,
    force: bool,
    part: Part,
    api_version: &str,
    now: &str,
    merge: impl FnOnce(&mut Value, &Value),
) -> Result<(), ApiError> {
    let mut list = live.map(entries).unwrap_or_default();
    let config_set = FieldSet::of_object(config, part);
    let subresource = match part {
        Part::Status => Some("status"),
        _ => None,
    };
    if let Some(previous) = list.iter().find(|e| e.same_owner(manager, true, subresource)) {
        let others: Vec<&Entry> =
            list.iter().filter(|e| !e.same_owner(manager, true, subresource)).collect();
        // Deepest paths first, so that removing an item does not hide its fields.
        let mut dropped: Vec<Vec<String>> =
            previous.set.members().into_iter().filter(|p| !config_set.touches(p)).collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for path in dropped {
            if !others.iter().any(|e| e.set.touches(&path)) {
                remove_at(target, &path);
            }
        }
    }
    merge(target, config);

    // Conflicts: fields of the configuration that another manager owns and
    // whose value the apply changes.
    let mut conflicts: Vec<(usize, Vec<String>)> = Vec::new();
    if let Some(live) = live {
        for path in config_set.differing(Some(live), Some(target), true) {
            for (i, e) in list.iter().enumerate() {
                if !e.same_owner(manager, true, subresource) && e.set.contains(&path) {
                    conflicts.push((i, path.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(&list, &conflicts));
        }
        for (i, path) in &conflicts {
            if let Some(e) = list.get_mut(*i) {
                e.set.remove(path);
            }
        }
    }
    // A no-op apply changes nothing, not even the entry's time (else every
    // repeated apply would make a new resourceVersion).
    let object_changed = live.is_none_or(|l| !same_but_managed_fields(l, target));
    match list.iter_mut().find(|e| e.same_owner(manager, true, subresource)) {
        Some(e) => {
            if object_changed || e.set != config_set {
                e.time = now.to_string();
            }
            e.set = config_set;
            e.api_version = api_version.to_string();
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            apply: true,
            api_version: api_version.to_string(),
            subresource: subresource.map(str::to_string),
            time: now.to_string(),
            set: config_set,
        }),
    }
    for e in &mut list {
        e.set.retain_present(target);
    }
    store(target, &list);
    Ok(())
}

/// Whether two objects differ in nothing but `metadata.managedFields`.
fn same_but_managed_fields(a: &Value, b: &Value) -> bool {
    let (Some(am), Some(bm)) = (a.as_object(), b.as_object()) else { return a == b };
    let keys = |m: &Map<String, Value>| m.keys().filter(|k| *k != "metadata").count();
    if keys(am) != keys(bm) || am.iter().any(|(k, v)| k != "metadata" && bm.get(k) != Some(v)) {
        return false;
    }
    let meta = |m: &Map<String, Value>| -> Vec<(String, Value)> {
        m.get("metadata")
            .and_then(Value::as_object)
            .map(|mm| {
                mm.iter()
                    .filter(|(k, _)| *k != "managedFields")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    meta(am) == meta(bm)
}

/// The API server's 409 for apply conflicts.
fn conflict_error(list: &[Entry], conflicts: &[(usize, Vec<String>)]) -> ApiError {
    let describe = |i: usize| list.get(i).map(Entry::describe).unwrap_or_default();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, path)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", describe(*i)), "field": path_string(path)})
        })
        .collect();
    let message = if let [(i, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            describe(*i),
            path_string(path)
        )
    } else {
        let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, path) in conflicts {
            by_manager.entry(describe(*i)).or_default().push(path_string(path));
        }
        let mut lines = Vec::new();
        for (manager, paths) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    ApiError { details: Some(json!({"causes": causes})), ..ApiError::new(409, "Conflict", message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["runboat/cleanup"]},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "odoo", "image": image, "ports": [{"containerPort": 8069}], "args": ["a"]}
                ]}}
            },
            "status": {"replicas": 1}
        })
    }

    #[test]
    fn fields_v1_as_the_api_server_writes_it() {
        let set = FieldSet::of_object(&deployment(1, "odoo:17"), Part::Main);
        assert_eq!(
            set.to_json(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"runboat/cleanup\"": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"odoo\"}": {
                        ".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                        "f:ports": {"k:{\"containerPort\":8069,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}}
                }
            })
        );
        assert_eq!(FieldSet::from_json(&set.to_json()), set, "round trip");
        let paths: Vec<String> = set.members().iter().map(|p| path_string(p)).collect();
        assert!(paths.contains(&".spec.replicas".to_string()), "{paths:?}");
        assert!(
            paths.contains(&".spec.template.spec.containers[name=\"odoo\"].image".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&".metadata.finalizers[=\"runboat/cleanup\"]".to_string()));
    }

    fn do_apply(
        live: &Value,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        let mut target = live.clone();
        apply(
            Some(live),
            &mut target,
            config,
            manager,
            force,
            Part::Main,
            "apps/v1",
            "t2",
            crate::patch::strategic_merge,
        )?;
        Ok(target)
    }

    #[test]
    fn an_apply_changing_another_managers_field_conflicts_unless_forced() {
        let mut live = deployment(1, "odoo:17");
        record_update(
            None,
            &mut live,
            "kubectl-client-side-apply",
            None,
            Part::Main,
            "apps/v1",
            "t1",
        );
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = do_apply(&live, &config, "runboat", false).expect_err("a conflict");
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1 at t1: .spec.replicas"
        );
        assert_eq!(
            err.details,
            Some(
                json!({"causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-client-side-apply\" using apps/v1 at t1", "field": ".spec.replicas"}]})
            )
        );
        // The same value is no conflict: both own it.
        let same = json!({"spec": {"replicas": 1}});
        let shared = do_apply(&live, &same, "runboat", false).expect("no conflict");
        let owners: Vec<String> = entries(&shared)
            .iter()
            .filter(|e| e.set.contains(&["f:spec".into(), "f:replicas".into()]))
            .map(|e| e.manager.clone())
            .collect();
        assert_eq!(owners, ["kubectl-client-side-apply", "runboat"]);
        // Forced: the field moves to the applier.
        let forced = do_apply(&live, &config, "runboat", true).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let list = entries(&forced);
        let path = ["f:spec".to_string(), "f:replicas".to_string()];
        assert!(!list[0].set.contains(&path) && list[1].set.contains(&path), "{list:?}");
    }

    #[test]
    fn apply_removes_what_it_no_longer_applies_unless_another_manager_owns_it() {
        let live = json!({"metadata": {"name": "c"}, "data": {}});
        let first = json!({"data": {"a": "1", "b": "2", "c": "3"}});
        let mut target = live.clone();
        apply(
            None,
            &mut target,
            &first,
            "m",
            false,
            Part::All,
            "v1",
            "t1",
            crate::patch::strategic_merge,
        )
        .expect("applied");
        // Someone else takes b with an update.
        let before = target.clone();
        target["data"]["b"] = json!("x");
        record_update(Some(&before), &mut target, "editor", None, Part::All, "v1", "t2");
        let second = json!({"data": {"a": "1"}});
        let live = target.clone();
        apply(
            Some(&live),
            &mut target,
            &second,
            "m",
            false,
            Part::All,
            "v1",
            "t3",
            crate::patch::strategic_merge,
        )
        .expect("applied");
        assert_eq!(target["data"], json!({"a": "1", "b": "x"}), "c pruned, b kept: {target}");
    }

    #[test]
    fn updates_take_changed_fields_and_forget_removed_ones() {
        let old = json!({"metadata": {"name": "c", "annotations": {"a": "1", "b": "2"}}});
        let mut created = old.clone();
        record_update(None, &mut created, "creator", None, Part::All, "v1", "t1");
        let mut new = created.clone();
        new["metadata"]["annotations"] = json!({"a": "9"});
        record_update(Some(&created), &mut new, "kubectl-annotate", None, Part::All, "v1", "t2");
        let list = entries(&new);
        // The creator lost a, b is gone, and it still owns the map itself.
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].set.to_json(), json!({"f:metadata": {"f:annotations": {}}}));
        assert_eq!(list[1].manager, "kubectl-annotate");
        assert_eq!(list[1].set.to_json(), json!({"f:metadata": {"f:annotations": {"f:a": {}}}}));
        // A created map is owned itself (`.`), as the API server records it.
        assert_eq!(
            entries(&created)[0].set.to_json(),
            json!({"f:metadata": {"f:annotations": {".": {}, "f:a": {}, "f:b": {}}}})
        );
    }
}
