//! The HTTP surface: discovery, the resource paths, watches, pod logs and
//! the `/kubesim/*` control endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{DeleteOpts, ListQuery, PatchType, Sub, WriteOpts};
use crate::config::ControlAction;
use crate::resources::{self, ResId};
use crate::selector::{FieldSelector, LabelSelector};
use crate::sim::Inner;
use crate::status::ApiError;
use crate::store::{EventType, StoredObject};

type AppState = Arc<Inner>;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok_text))
        .route("/livez", get(ok_text))
        .route("/readyz", get(ok_text))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/apis/{group}", get(api_group))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route("/kubesim/faults", post(post_faults))
        .route("/kubesim/stats", get(stats))
        .fallback(dispatch)
        // The real server accepts objects up to about 1.5 MB, plus request overhead.
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(inner)
}

fn json_response(code: u16, body: Bytes) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A large body sent in slices (no copy): hyper writes one big buffer
/// much more slowly than a stream of moderate chunks.
fn chunked_json(body: Bytes) -> Response {
    if body.len() <= CHUNK {
        return json_response(200, body);
    }
    let slices: Vec<Result<Bytes, std::convert::Infallible>> = (0..body.len())
        .step_by(CHUNK)
        .map(|start| Ok(body.slice(start..(start + CHUNK).min(body.len()))))
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(slices)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_value(v: &Value) -> Response {
    json_response(200, Bytes::from(v.to_string()))
}

async fn version() -> Response {
    json_value(&json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim", "gitCommit": "kubesim",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0",
        "compiler": "gc", "platform": "linux/amd64",
    }))
}

async fn ok_text() -> &'static str {
    "ok"
}

async fn api_versions() -> Response {
    json_value(&json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }))
}

async fn api_groups() -> Response {
    json_value(&resources::api_group_list())
}

async fn api_group(Path(group): Path<String>) -> Response {
    match resources::api_group(&group) {
        Some(v) => json_value(&v),
        None => ApiError::unknown_resource().into_response(),
    }
}

async fn openapi_index() -> Response {
    json_value(&resources::openapi_v3_index())
}

async fn openapi_doc(Path(path): Path<String>) -> Response {
    match resources::openapi_v3_doc(&path) {
        Some(v) => json_value(&v),
        None => ApiError::unknown_resource().into_response(),
    }
}

async fn post_faults(State(inner): State<AppState>, body: Bytes) -> Response {
    let actions: Vec<ControlAction> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => match items.into_iter().map(serde_json::from_value).collect() {
            Ok(a) => a,
            Err(e) => {
                return ApiError::bad_request(format!("invalid control action: {e}"))
                    .into_response();
            }
        },
        Ok(v) => match serde_json::from_value(v) {
            Ok(a) => vec![a],
            Err(e) => {
                return ApiError::bad_request(format!("invalid control action: {e}"))
                    .into_response();
            }
        },
        Err(e) => return ApiError::bad_request(format!("invalid JSON: {e}")).into_response(),
    };
    let n = actions.len();
    for a in actions {
        inner.control(a);
    }
    json_value(&json!({"applied": n}))
}

async fn stats(State(inner): State<AppState>) -> Response {
    let s = inner.store.read();
    let objects: serde_json::Map<String, Value> = resources::RESOURCES
        .iter()
        .enumerate()
        .map(|(i, r)| (r.qualified(), json!(s.objects[i].len())))
        .collect();
    json_value(&json!({
        "resourceVersion": s.rv,
        "historyFloor": s.floor,
        "historyLength": s.history.len(),
        "objects": objects,
        "requests": inner.requests.load(Ordering::Relaxed),
        "deploymentReconciles": inner.deployment_reconciles.load(Ordering::Relaxed),
        "controllersPaused": *inner.paused.borrow(),
        "rbac": inner.auth.enabled,
        "forbidden": inner.auth.forbidden.load(Ordering::Relaxed),
        "unauthorized": inner.auth.unauthorized.load(Ordering::Relaxed),
    }))
}

/// A parsed resource path.
struct Target {
    res: ResId,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Parsed {
    Discovery(String, String),
    Resource(Target),
}

fn parse_path(path: &str) -> Option<Parsed> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let found = |plural: &str| resources::find(group, version, plural);
    match rest {
        [] => Some(Parsed::Discovery(group.into(), version.into())),
        ["namespaces", ns, plural, tail @ ..]
            if found(plural).is_some_and(|r| resources::def(r).namespaced) =>
        {
            let res = found(plural)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(name.to_string()), None),
                [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
                _ => return None,
            };
            Some(Parsed::Resource(Target { res, ns: Some(ns.to_string()), name, sub }))
        }
        [plural, tail @ ..] => {
            let res = found(plural)?;
            let namespaced = resources::def(res).namespaced;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] if !namespaced => (Some(name.to_string()), None),
                [name, sub] if !namespaced => (Some(name.to_string()), Some(sub.to_string())),
                _ => return None,
            };
            Some(Parsed::Resource(Target { res, ns: None, name, sub }))
        }
    }
}

fn query_map(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

/// A boolean query parameter, read as kube-apiserver reads every one of
/// them (`watch`, `allowWatchBookmarks`, `sendInitialEvents`, `follow`,
/// `previous`, `timestamps`, `force`, …): apimachinery's
/// `Convert_Slice_string_To_bool` takes an absent parameter, `0` and `false`
/// in any case as false and every other value, the empty string included,
/// as true. It is not Go's `strconv.ParseBool`: no value is rejected, so
/// `watch=True` (the Python client) and `watch=yes` both watch.
fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| query_bool(v))
}

fn query_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

fn write_opts(q: &HashMap<String, String>, headers: &HeaderMap) -> Result<WriteOpts, ApiError> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other}; supported values: All"
            )));
        }
    };
    Ok(WriteOpts {
        dry_run,
        field_manager: q.get("fieldManager").cloned(),
        force: flag(q, "force"),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    })
}

fn list_query(res: ResId, q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let def = resources::def(res);
    let labels = match q.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
        None => LabelSelector::default(),
    };
    let allowed = |f: &str| {
        f == "metadata.name" || f == "metadata.namespace" || def.field_labels.contains(&f)
    };
    let fields = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s, &allowed).map_err(ApiError::bad_request)?,
        None => FieldSelector::default(),
    };
    let limit = match q.get("limit") {
        Some(l) => Some(
            l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
        None => None,
    };
    Ok(ListQuery {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned().filter(|s| !s.is_empty()),
    })
}

/// A create or update body: JSON, YAML, or Kubernetes protobuf (what
/// kubectl's generators send for built-in kinds).
fn body_json(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if crate::protobuf::is_protobuf(ct) {
        return crate::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding protobuf request body: {e}"))
        });
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("request body is not UTF-8"))?;
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

/// Authentication, then RBAC authorization of a resource request (with
/// `Config::rbac`): 401 for an unknown token, 403 when no rule allows it.
fn authorize(
    inner: &Inner,
    method: &Method,
    t: &Target,
    watch: bool,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let who = inner.auth.authenticate(authorization)?;
    let name = t.name.as_deref().unwrap_or_default();
    // As kube-apiserver's RequestInfo: a namespace's own path is in that namespace.
    let namespace = match t.ns.as_deref() {
        Some(ns) => ns,
        None if t.res == resources::NAMESPACES => name,
        None => "",
    };
    let attrs = crate::auth::Attributes {
        verb: verb_of(method, t, watch),
        res: t.res,
        subresource: t.sub.as_deref().unwrap_or_default(),
        namespace,
        name,
    };
    let state = inner.store.read();
    inner.auth.authorize(&state, &who, &attrs)
}

/// A server-side apply that would create the object needs `create` too:
/// kube-apiserver's patch handler wraps its create validation in
/// `withAuthorization(…, createAuthorizerAttributes)`, whose denial is
/// `NewForbidden(groupResource, name, reason)` with the authorizer's
/// reason (empty for RBAC), hence the bare `… is forbidden: `.
fn authorize_create_on_apply(
    inner: &Inner,
    t: &Target,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let who = inner.auth.authenticate(authorization)?;
    let attrs =
        crate::auth::Attributes { verb: "create", res: t.res, subresource: "", namespace, name };
    let state = inner.store.read();
    inner.auth.authorize(&state, &who, &attrs).map_err(|_| {
        let def = resources::def(t.res);
        ApiError {
            details: Some(json!({"name": name, "group": def.group, "kind": def.plural})),
            ..ApiError::new(
                403,
                "Forbidden",
                format!("{} \"{name}\" is forbidden: ", def.qualified()),
            )
        }
    })
}

fn verb_of(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn dispatch(
    State(inner): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch_inner(inner, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dispatch_inner(
    inner: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parsed = parse_path(uri.path()).ok_or_else(ApiError::unknown_resource)?;
    let t = match parsed {
        Parsed::Discovery(group, version) => {
            return resources::api_resource_list(&group, &version)
                .map(|v| json_value(&v))
                .ok_or_else(ApiError::unknown_resource);
        }
        Parsed::Resource(t) => t,
    };
    let q = query_map(&uri)?;
    let def = resources::def(t.res);
    let watch = flag(&q, "watch");
    inner.requests.fetch_add(1, Ordering::Relaxed);
    if inner.auth.enabled {
        authorize(&inner, &method, &t, watch, &headers)?;
    }
    let latency = inner.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(err) = inner.take_fault(verb_of(&method, &t, watch), def.plural) {
        return Err(err);
    }
    let ns = t.ns.as_deref().unwrap_or_default();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let sub = match t.sub.as_deref() {
        None => Sub::Main,
        Some("status") if def.has_subresource("status") => Sub::Status,
        Some("scale") if def.has_subresource("scale") => Sub::Scale,
        Some("log") if def.has_subresource("log") => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let name = t.name.as_deref().unwrap_or_default();
            return pod_log(inner, ns, name, &q).await;
        }
        Some(_) => return Err(ApiError::unknown_resource()),
    };
    match (method.as_str(), t.name.as_deref()) {
        ("GET", None) => {
            let query = list_query(t.res, &q)?;
            if watch {
                return watch_response(inner, t.res, t.ns.clone(), query, &q);
            }
            let (_, body) = inner.list(t.res, t.ns.as_deref(), &query)?;
            if crate::table::wants_table(accept) {
                let list: Value = serde_json::from_slice(&body).unwrap_or_default();
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return Ok(json_value(&crate::table::table(def, &items, list["metadata"].clone())));
            }
            Ok(chunked_json(body))
        }
        ("GET", Some(name)) => {
            let obj = inner.get(t.res, ns, name)?;
            if sub == Sub::Scale {
                let scale = crate::api::scale_response(def, &obj.value());
                return Ok(json_value(&scale));
            }
            if sub == Sub::Main && crate::table::wants_table(accept) {
                return Ok(json_value(&crate::table::table(
                    def,
                    &[obj.value()],
                    json!({"resourceVersion": obj.rv.to_string()}),
                )));
            }
            Ok(json_response(200, obj.json.clone()))
        }
        ("POST", None) => {
            if t.ns.is_none() && def.namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let (code, body) =
                inner.create(t.res, ns, body_json(&headers, &body)?, &write_opts(&q, &headers)?)?;
            Ok(json_response(code, body))
        }
        ("PUT", Some(name)) => {
            let (code, body) = inner.update(
                t.res,
                ns,
                name,
                body_json(&headers, &body)?,
                sub,
                &write_opts(&q, &headers)?,
            )?;
            Ok(json_response(code, body))
        }
        ("PATCH", Some(name)) => {
            let ct =
                headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let ptype = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            if inner.auth.enabled
                && ptype == PatchType::Apply
                && sub == Sub::Main
                && inner.get(t.res, ns, name).is_err_and(|e| e.code == 404)
            {
                authorize_create_on_apply(&inner, &t, ns, name, &headers)?;
            }
            let (code, body) =
                inner.patch(t.res, ns, name, ptype, &body, sub, &write_opts(&q, &headers)?)?;
            Ok(json_response(code, body))
        }
        ("DELETE", Some(name)) => {
            if sub != Sub::Main {
                return Err(ApiError::method_not_allowed());
            }
            let opts = delete_opts(&q, &headers, &body)?;
            let (code, body) = inner.delete(t.res, ns, name, &opts)?;
            Ok(json_response(code, body))
        }
        ("DELETE", None) => {
            let opts = delete_opts(&q, &headers, &body)?;
            let query = list_query(t.res, &q)?;
            let (code, body) = inner.delete_collection(t.res, t.ns.as_deref(), &query, &opts)?;
            Ok(json_response(code, body))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn delete_opts(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts { dry_run: write_opts(q, headers)?.dry_run, ..DeleteOpts::default() };
    opts.propagation = q.get("propagationPolicy").cloned();
    if let Some(g) = q.get("gracePeriodSeconds") {
        opts.grace_period = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if !body.is_empty() {
        let v = body_json(headers, body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message)))?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        } else if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some("Orphan".into());
        }
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period = Some(g);
        }
        if v.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|d| d == "All")) {
            opts.dry_run = true;
        }
        opts.precondition_uid =
            v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_rv =
            v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
    }
    Ok(opts)
}

/// A watch event line.
fn event_line(buf: &mut Vec<u8>, kind: &str, obj: &[u8]) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    buf.extend_from_slice(obj);
    buf.extend_from_slice(b"}\n");
}

fn bookmark(def: &resources::ResourceDef, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    let mut buf = Vec::new();
    event_line(&mut buf, "BOOKMARK", obj.to_string().as_bytes());
    buf
}

fn expired_event(requested: u64, floor: u64) -> Vec<u8> {
    let status =
        ApiError::expired(format!("too old resource version: {requested} ({})", floor + 1))
            .to_status();
    let mut buf = Vec::new();
    event_line(&mut buf, "ERROR", status.to_string().as_bytes());
    buf
}

const CHUNK: usize = 256 * 1024;

fn watch_response(
    inner: AppState,
    res: ResId,
    ns: Option<String>,
    query: ListQuery,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let def = resources::def(res);
    let bookmarks = flag(q, "allowWatchBookmarks");
    let send_initial = flag(q, "sendInitialEvents");
    if send_initial && query.resource_version_match.as_deref() != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            def,
            "",
            vec![crate::status::Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Some(Duration::from_secs(
            t.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        )),
        None => None,
    };
    let rv_param = query.resource_version.clone().filter(|r| !r.is_empty());
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(4);
    // Everything in the initial state and the starting cursor, read at once.
    let (initial, cursor, expired) = {
        let state = inner.store.read();
        let from_start = send_initial || rv_param.as_deref().is_none_or(|r| r == "0");
        if from_start {
            let (items, _) = crate::api::select(&state, res, ns.as_deref(), &query, None, None);
            (items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(), state.rv, None)
        } else {
            let n: u64 = rv_param
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|_| ApiError::bad_request("invalid resourceVersion"))?;
            if n < state.floor { (Vec::new(), n, Some(state.floor)) } else { (Vec::new(), n, None) }
        }
    };
    let mut rv_rx = inner.store.subscribe();
    let mut close_rx = inner.close_watches.subscribe();
    let interval = inner.bookmark_interval;
    tokio::spawn(async move {
        if let Some(floor) = expired {
            let _ = tx.send(Ok(Bytes::from(expired_event(cursor, floor)))).await;
            return;
        }
        let mut buf = Vec::with_capacity(CHUNK);
        for obj in &initial {
            event_line(&mut buf, "ADDED", &obj.json);
            if buf.len() >= CHUNK
                && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err()
            {
                return;
            }
        }
        drop(initial);
        if send_initial && bookmarks {
            buf.extend_from_slice(&bookmark(def, cursor, true));
        }
        if !buf.is_empty() && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
            return;
        }
        let mut cursor = cursor;
        // A version from the future (e.g. from before a restart): wait a
        // little for it, then answer like the real server's watch cache.
        if inner.store.read().rv < cursor && !caught_up(&mut rv_rx, cursor).await {
            let current = inner.store.read().rv;
            let status = ApiError {
                details: Some(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})),
                ..ApiError::new(504, "Timeout", format!("Too large resource version: {cursor}, current: {current}"))
            }
            .to_status();
            let mut line = Vec::new();
            event_line(&mut line, "ERROR", status.to_string().as_bytes());
            let _ = tx.send(Ok(Bytes::from(line))).await;
            return;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            // Drain what happened since the cursor.
            let batch = {
                let state = inner.store.read();
                state.events_after(cursor, 4096).map(|evs| (evs, state.rv, state.floor))
            };
            let Some((events, current, floor)) = batch else {
                let floor = inner.store.read().floor;
                let _ = tx.send(Ok(Bytes::from(expired_event(cursor, floor)))).await;
                return;
            };
            let _ = floor;
            let full = events.len() == 4096;
            for ev in &events {
                if ev.res != res || ns.as_deref().is_some_and(|n| n != ev.ns) {
                    continue;
                }
                let now = matches(&query, ev.ns.as_str(), &ev.name, &ev.obj);
                let kind = match ev.kind {
                    EventType::Modified => {
                        let before =
                            ev.prev.as_ref().is_none_or(|p| matches(&query, &ev.ns, &ev.name, p));
                        match (before, now) {
                            (true, true) => Some("MODIFIED"),
                            (false, true) => Some("ADDED"),
                            (true, false) => Some("DELETED"),
                            (false, false) => None,
                        }
                    }
                    other => now.then_some(other.as_str()),
                };
                if let Some(kind) = kind {
                    event_line(&mut buf, kind, &ev.obj.json);
                    if buf.len() >= CHUNK
                        && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err()
                    {
                        return;
                    }
                }
            }
            cursor =
                if full { events.last().map_or(cursor, |e| e.rv) } else { current.max(cursor) };
            if !buf.is_empty() && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err()
            {
                return;
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = rv_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = ticker.tick() => {
                    if bookmarks && tx.send(Ok(Bytes::from(bookmark(def, cursor, false)))).await.is_err() {
                        return;
                    }
                }
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if bookmarks {
                        let _ = tx.send(Ok(Bytes::from(bookmark(def, cursor, false)))).await;
                    }
                    return;
                }
                _ = close_rx.changed() => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Waits up to 3 s for the resourceVersion to reach `target`.
async fn caught_up(rv_rx: &mut tokio::sync::watch::Receiver<u64>, target: u64) -> bool {
    let wait = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(wait);
    loop {
        if *rv_rx.borrow_and_update() >= target {
            return true;
        }
        tokio::select! {
            r = rv_rx.changed() => if r.is_err() { return false },
            () = &mut wait => return false,
        }
    }
}

fn matches(query: &ListQuery, ns: &str, name: &str, obj: &StoredObject) -> bool {
    if !query.labels.is_empty() && !query.labels.matches(&obj.labels) {
        return false;
    }
    if query.fields.is_empty() {
        return true;
    }
    let key = (ns.to_string(), name.to_string());
    query.fields.matches(&|f| crate::api::field_value(&key, obj, f))
}

/// `pods/<name>/log`: the container's scripted log, as text.
async fn pod_log(
    inner: AppState,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pod = inner.get(resources::PODS, ns, name)?.value();
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            let init: Vec<String> = pod
                .pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
                })
                .unwrap_or_default();
            if !containers.contains(c) && !init.contains(c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.clone()
        }
        None => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str);
            match (default, containers.as_slice()) {
                (Some(d), _) => d.to_string(),
                (None, [only]) => only.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        containers.join(" ")
                    )));
                }
            }
        }
    };
    if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Pending") {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    let tail: Option<usize> = q.get("tailLines").and_then(|t| t.parse().ok());
    let key = (ns.to_string(), name.to_string(), container.clone());
    let read_log = move |inner: &Inner| {
        inner
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned()
            .unwrap_or_default()
    };
    let text = read_log(&inner);
    let text = match tail {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut t = lines[start..].join("\n");
            if !t.is_empty() {
                t.push('\n');
            }
            t
        }
        None => text,
    };
    // `limitBytes`: the first bytes of what the other parameters select.
    let limit: Option<usize> = match q.get("limitBytes") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid limitBytes {v:?}: must be greater than 0"
                )));
            }
        },
    };
    let text = match limit {
        Some(n) if text.len() > n => {
            let mut end = n;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_string()
        }
        _ => text,
    };
    let plain = |body: Body| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    };
    if !flag(q, "follow") {
        inner.log_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(plain(Body::from(text)));
    }
    inner.log_follows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Follow: send what there is, then what is appended, until the pod
    // terminates or goes away.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(4);
    let mut rv_rx = inner.store.subscribe();
    let mut logs_rx = inner.logs_changed.subscribe();
    let mut close_rx = inner.close_watches.subscribe();
    let ns = ns.to_string();
    let name = name.to_string();
    tokio::spawn(async move {
        let mut sent = read_log(&inner).len();
        if tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        loop {
            let full = read_log(&inner);
            if full.len() > sent {
                let more = full.get(sent..).unwrap_or_default().to_string();
                sent = full.len();
                if tx.send(Ok(Bytes::from(more))).await.is_err() {
                    return;
                }
            }
            let phase = inner
                .get(resources::PODS, &ns, &name)
                .ok()
                .map(|p| p.value()["status"]["phase"].as_str().unwrap_or_default().to_string());
            if phase.as_deref().is_none_or(|p| p == "Succeeded" || p == "Failed") {
                return;
            }
            tokio::select! {
                r = rv_rx.changed() => if r.is_err() { return },
                r = logs_rx.changed() => if r.is_err() { return },
                _ = close_rx.changed() => return,
                () = tx.closed() => return,
            }
        }
    });
    Ok(plain(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_resolve_to_resources() {
        let Some(Parsed::Resource(t)) =
            parse_path("/apis/apps/v1/namespaces/ns/deployments/web/scale")
        else {
            panic!("a deployment scale path");
        };
        assert_eq!(
            (resources::def(t.res).plural, t.ns.as_deref(), t.name.as_deref(), t.sub.as_deref()),
            ("deployments", Some("ns"), Some("web"), Some("scale"))
        );
        let Some(Parsed::Resource(t)) = parse_path("/api/v1/namespaces/ns") else {
            panic!("a namespace path")
        };
        assert_eq!((resources::def(t.res).plural, t.name.as_deref()), ("namespaces", Some("ns")));
        let Some(Parsed::Resource(t)) = parse_path("/api/v1/pods") else { panic!("all pods") };
        assert_eq!((t.ns, t.name), (None, None));
        assert!(parse_path("/api/v1/pods/x").is_none(), "namespaced items need a namespace");
        assert!(parse_path("/apis/apps/v2/deployments").is_none());
        assert!(matches!(parse_path("/apis/batch/v1"), Some(Parsed::Discovery(..))));
    }

    #[test]
    fn boolean_parameters_read_like_the_api_server() {
        for v in ["true", "True", "TRUE", "1", "t", "yes", "", "anything"] {
            assert!(query_bool(v), "{v:?} is true for kube-apiserver");
        }
        for v in ["false", "False", "FALSE", "fAlSe", "0"] {
            assert!(!query_bool(v), "{v:?} is false for kube-apiserver");
        }
        let q: HashMap<String, String> = [("watch".to_string(), "True".to_string())].into();
        assert!(flag(&q, "watch"));
        assert!(!flag(&q, "follow"), "an absent parameter is false");
    }

    proptest! {
        #[test]
        fn path_parsing_never_panics(p in "(/[a-z0-9.]{0,12}){0,8}") {
            let _ = parse_path(&p);
        }
    }
}
