//! The verbs, with Kubernetes semantics, independent of HTTP: get, list,
//! create, update, patch, delete and deletecollection, with dry-run,
//! optimistic concurrency, defaulting, validation and finalizers.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::resources::{self, NAMESPACES, PODS, ResId, ResourceDef};
use crate::selector::{FieldSelector, LabelSelector};
use crate::sim::Inner;
use crate::status::{ApiError, Cause, success_status};
use crate::store::{Key, State, StoredObject};
use crate::validate;
use crate::{managed, patch};

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
    Scale,
}

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub(crate) dry_run: bool,
    pub(crate) field_manager: Option<String>,
    /// Server-side apply's `force`: take conflicting fields.
    pub(crate) force: bool,
    /// The client's User-Agent, which names the field manager of writes
    /// without `fieldManager`.
    pub(crate) user_agent: Option<String>,
}

impl WriteOpts {
    /// The field manager of a write, as the API server names it: the
    /// `fieldManager` parameter, else the User-Agent up to its first `/`.
    /// None for kubesim's own writes, which record no ownership.
    pub(crate) fn manager(&self) -> Option<&str> {
        self.field_manager
            .as_deref()
            .filter(|m| !m.is_empty())
            .or_else(|| self.user_agent.as_deref().and_then(|u| u.split('/').next()))
            .filter(|m| !m.is_empty())
    }
}

/// The part of an object a write to `sub` owns fields in.
fn part_of(def: &ResourceDef, sub: Sub) -> managed::Part {
    match sub {
        Sub::Status => managed::Part::Status,
        _ if def.has_status_subresource() => managed::Part::Main,
        _ => managed::Part::All,
    }
}

fn subresource_name(sub: Sub) -> Option<&'static str> {
    match sub {
        Sub::Main => None,
        Sub::Status => Some("status"),
        Sub::Scale => Some("scale"),
    }
}

/// Patch flavours, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub(crate) fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub(crate) dry_run: bool,
    pub(crate) propagation: Option<String>,
    pub(crate) grace_period: Option<i64>,
    pub(crate) precondition_uid: Option<String>,
    pub(crate) precondition_rv: Option<String>,
}

/// A list query.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) resource_version_match: Option<String>,
}

/// The answer of a write: HTTP status and body.
pub(crate) type WriteResult = Result<(u16, Bytes), ApiError>;

pub(crate) fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn str_field<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Standard base64 with padding, as the API server writes a Secret's
/// `data` from its `stringData`.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A field selector value looked up in an object.
pub(crate) fn field_value(key: &Key, obj: &StoredObject, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(key.1.clone()),
        "metadata.namespace" => Some(key.0.clone()),
        _ => {
            let v = obj.value();
            let pointer = format!("/{}", field.replace('.', "/"));
            match v.pointer(&pointer) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            }
        }
    }
}

impl Inner {
    fn new_uid(&self) -> String {
        let n = self.next_id();
        let a = splitmix(n ^ self.seed);
        let b = splitmix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// Five characters as `generateName` appends.
    pub(crate) fn random_suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut x = splitmix(self.next_id() ^ self.seed.rotate_left(17));
        let mut s = String::with_capacity(5);
        for _ in 0..5 {
            s.push(char::from(ALPHABET[(x % ALPHABET.len() as u64) as usize]));
            x /= ALPHABET.len() as u64;
        }
        s
    }

    fn check_namespace(&self, state: &State, res: &ResourceDef, ns: &str) -> Result<(), ApiError> {
        if !res.namespaced {
            return Ok(());
        }
        match state.get(NAMESPACES, "", ns) {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(nsobj) => {
                let v = nsobj.value();
                if v.pointer("/metadata/deletionTimestamp").is_some() {
                    Err(ApiError {
                        details: Some(
                            json!({"name": ns, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                        ),
                        ..ApiError::forbidden(format!(
                            "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            res.plural
                        ))
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Defaults applied on every write, like the API server's defaulting.
    fn default_fields(&self, res: ResId, v: &mut Value, creating: bool) {
        let def = resources::def(res);
        match def.plural {
            "deployments" => {
                let spec = &mut v["spec"];
                if spec.get("replicas").is_none_or(Value::is_null) {
                    spec["replicas"] = json!(1);
                }
                if spec.get("revisionHistoryLimit").is_none() {
                    spec["revisionHistoryLimit"] = json!(10);
                }
                if spec.get("progressDeadlineSeconds").is_none() {
                    spec["progressDeadlineSeconds"] = json!(600);
                }
                if spec.get("strategy").is_none() {
                    spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
                }
                default_pod_spec(&mut v["spec"]["template"]["spec"], "Always");
            }
            "replicasets" => default_pod_spec(&mut v["spec"]["template"]["spec"], "Always"),
            "jobs" => {
                let spec = &mut v["spec"];
                for (k, d) in [("backoffLimit", 6), ("completions", 1), ("parallelism", 1)] {
                    if spec.get(k).is_none_or(Value::is_null) {
                        spec[k] = json!(d);
                    }
                }
                if spec.get("completionMode").is_none() {
                    spec["completionMode"] = json!("NonIndexed");
                }
                if spec.get("suspend").is_none() {
                    spec["suspend"] = json!(false);
                }
                let manual = spec.get("manualSelector").and_then(Value::as_bool).unwrap_or(false);
                default_pod_spec(&mut v["spec"]["template"]["spec"], "Never");
                if creating && !manual {
                    let uid = v["metadata"]["uid"].clone();
                    let name = v["metadata"]["name"].clone();
                    let labels = &mut v["spec"]["template"]["metadata"]["labels"];
                    labels["batch.kubernetes.io/controller-uid"] = uid.clone();
                    labels["batch.kubernetes.io/job-name"] = name.clone();
                    labels["controller-uid"] = uid.clone();
                    labels["job-name"] = name;
                    v["spec"]["selector"] =
                        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                }
            }
            "pods" => {
                default_pod_spec(&mut v["spec"], "Always");
                if creating && v.pointer("/status/phase").is_none() {
                    v["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
            }
            "services" => {
                let spec = &mut v["spec"];
                if spec.get("type").is_none() {
                    spec["type"] = json!("ClusterIP");
                }
                if spec.get("sessionAffinity").is_none() {
                    spec["sessionAffinity"] = json!("None");
                }
                if creating && spec.get("clusterIP").is_none() && spec["type"] != "ExternalName" {
                    let n = self.next_id();
                    spec["clusterIP"] = json!(format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 1));
                    spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if p.get("protocol").is_none() {
                            p["protocol"] = json!("TCP");
                        }
                        if p.get("targetPort").is_none() {
                            p["targetPort"] = p["port"].clone();
                        }
                    }
                }
                if creating && v.get("status").is_none() {
                    v["status"] = json!({"loadBalancer": {}});
                }
            }
            "secrets" => {
                if v.get("type").is_none() {
                    v["type"] = json!("Opaque");
                }
                if let Some(Value::Object(string_data)) =
                    v.as_object_mut().and_then(|m| m.remove("stringData"))
                {
                    for (k, s) in string_data {
                        v["data"][k] = json!(base64(s.as_str().unwrap_or_default().as_bytes()));
                    }
                }
            }
            "persistentvolumeclaims" => {
                if v.pointer("/spec/volumeMode").is_none() {
                    v["spec"]["volumeMode"] = json!("Filesystem");
                }
                if creating {
                    let capacity =
                        v.pointer("/spec/resources/requests").cloned().unwrap_or(json!({}));
                    let modes =
                        v.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"]));
                    v["status"] =
                        json!({"phase": "Bound", "accessModes": modes, "capacity": capacity});
                }
            }
            "namespaces" => {
                let name = v["metadata"]["name"].clone();
                v["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                if creating {
                    v["spec"] = json!({"finalizers": ["kubernetes"]});
                    v["status"] = json!({"phase": "Active"});
                }
            }
            _ => {}
        }
    }

    /// Prepares a new object for storage; errors as the API server would.
    fn prepare_create(
        &self,
        state: &State,
        res: ResId,
        ns: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        let def = resources::def(res);
        if let Some(why) = validate::shape_error(&body) {
            return Err(ApiError::bad_request(why));
        }
        if let Some(kind) = str_field(&body, "/kind")
            && kind != def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                str_field(&body, "/apiVersion").unwrap_or_default(),
                def.api_version()
            ))
            .with_kind_mismatch(kind, def));
        }
        body["kind"] = json!(def.kind);
        body["apiVersion"] = json!(def.api_version());
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        if def.namespaced {
            match str_field(&body, "/metadata/namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => body["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let name = str_field(&body, "/metadata/name").unwrap_or_default().to_string();
        if name.is_empty() {
            match str_field(&body, "/metadata/generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    body["metadata"]["name"] = json!(format!("{prefix}{}", self.random_suffix()));
                }
                _ => {
                    return Err(ApiError::invalid(
                        def,
                        "",
                        vec![
                            Cause::required("metadata.name")
                                .with_message("Required value: name or generateName is required"),
                        ],
                    ));
                }
            }
        }
        let name = str_field(&body, "/metadata/name").unwrap_or_default().to_string();
        self.check_namespace(state, def, ns)?;
        let meta = body["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
        meta.insert("uid".into(), json!(self.new_uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        if def.has_generation {
            meta.insert("generation".into(), json!(1));
        }
        if def.has_status_subresource() && def.plural != "services" && def.plural != "namespaces" {
            // Status written with a create is dropped, like the real server's strategies.
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        self.default_fields(res, &mut body, true);
        let causes = validate::validate(res, &body);
        if !causes.is_empty() {
            return Err(ApiError::invalid(def, &name, causes));
        }
        if state.get(res, if def.namespaced { ns } else { "" }, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        Ok(body)
    }

    /// create: 201 with the stored object.
    pub(crate) fn create(
        &self,
        res: ResId,
        ns: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> WriteResult {
        let def = resources::def(res);
        let ns = if def.namespaced { ns } else { "" };
        self.store.write(|state| {
            let mut obj = self.prepare_create(state, res, ns, body)?;
            if let Some(manager) = opts.manager() {
                managed::record_update(
                    None,
                    &mut obj,
                    manager,
                    None,
                    part_of(def, Sub::Main),
                    &def.api_version(),
                    &now(),
                );
            }
            if opts.dry_run {
                return Ok((201, to_bytes(&obj)));
            }
            let name = str_field(&obj, "/metadata/name").unwrap_or_default().to_string();
            let stored = state.commit(res, ns, &name, Some(obj));
            Ok((201, stored.json.clone()))
        })
    }

    pub(crate) fn get(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
    ) -> Result<Arc<StoredObject>, ApiError> {
        let def = resources::def(res);
        let ns = if def.namespaced { ns } else { "" };
        self.store.read().get(res, ns, name).cloned().ok_or_else(|| ApiError::not_found(def, name))
    }

    /// Finishes an update of `old` into `new`: carries over what clients may
    /// not change, checks the resourceVersion, validates, and stores unless
    /// nothing changed or it is a dry run.
    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &self,
        state: &mut State,
        res: ResId,
        ns: &str,
        name: &str,
        old: &Value,
        mut new: Value,
        sub: Sub,
        opts: &WriteOpts,
        record: Option<Sub>,
    ) -> Result<Bytes, ApiError> {
        let def = resources::def(res);
        if let Some(why) = validate::shape_error(&new) {
            return Err(ApiError::bad_request(why));
        }
        if let Some(n) = str_field(&new, "/metadata/name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if def.namespaced
            && let Some(n) = str_field(&new, "/metadata/namespace")
            && !n.is_empty()
            && n != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old_rv = rv_of(old).unwrap_or_default().to_string();
        if let Some(rv) = rv_of(&new)
            && rv != old_rv
        {
            return Err(ApiError::conflict(def, name));
        }
        if sub == Sub::Status {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        } else if def.has_status_subresource() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        new["kind"] = json!(def.kind);
        new["apiVersion"] = json!(def.api_version());
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        new["metadata"]["resourceVersion"] = json!(old_rv);
        self.default_fields(res, &mut new, false);
        // Field ownership: kept when the client sent none, then updated for
        // what this write changed (apply records its own before).
        let sent = new
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
        if !sent {
            match old.pointer("/metadata/managedFields") {
                Some(m) => new["metadata"]["managedFields"] = m.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove("managedFields");
                    }
                }
            }
        }
        if let (Some(record), Some(manager)) = (record, opts.manager()) {
            managed::record_update(
                Some(old),
                &mut new,
                manager,
                subresource_name(record),
                part_of(def, record),
                &def.api_version(),
                &now(),
            );
        }
        if def.has_generation && sub != Sub::Status {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            if strip(old) != strip(&new) {
                let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                new["metadata"]["generation"] = json!(g + 1);
            }
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let old_f = finalizers(old);
            if finalizers(&new).iter().any(|f| !old_f.contains(f)) {
                return Err(ApiError::invalid(
                    def,
                    name,
                    vec![Cause::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        let causes = validate::validate(res, &new);
        if !causes.is_empty() {
            return Err(ApiError::invalid(def, name, causes));
        }
        if new == *old {
            return Ok(to_bytes(old));
        }
        if opts.dry_run {
            return Ok(to_bytes(&new));
        }
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            state.commit(res, ns, name, Some(new));
            let gone = state.commit(res, ns, name, None);
            return Ok(gone.json.clone());
        }
        Ok(state.commit(res, ns, name, Some(new)).json.clone())
    }

    /// update (PUT) of the object, its status or its scale.
    pub(crate) fn update(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
        body: Value,
        sub: Sub,
        opts: &WriteOpts,
    ) -> WriteResult {
        let def = resources::def(res);
        let ns = if def.namespaced { ns } else { "" };
        self.store.write(|state| {
            let old =
                state.get(res, ns, name).ok_or_else(|| ApiError::not_found(def, name))?.value();
            if sub == Sub::Scale {
                let new = scale_into(&old, &body)?;
                let out = self.finish_update(
                    state,
                    res,
                    ns,
                    name,
                    &old,
                    new,
                    Sub::Main,
                    opts,
                    Some(Sub::Scale),
                )?;
                return Ok((200, to_bytes(&scale_of(def, &parse(&out)))));
            }
            let out = self.finish_update(state, res, ns, name, &old, body, sub, opts, Some(sub))?;
            Ok((200, out))
        })
    }

    /// patch of any flavour; server-side apply creates absent objects.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &[u8],
        sub: Sub,
        opts: &WriteOpts,
    ) -> WriteResult {
        let def = resources::def(res);
        let ns = if def.namespaced { ns } else { "" };
        let patch_value: Value = match ptype {
            PatchType::Apply => match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    let text = std::str::from_utf8(body)
                        .map_err(|_| ApiError::bad_request("apply patch is not UTF-8"))?;
                    serde_saphyr::from_str(text)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
                }
            },
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        if ptype == PatchType::Apply && opts.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests must supply a fieldManager",
            ));
        }
        self.store.write(|state| {
            let Some(existing) = state.get(res, ns, name).cloned() else {
                if ptype == PatchType::Apply && sub == Sub::Main {
                    if let Some(why) = validate::shape_error(&patch_value) {
                        return Err(ApiError::bad_request(why));
                    }
                    if let Some(n) = str_field(&patch_value, "/metadata/name")
                        && n != name {
                            return Err(ApiError::bad_request(format!("the name of the object ({n}) does not match the name on the URL ({name})")));
                        }
                    let mut body = patch_value.clone();
                    if body.is_object() {
                        body["metadata"]["name"] = json!(name);
                    }
                    let obj = self.prepare_create(state, res, ns, body)?;
                    let mut obj = obj;
                    let mut config = patch_value.clone();
                    if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    managed::apply(
                        None,
                        &mut obj,
                        &config,
                        opts.manager().unwrap_or_default(),
                        opts.force,
                        part_of(def, Sub::Main),
                        &def.api_version(),
                        &now(),
                        |_, _| {},
                    )?;
                    if opts.dry_run {
                        return Ok((201, to_bytes(&obj)));
                    }
                    let stored = state.commit(res, ns, name, Some(obj));
                    return Ok((201, stored.json.clone()));
                }
                return Err(ApiError::not_found(def, name));
            };
            let old = existing.value();
            let working = if sub == Sub::Scale { scale_of(def, &old) } else { old.clone() };
            let mut patched = working.clone();
            match ptype {
                PatchType::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(patch_value.clone())
                        .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
                    patch::json_patch_v4(&mut patched, &ops).map_err(|e| ApiError {
                        details: Some(json!({"name": name, "group": def.group, "kind": def.kind})),
                        ..ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                    })?;
                }
                PatchType::Merge => json_patch::merge(&mut patched, &patch_value),
                PatchType::Strategic => {
                    if !patch_value.is_object() {
                        return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
                    }
                    patch::strategic_merge(&mut patched, &patch_value)
                }
                PatchType::Apply => {
                    if !patch_value.is_object() {
                        return Err(ApiError::bad_request("apply configuration must be an object"));
                    }
                    if let Some(kind) = str_field(&patch_value, "/kind")
                        && kind != def.kind && sub == Sub::Main {
                            return Err(ApiError::bad_request(format!("kind {kind} does not match the resource {}", def.kind)));
                        }
                    let mut applied = patch_value.clone();
                    // The applied configuration's resourceVersion, if any, is a precondition.
                    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    if sub == Sub::Scale {
                        patch::strategic_merge(&mut patched, &applied);
                    } else {
                        managed::apply(
                            Some(&old),
                            &mut patched,
                            &applied,
                            opts.manager().unwrap_or_default(),
                            opts.force,
                            part_of(def, sub),
                            &def.api_version(),
                            &now(),
                            patch::strategic_merge,
                        )?;
                    }
                    if let Some(rv) = rv_of(&patch_value) {
                        patched["metadata"]["resourceVersion"] = json!(rv);
                    }
                }
            }
            // Apply recorded its ownership above; other patches record an update.
            let record = if ptype == PatchType::Apply { None } else { Some(sub) };
            let out = if sub == Sub::Scale {
                let new = scale_into(&old, &patched)?;
                let out = self
                    .finish_update(state, res, ns, name, &old, new, Sub::Main, opts, record)?;
                to_bytes(&scale_of(def, &parse(&out)))
            } else {
                self.finish_update(state, res, ns, name, &old, patched, sub, opts, record)?
            };
            Ok((200, out))
        })
    }

    /// delete: 200 with a success Status when the object is gone, 202 with
    /// the object while finalizers hold it.
    pub(crate) fn delete(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> WriteResult {
        let def = resources::def(res);
        let ns = if def.namespaced { ns } else { "" };
        self.store.write(|state| self.delete_locked(state, res, ns, name, opts))
    }

    pub(crate) fn delete_locked(
        &self,
        state: &mut State,
        res: ResId,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> WriteResult {
        let def = resources::def(res);
        let existing =
            state.get(res, ns, name).cloned().ok_or_else(|| ApiError::not_found(def, name))?;
        let mut v = existing.value();
        if let Some(uid) = &opts.precondition_uid
            && *uid != existing.uid
        {
            return Err(ApiError {
                details: Some(json!({"name": name, "group": def.group, "kind": def.plural})),
                ..ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        def.qualified(),
                        existing.uid
                    ),
                )
            });
        }
        if let Some(rv) = &opts.precondition_rv
            && *rv != existing.rv.to_string()
        {
            return Err(ApiError {
                details: Some(json!({"name": name, "group": def.group, "kind": def.plural})),
                ..ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        def.qualified(),
                        existing.rv
                    ),
                )
            });
        }
        let policy = opts.propagation.clone().unwrap_or_else(|| {
            if def.plural == "jobs" { "Orphan".into() } else { "Background".into() }
        });
        if !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid(
                def,
                name,
                vec![Cause::unsupported(
                    "propagationPolicy",
                    &policy,
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
        if opts.dry_run {
            return Ok((200, existing.json.clone()));
        }
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            // Already being deleted: nothing changes.
            return Ok((202, existing.json.clone()));
        }
        let has_dependents = state.dependents.get(&existing.uid).is_some_and(|d| !d.is_empty());
        if policy == "Orphan" && has_dependents {
            let deps: Vec<_> = state
                .dependents
                .get(&existing.uid)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default();
            for (dres, dns, dname) in deps {
                if let Some(dep) = state.get(dres, &dns, &dname) {
                    let mut dv = dep.value();
                    if let Some(refs) =
                        dv.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r["uid"].as_str() != Some(existing.uid.as_str()));
                    }
                    state.commit(dres, &dns, &dname, Some(dv));
                }
            }
        }
        let mut fins = finalizers(&v);
        if policy == "Foreground"
            && has_dependents
            && !fins.iter().any(|f| f == "foregroundDeletion")
        {
            fins.push("foregroundDeletion".into());
            v["metadata"]["finalizers"] = json!(fins);
        }
        if res == NAMESPACES {
            return Ok(self.delete_namespace(state, name, v));
        }
        if res == PODS && fins.is_empty() {
            let delay = self.controller_config().pod_termination_delay;
            let grace = opts.grace_period.unwrap_or_else(|| {
                v.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            });
            let terminal = matches!(
                v.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if !delay.is_zero() && grace > 0 && !terminal {
                // Graceful deletion: the simulated kubelet removes the pod later.
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                v["metadata"]["deletionTimestamp"] = json!(
                    jiff::Timestamp::from_second(at.as_second())
                        .map(|t| t.to_string())
                        .unwrap_or_else(|_| now())
                );
                v["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let stored = state.commit(res, ns, name, Some(v));
                return Ok((200, stored.json.clone()));
            }
        }
        if fins.is_empty() {
            state.commit(res, ns, name, None);
            return Ok((200, to_bytes(&success_status(name, def, &existing.uid))));
        }
        v["metadata"]["deletionTimestamp"] = json!(now());
        v["metadata"]["deletionGracePeriodSeconds"] = json!(opts.grace_period.unwrap_or(0).max(0));
        let stored = state.commit(res, ns, name, Some(v));
        Ok((202, stored.json.clone()))
    }

    /// A namespace is marked Terminating; its content is deleted now and the
    /// namespace goes once nothing is left (objects with finalizers wait).
    fn delete_namespace(&self, state: &mut State, name: &str, mut v: Value) -> (u16, Bytes) {
        v["metadata"]["deletionTimestamp"] = json!(now());
        v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        v["status"]["phase"] = json!("Terminating");
        state.commit(NAMESPACES, "", name, Some(v));
        let stored = self.finish_namespace(state, name);
        (202, stored)
    }

    /// Deletes what is left in a terminating namespace, and the namespace
    /// itself when it is empty.
    pub(crate) fn finish_namespace(&self, state: &mut State, name: &str) -> Bytes {
        let mut remaining = 0;
        for res in 0..resources::RESOURCES.len() {
            if !resources::def(res).namespaced {
                continue;
            }
            let keys: Vec<Key> = state.objects[res]
                .range((name.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == name)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let opts =
                    DeleteOpts { propagation: Some("Background".into()), ..DeleteOpts::default() };
                if let Ok((202, _)) = self.delete_locked(state, res, &key.0, &key.1, &opts) {
                    remaining += 1;
                }
            }
        }
        if remaining == 0
            && let Some(ns) = state.get(NAMESPACES, "", name).cloned()
        {
            state.commit(NAMESPACES, "", name, None);
            return ns.json.clone();
        }
        state.get(NAMESPACES, "", name).map(|o| o.json.clone()).unwrap_or_default()
    }

    /// deletecollection: deletes every match, answers the list of them.
    pub(crate) fn delete_collection(
        &self,
        res: ResId,
        ns: Option<&str>,
        query: &ListQuery,
        opts: &DeleteOpts,
    ) -> WriteResult {
        let def = resources::def(res);
        self.store.write(|state| {
            let (matches, _) = select(state, res, ns, query, None, None);
            let mut items = Vec::new();
            for (key, obj) in matches {
                match self.delete_locked(state, res, &key.0, &key.1, opts) {
                    Ok((202, json)) => items.push(json),
                    Ok(_) => items.push(obj.json.clone()),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((200, list_body(def, state.rv, None, &items)))
        })
    }

    /// list: a `<Kind>List` with the current resourceVersion.
    pub(crate) fn list(&self, res: ResId, ns: Option<&str>, query: &ListQuery) -> WriteResult {
        let def = resources::def(res);
        let state = self.store.read();
        let (list_rv, start_after) = match &query.continue_token {
            Some(token) if !token.is_empty() => {
                let (rv, key) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                if rv < state.floor {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (rv, Some(key))
            }
            _ => {
                if let Some(rv) =
                    query.resource_version.as_deref().filter(|r| !r.is_empty() && *r != "0")
                {
                    let n: u64 = rv.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version: {rv}"))
                    })?;
                    match query.resource_version_match.as_deref() {
                        Some("Exact") if n != state.rv => {
                            return Err(ApiError::expired(format!(
                                "too old resource version: {n} ({})",
                                state.rv
                            )));
                        }
                        _ if n > state.rv => {
                            return Err(ApiError {
                                details: Some(json!({"retryAfterSeconds": 1})),
                                ..ApiError::new(
                                    504,
                                    "Timeout",
                                    format!(
                                        "Too large resource version: {n}, current: {}",
                                        state.rv
                                    ),
                                )
                            });
                        }
                        _ => {}
                    }
                }
                (state.rv, None)
            }
        };
        let limit = query.limit.filter(|l| *l > 0);
        let (matches, next) = select(&state, res, ns, query, start_after, limit);
        let items: Vec<Bytes> = matches.into_iter().map(|(_, o)| o.json.clone()).collect();
        drop(state);
        let token = next.map(|k| encode_continue(list_rv, &k));
        Ok((200, list_body(def, list_rv, token.as_deref(), &items)))
    }
}

fn parse(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fn default_pod_spec(spec: &mut Value, restart: &str) {
    if !spec.is_object() {
        return;
    }
    if spec.get("restartPolicy").is_none() && restart == "Always" {
        spec["restartPolicy"] = json!(restart);
    }
    for (k, d) in [
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ] {
        if spec.get(k).is_none() {
            spec[k] = d;
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                if c.get("imagePullPolicy").is_none() {
                    let image = c["image"].as_str().unwrap_or_default();
                    let tag = image.rsplit('/').next().unwrap_or_default();
                    let latest = !tag.contains(':') || tag.ends_with(":latest");
                    c["imagePullPolicy"] = json!(if latest && !image.contains('@') {
                        "Always"
                    } else {
                        "IfNotPresent"
                    });
                }
                for (k, d) in [
                    ("terminationMessagePath", "/dev/termination-log"),
                    ("terminationMessagePolicy", "File"),
                ] {
                    if c.get(k).is_none() {
                        c[k] = json!(d);
                    }
                }
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if p.get("protocol").is_none() {
                            p["protocol"] = json!("TCP");
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(_def: &ResourceDef, v: &Value) -> Value {
    let selector = validate::workload_selector(v).map(|s| s.render()).unwrap_or_default();
    let meta = &v["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": v.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": v.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// The `autoscaling/v1` Scale answered by `GET .../scale`.
pub(crate) fn scale_response(def: &ResourceDef, v: &Value) -> Value {
    scale_of(def, v)
}

/// The workload `old` with the replicas (and resourceVersion) of a Scale.
fn scale_into(old: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    let mut new = old.clone();
    new["spec"]["replicas"] = replicas;
    if let Some(rv) = rv_of(scale) {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(new)
}

/// The objects of `res` matching a query, in key order, after `start_after`,
/// at most `limit` of them, and the key to continue from.
pub(crate) fn select(
    state: &State,
    res: ResId,
    ns: Option<&str>,
    query: &ListQuery,
    start_after: Option<Key>,
    limit: Option<usize>,
) -> (Vec<(Key, Arc<StoredObject>)>, Option<Key>) {
    use std::ops::Bound;
    let map = &state.objects[res];
    let lower = match (&start_after, ns) {
        (Some(k), _) => Bound::Excluded(k.clone()),
        (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    let mut out = Vec::new();
    let matches = |k: &Key, o: &StoredObject| {
        (query.labels.is_empty() || query.labels.matches(&o.labels))
            && (query.fields.is_empty() || query.fields.matches(&|f| field_value(k, o, f)))
    };
    if let Some(name) = query.fields.exact_name()
        && let Some(ns) = ns
    {
        let key = (ns.to_string(), name.to_string());
        if start_after.is_none()
            && let Some(o) = map.get(&key)
            && matches(&key, o)
        {
            out.push((key, o.clone()));
        }
        return (out, None);
    }
    for (k, o) in map.range((lower, Bound::Unbounded)) {
        if let Some(ns) = ns
            && k.0 != ns
        {
            break;
        }
        if !matches(k, o) {
            continue;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            let next = out.last().map(|(k, _): &(Key, _)| k.clone());
            return (out, next);
        }
        out.push((k.clone(), o.clone()));
    }
    (out, None)
}

/// Concatenates stored JSON into a list body without re-serialising items.
pub(crate) fn list_body(def: &ResourceDef, rv: u64, token: Option<&str>, items: &[Bytes]) -> Bytes {
    let size: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut buf = Vec::with_capacity(size + 200);
    buf.extend_from_slice(b"{\"kind\":\"");
    buf.extend_from_slice(def.kind.as_bytes());
    buf.extend_from_slice(b"List\",\"apiVersion\":\"");
    buf.extend_from_slice(def.api_version().as_bytes());
    buf.extend_from_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
    buf.extend_from_slice(rv.to_string().as_bytes());
    buf.push(b'"');
    if let Some(t) = token {
        buf.extend_from_slice(b",\"continue\":\"");
        buf.extend_from_slice(t.as_bytes());
        buf.push(b'"');
    }
    buf.extend_from_slice(b"},\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(item);
    }
    buf.extend_from_slice(b"]}");
    Bytes::from(buf)
}

fn encode_continue(rv: u64, key: &Key) -> String {
    hex::encode(format!("{rv}\n{}\n{}", key.0, key.1))
}

fn decode_continue(token: &str) -> Option<(u64, Key)> {
    let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let mut parts = raw.splitn(3, '\n');
    let rv = parts.next()?.parse().ok()?;
    let ns = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    Some((rv, (ns, name)))
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Cause {
    fn with_message(mut self, message: &str) -> Self {
        self.message = message.to_string();
        self
    }
}

impl ApiError {
    fn with_kind_mismatch(mut self, kind: &str, def: &ResourceDef) -> Self {
        self.message = format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z0-9/.-]{0,6}".prop_map(Value::String)
        ];
        let keys = prop_oneof![
            Just("metadata".to_string()),
            Just("spec".to_string()),
            Just("status".to_string()),
            Just("template".to_string()),
            Just("containers".to_string()),
            Just("labels".to_string()),
            Just("name".to_string()),
            Just("ports".to_string()),
            Just("replicas".to_string()),
            Just("selector".to_string()),
            Just("finalizers".to_string()),
            "[a-z]{1,3}".prop_map(|s| s)
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map(keys.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn writes_of_arbitrary_json_never_panic(body in arb_json(), patch in arb_json(), res in prop_oneof![Just(resources::DEPLOYMENTS), Just(resources::JOBS), Just(PODS), Just(2usize), Just(4usize), Just(5usize)]) {
            let inner = Inner::new(&crate::Config::default());
            let opts = WriteOpts::default();
            let _ = inner.create(NAMESPACES, "", json!({"metadata": {"name": "ns"}}), &opts);
            let mut named = body.clone();
            if named.is_object() {
                named["metadata"] = json!({"name": "x"});
            }
            let _ = inner.create(res, "ns", body, &opts);
            let _ = inner.create(res, "ns", named.clone(), &opts);
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            for ptype in [PatchType::Merge, PatchType::Strategic, PatchType::Json] {
                let _ = inner.patch(res, "ns", "x", ptype, &bytes, Sub::Main, &opts);
                let _ = inner.patch(res, "ns", "x", ptype, &bytes, Sub::Status, &opts);
            }
            let apply = WriteOpts { field_manager: Some("m".into()), ..WriteOpts::default() };
            let _ = inner.patch(res, "ns", "y", PatchType::Apply, &bytes, Sub::Main, &apply);
            let _ = inner.update(res, "ns", "x", patch, Sub::Main, &opts);
            let _ = inner.delete(res, "ns", "x", &DeleteOpts::default());
        }

        #[test]
        fn continue_tokens_round_trip(rv in any::<u64>(), ns in "[a-z-]{0,10}", name in "[a-z.-]{1,20}") {
            let key = (ns, name);
            prop_assert_eq!(decode_continue(&encode_continue(rv, &key)), Some((rv, key)));
        }

        #[test]
        fn garbage_continue_tokens_are_rejected_not_panicking(s in ".{0,40}") {
            let _ = decode_continue(&s);
        }
    }
}
