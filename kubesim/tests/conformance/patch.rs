//! Patches (JSON, merge, strategic, server-side apply), subresources,
//! finalizers and deletion.

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

use crate::{configmap, deployment, sim, sim_with, status_of};

fn env_of(d: &Deployment) -> Vec<(String, String)> {
    let c = &d.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod spec").containers[0];
    c.env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn json_merge_and_strategic_patches() {
    let sim = sim_with(kubesim::ControllerConfig::none()).await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"runboat/init-status": "todo"}},
        {"op": "replace", "path": "/spec/replicas", "value": 0}
    ]))
    .expect("patch");
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .expect("json patch");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(d.metadata.generation, Some(2));
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 7}]))
            .expect("patch");
    let err =
        status_of(api.patch("web", &PatchParams::default(), &Patch::Json::<()>(failing)).await);
    assert_eq!(err.code, 422);

    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"runboat/init-status": "succeeded"}}}),
            ),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("runboat/init-status"))
            .map(String::as_str),
        Some("succeeded")
    );
    // A merge patch replaces lists.
    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["a/b"]}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(d.metadata.finalizers, Some(vec!["a/b".to_string()]));

    // A strategic merge patch merges containers and env by name.
    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "odoo", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}]}
            ]}}}})),
        )
        .await
        .expect("strategic patch");
    assert_eq!(env_of(&d), vec![("A".into(), "9".into()), ("B".into(), "2".into())]);
    assert_eq!(
        d.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod").containers.len(),
        2
    );

    // A patch carrying a stale resourceVersion conflicts.
    let err = status_of(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}})),
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let err =
        status_of(api.patch("missing", &PatchParams::default(), &Patch::Merge(json!({}))).await);
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_prunes_what_the_manager_dropped() {
    let sim = sim_with(kubesim::ControllerConfig::none()).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let pp = PatchParams::apply("runboat").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"runboat/build": "b1"}}, "data": {"a": "1", "b": "2"}});
    // Dry run first, as runboat does: nothing stored.
    let dry = api
        .patch("c", &PatchParams::apply("runboat").force().dry_run(), &Patch::Apply(&first))
        .await
        .expect("dry-run apply");
    assert_eq!(dry.data.as_ref().map(|d| d.len()), Some(2));
    assert_eq!(status_of(api.get("c").await).code, 404);
    let created = api.patch("c", &pp, &Patch::Apply(&first)).await.expect("apply creates");
    assert!(created.metadata.uid.is_some());
    // Another manager adds a key; runboat re-applies without "b".
    api.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"other": "x"}})))
        .await
        .expect("merge");
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "3"}});
    let applied = api.patch("c", &pp, &Patch::Apply(&second)).await.expect("apply updates");
    let data = applied.data.expect("data");
    assert_eq!(data.get("a").map(String::as_str), Some("3"));
    assert!(!data.contains_key("b"), "a field the manager no longer applies is removed");
    assert_eq!(data.get("other").map(String::as_str), Some("x"), "other managers' fields stay");
    // Re-applying the same configuration changes nothing.
    let again = api.patch("c", &pp, &Patch::Apply(&second)).await.expect("apply again");
    assert_eq!(again.metadata.resource_version, applied.metadata.resource_version);
    // Apply needs a field manager.
    let req = http::Request::patch("/api/v1/namespaces/ns/configmaps/c")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"data: {a: '1'}".to_vec())
        .expect("request");
    assert_eq!(status_of(sim.client().request::<serde_json::Value>(req).await).code, 400);
    // YAML bodies are accepted.
    let req = http::Request::patch("/api/v1/namespaces/ns/configmaps/y?fieldManager=kubectl")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n".to_vec())
        .expect("request");
    let made: ConfigMap = sim.client().request(req).await.expect("yaml apply");
    assert_eq!(made.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("v"));
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let sim = sim_with(kubesim::ControllerConfig::none()).await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    api.create(&PostParams::default(), &deployment("web", "b1")).await.expect("created");
    let scale = api.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(scale.status.map(|s| s.selector), Some(Some("runboat/build=b1".to_string())));
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("scaled");
    assert_eq!(api.get("web").await.expect("get").spec.and_then(|s| s.replicas), Some(3));

    // The main resource ignores status; the status subresource changes only status.
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"replicas": 9}})))
        .await
        .expect("patch");
    assert!(d.status.and_then(|s| s.replicas).is_none());
    let d = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 3}, "spec": {"replicas": 1}})),
        )
        .await
        .expect("status patch");
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(3));
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(d.metadata.generation, Some(2), "scaling bumped the generation, status did not");
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_removed() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let mut cm = configmap("held", json!({}));
    cm.metadata.finalizers = Some(vec!["runboat/cleanup".into()]);
    api.create(&PostParams::default(), &cm).await.expect("created");
    let rv = sim.resource_version().to_string();
    let deleted = api.delete("held", &DeleteParams::default()).await.expect("delete");
    let held = deleted.left().expect("the object, still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing; adding finalizers is forbidden.
    api.delete("held", &DeleteParams::default()).await.expect("delete again");
    let err = status_of(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["runboat/cleanup", "x/y"]}})),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    let current = api.get("held").await.expect("still there");
    assert!(current.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
    assert_eq!(status_of(api.get("held").await).code, 404);
    let events: Vec<String> = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(1), &rv)
        .await
        .expect("watch")
        .map_ok(|e| match e {
            WatchEvent::Modified(c) => {
                format!("MODIFIED {}", c.metadata.finalizers.map(|f| f.len()).unwrap_or(0))
            }
            WatchEvent::Deleted(_) => "DELETED".to_string(),
            _ => "OTHER".to_string(),
        })
        .try_collect()
        .await
        .expect("events");
    assert_eq!(events, vec!["MODIFIED 1", "MODIFIED 0", "DELETED"]);
}

#[tokio::test]
async fn delete_collection_by_label_and_preconditions() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    for (n, b) in [("a", "b1"), ("b", "b1"), ("c", "b2")] {
        api.create(&PostParams::default(), &configmap(n, json!({"runboat/build": b})))
            .await
            .expect("created");
    }
    let gone = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("runboat/build=b1"),
        )
        .await
        .expect("deletecollection");
    let names: Vec<String> =
        gone.left().expect("list").items.into_iter().filter_map(|c| c.metadata.name).collect();
    assert_eq!(names, vec!["a", "b"]);
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, vec!["c"]);
    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = status_of(api.delete("c", &wrong_uid).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let status = api
        .delete("c", &DeleteParams::default())
        .await
        .expect("deleted")
        .right()
        .expect("a Status");
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
}
