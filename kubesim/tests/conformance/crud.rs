//! get/list/create/update/delete, status codes, selectors, pagination,
//! dry-run, validation and namespaces.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::{configmap, deployment, sim, status_of};

#[tokio::test]
async fn create_get_conflict_and_not_found_answer_like_the_api_server() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    let created =
        api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("ns"));
    assert!(meta.resource_version.is_some());

    let again = status_of(api.create(&PostParams::default(), &deployment("web", "b1")).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "deployments.apps \"web\" already exists");

    let missing = status_of(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "deployments.apps \"nope\" not found");
    let details = missing.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.group.as_str(), details.kind.as_str()),
        ("nope", "apps", "deployments")
    );

    let other_ns: Api<Deployment> = Api::namespaced(sim.client(), "absent");
    let no_ns = status_of(other_ns.create(&PostParams::default(), &deployment("web", "b1")).await);
    assert_eq!((no_ns.code, no_ns.reason.as_str()), (404, "NotFound"));
    assert_eq!(no_ns.message, "namespaces \"absent\" not found");
}

#[tokio::test]
async fn generate_name_and_unknown_resources() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let mut cm = configmap("", json!({}));
    cm.metadata.name = None;
    cm.metadata.generate_name = Some("cm-".into());
    let created = api.create(&PostParams::default(), &cm).await.expect("created");
    let name = created.metadata.name.expect("name");
    assert!(name.starts_with("cm-") && name.len() == 8, "{name}");

    let req = http::Request::get("/apis/apps/v1/namespaces/ns/widgets")
        .body(Vec::new())
        .expect("request");
    let err = status_of(sim.client().request::<serde_json::Value>(req).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn update_with_a_stale_resource_version_conflicts() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let first =
        api.create(&PostParams::default(), &configmap("c", json!({}))).await.expect("created");
    let mut a = first.clone();
    a.data = Some([("k".to_string(), "a".to_string())].into());
    let updated = api.replace("c", &PostParams::default(), &a).await.expect("first update wins");
    assert_ne!(updated.metadata.resource_version, first.metadata.resource_version);
    let mut b = first.clone();
    b.data = Some([("k".to_string(), "b".to_string())].into());
    let err = status_of(api.replace("c", &PostParams::default(), &b).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Without a resourceVersion the update is unconditional.
    b.metadata.resource_version = None;
    let forced = api.replace("c", &PostParams::default(), &b).await.expect("unconditional update");
    assert_eq!(forced.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("b"));
    // An update that changes nothing keeps the resourceVersion.
    let current = api.get("c").await.expect("get");
    let same = api.replace("c", &PostParams::default(), &current).await.expect("no-op update");
    assert_eq!(same.metadata.resource_version, current.metadata.resource_version);
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    for (name, labels) in [
        ("a", json!({"runboat/build": "b1", "tier": "web"})),
        ("b", json!({"runboat/build": "b2", "tier": "db"})),
        ("c", json!({"runboat/build": "b3"})),
        ("d", json!({})),
    ] {
        api.create(&PostParams::default(), &configmap(name, labels)).await.expect("created");
    }
    let names = |sel: &'static str| {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default().labels(sel)).await.expect("list");
            list.items.into_iter().filter_map(|c| c.metadata.name).collect::<Vec<_>>().join(",")
        }
    };
    assert_eq!(names("runboat/build").await, "a,b,c");
    assert_eq!(names("!runboat/build").await, "d");
    assert_eq!(names("runboat/build=b1").await, "a");
    assert_eq!(names("runboat/build==b2").await, "b");
    assert_eq!(names("runboat/build!=b1").await, "b,c,d");
    assert_eq!(names("runboat/build in (b1,b3)").await, "a,c");
    assert_eq!(names("runboat/build notin (b1,b3)").await, "b,d");
    assert_eq!(names("runboat/build,tier=web").await, "a");

    let by_name = api.list(&ListParams::default().fields("metadata.name=c")).await.expect("list");
    assert_eq!(by_name.items.len(), 1);
    let not_name = api.list(&ListParams::default().fields("metadata.name!=c")).await.expect("list");
    assert_eq!(not_name.items.len(), 3);
    let bad = status_of(api.list(&ListParams::default().fields("spec.foo=1")).await);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
    let bad = status_of(api.list(&ListParams::default().labels("a in b")).await);
    assert_eq!(bad.code, 400);

    let page1 = api.list(&ListParams::default().limit(3)).await.expect("page 1");
    assert_eq!(page1.items.len(), 3);
    let token = page1.metadata.continue_.clone().expect("continue token");
    let page2 =
        api.list(&ListParams::default().limit(3).continue_token(&token)).await.expect("page 2");
    assert_eq!(page2.items.len(), 1);
    assert_eq!(page2.items[0].metadata.name.as_deref(), Some("d"));
    assert!(page2.metadata.continue_.is_none());
    assert_eq!(page2.metadata.resource_version, page1.metadata.resource_version);

    // All namespaces.
    let all: Api<ConfigMap> = Api::all(sim.client());
    assert_eq!(all.list(&ListParams::default()).await.expect("list").items.len(), 4);
}

#[tokio::test]
async fn dry_run_validates_but_stores_nothing() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    let rv = sim.resource_version();
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    let out = api.create(&dry, &deployment("web", "b1")).await.expect("dry-run create");
    assert_eq!(out.metadata.name.as_deref(), Some("web"));
    assert_eq!(sim.resource_version(), rv);
    assert_eq!(status_of(api.get("web").await).code, 404);
    let mut bad = deployment("Web", "b1");
    bad.metadata.name = Some("Web".into());
    let err = status_of(api.create(&dry, &bad).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));

    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    let rv = sim.resource_version();
    api.delete("web", &DeleteParams { dry_run: true, ..DeleteParams::default() })
        .await
        .expect("dry-run delete");
    assert!(api.get("web").await.is_ok());
    let mut changed = api.get("web").await.expect("get");
    changed.spec.as_mut().expect("spec").replicas = Some(5);
    api.replace("web", &dry, &changed).await.expect("dry-run update");
    assert_eq!(api.get("web").await.expect("get").spec.and_then(|s| s.replicas), Some(1));
    // Dry runs do not move the resourceVersion (controllers may, so compare the object).
    let _ = rv;
}

#[tokio::test]
async fn invalid_objects_answer_422_with_causes() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    let mut d = deployment("web", "b1");
    d.spec.as_mut().expect("spec").selector.match_labels =
        Some([("runboat/build".to_string(), "other".to_string())].into());
    let err = status_of(api.create(&PostParams::default(), &d).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.starts_with(
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value"
        ),
        "{}",
        err.message
    );
    let causes = err.details.expect("details").causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "spec.template.metadata.labels");
    assert_eq!(causes[0].reason, "FieldValueInvalid");

    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let err =
        status_of(cms.create(&PostParams::default(), &configmap("Bad_Name", json!({}))).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(err.details.expect("details").causes[0].field, "metadata.name");
    let err = status_of(
        cms.create(&PostParams::default(), &configmap("ok", json!({"bad key!": "v"}))).await,
    );
    assert_eq!(err.code, 422);
    let err = status_of(
        cms.create(&PostParams::default(), &configmap("ok", json!({"k": "-bad-"}))).await,
    );
    assert_eq!(err.code, 422);

    let raw: Deployment = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "spec": {"selector": {}, "template": {}}}),
    )
    .expect("parses");
    let err = status_of(api.create(&PostParams::default(), &raw).await);
    let fields: Vec<String> =
        err.details.expect("details").causes.into_iter().map(|c| c.field).collect();
    assert!(fields.contains(&"spec.template.spec.containers".to_string()), "{fields:?}");
}

#[tokio::test]
async fn secrets_string_data_is_encoded_and_namespaces_delete_their_content() {
    let sim = sim().await;
    let ns_api: Api<Namespace> = Api::all(sim.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "tmp"}})).expect("ns");
    ns_api.create(&PostParams::default(), &ns).await.expect("namespace created");
    let secrets: Api<Secret> = Api::namespaced(sim.client(), "tmp");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"pw": "hunter2"}}))
            .expect("secret");
    let created = secrets.create(&PostParams::default(), &s).await.expect("created");
    assert!(created.string_data.is_none());
    assert_eq!(
        created.data.and_then(|d| d.get("pw").map(|b| b.0.clone())),
        Some(b"hunter2".to_vec())
    );
    assert_eq!(created.type_.as_deref(), Some("Opaque"));

    ns_api.delete("tmp", &DeleteParams::default()).await.expect("namespace deleted");
    assert!(
        sim.wait_until(crate::WAIT, |h| h.get("namespaces", "", "tmp").ok().flatten().is_none())
            .await
    );
    assert_eq!(status_of(secrets.get("s").await).code, 404);
}

#[tokio::test]
async fn discovery_is_complete_enough_for_kube() {
    let sim = sim().await;
    let info = sim.client().apiserver_version().await.expect("version");
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "33"));
    let discovery = kube::discovery::Discovery::new(sim.client()).run().await.expect("discovery");
    let mut kinds = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            kinds.push(format!(
                "{}/{}:{}",
                ar.group,
                ar.kind,
                caps.scope == kube::discovery::Scope::Namespaced
            ));
        }
    }
    for expected in [
        "apps/Deployment:true",
        "batch/Job:true",
        "/Namespace:false",
        "/Pod:true",
        "networking.k8s.io/Ingress:true",
        "coordination.k8s.io/Lease:true",
    ] {
        assert!(kinds.contains(&expected.to_string()), "{expected} in {kinds:?}");
    }
    let (ar, caps) = kube::discovery::pinned_kind(
        &sim.client(),
        &kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment"),
    )
    .await
    .expect("pinned");
    assert_eq!(ar.plural, "deployments");
    assert!(caps.subresources.iter().any(|(sub, _)| sub.plural == "scale"));
}

#[tokio::test]
async fn malformed_objects_answer_400_not_a_crash() {
    let sim = sim().await;
    let client = sim.client();
    let send = |method: http::Method, path: &str, ct: &str, body: serde_json::Value| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body.to_string().into_bytes())
            .expect("request")
    };
    for body in [
        json!({"metadata": {"name": "x"}, "spec": "oops"}),
        json!({"metadata": "x"}),
        json!([1, 2]),
        json!({"metadata": {"name": "x", "labels": ["a"]}}),
    ] {
        let req = send(
            http::Method::POST,
            "/apis/apps/v1/namespaces/ns/deployments",
            "application/json",
            body,
        );
        assert_eq!(status_of(client.request::<serde_json::Value>(req).await).code, 400);
    }
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &configmap("c", json!({}))).await.expect("created");
    let req = send(
        http::Method::PATCH,
        "/api/v1/namespaces/ns/configmaps/c",
        "application/merge-patch+json",
        json!({"data": 5}),
    );
    assert_eq!(status_of(client.request::<serde_json::Value>(req).await).code, 400);
    let req = send(
        http::Method::PATCH,
        "/api/v1/namespaces/ns/configmaps/c",
        "application/json-patch+json",
        json!([{"op": "replace", "path": "", "value": "s"}]),
    );
    assert_eq!(status_of(client.request::<serde_json::Value>(req).await).code, 400);
    let req =
        send(http::Method::PATCH, "/api/v1/namespaces/ns/configmaps/c", "text/plain", json!({}));
    assert_eq!(status_of(client.request::<serde_json::Value>(req).await).code, 415);
    // The server is still there.
    assert!(api.get("c").await.is_ok());
}

/// What leader election does with a Lease: create (409 when it exists),
/// get, replace with the resourceVersion read (409 when it changed since).
#[tokio::test]
async fn leases_are_replaced_only_at_the_version_read() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    let sim = sim().await;
    let api: Api<Lease> = Api::namespaced(sim.client(), "ns");
    let lease = Lease {
        metadata: kube::api::ObjectMeta { name: Some("leader".into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    let created = api.create(&PostParams::default(), &lease).await.expect("created");
    let again = status_of(api.create(&PostParams::default(), &lease).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let mut read = api.get("leader").await.expect("get");
    assert_eq!(read.metadata.resource_version, created.metadata.resource_version);
    let stale = read.clone();
    read.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    let taken = api.replace("leader", &PostParams::default(), &read).await.expect("replaced");
    assert_eq!(taken.spec.and_then(|s| s.holder_identity).as_deref(), Some("b"));
    assert_ne!(taken.metadata.resource_version, stale.metadata.resource_version);

    let lost = status_of(api.replace("leader", &PostParams::default(), &stale).await);
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    let now = api.get("leader").await.expect("get");
    assert_eq!(now.spec.and_then(|s| s.holder_identity).as_deref(), Some("b"));
}
