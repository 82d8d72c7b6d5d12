//! Authentication and RBAC (`Config { rbac: true, .. }`): what a service
//! account may do is exactly what its Role grants, and a denial reads like
//! kube-apiserver's (`responsewriters.Forbidden`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubesim::{Config, ControllerConfig, KubeSim};
use serde_json::json;

use crate::status_of;

async fn rbac_sim() -> KubeSim {
    let config = Config {
        controllers: ControllerConfig::instant(),
        namespaces: vec!["default".into(), "ns".into(), "ctl".into()],
        rbac: true,
        ..Config::default()
    };
    KubeSim::start_with(config).await.expect("kubesim starts")
}

async fn client_from(kubeconfig: &str) -> Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

fn grant(sim: &KubeSim, rules: serde_json::Value) {
    sim.create("roles", "ns", json!({"metadata": {"name": "r"}, "rules": rules})).expect("role");
    sim.create(
        "rolebindings",
        "ns",
        json!({
            "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ctl"}],
        }),
    )
    .expect("rolebinding");
}

#[tokio::test]
async fn a_service_account_gets_exactly_its_roles_rules() {
    let sim = rbac_sim().await;
    assert!(sim.rbac_enabled());
    grant(
        &sim,
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "patch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]),
    );
    // The admin (default kubeconfig and client) may do anything.
    let admin: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).expect("cm");
    admin.create(&PostParams::default(), &cm).await.expect("admin creates");
    let admin_by_file = client_from(&sim.kubeconfig("ns")).await;
    Api::<Deployment>::namespaced(admin_by_file, "ns")
        .list(&ListParams::default())
        .await
        .expect("the default kubeconfig is the admin's");

    let sa = client_from(&sim.service_account_kubeconfig("ctl", "sa", "ns")).await;
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "ns");
    cms.get("c").await.expect("get is granted");
    cms.list(&ListParams::default()).await.expect("list is granted");
    let patch = json!({"data": {"k": "w"}});
    cms.patch("c", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    assert_eq!(sim.forbidden_count(), 0);

    // Not granted: create, delete, deletecollection, another namespace,
    // another resource, a dry run of a write.
    let s = status_of(cms.create(&PostParams::default(), &cm).await);
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        "configmaps is forbidden: User \"system:serviceaccount:ctl:sa\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"ns\""
    );
    let s = status_of(cms.delete("c", &DeleteParams::default()).await);
    assert_eq!(
        s.message,
        "configmaps \"c\" is forbidden: User \"system:serviceaccount:ctl:sa\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"ns\""
    );
    let details = s.details.expect("details");
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("c", "configmaps"));
    let s =
        status_of(cms.delete_collection(&DeleteParams::default(), &ListParams::default()).await);
    assert_eq!(s.code, 403);
    let s = status_of(Api::<ConfigMap>::namespaced(sa.clone(), "default").get("c").await);
    assert_eq!(s.code, 403, "a Role grants nothing outside its namespace");
    let deployments: Api<Deployment> = Api::namespaced(sa.clone(), "ns");
    let s = status_of(deployments.list(&ListParams::default()).await);
    assert_eq!(
        s.message,
        "deployments.apps is forbidden: User \"system:serviceaccount:ctl:sa\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"ns\""
    );
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    assert_eq!(status_of(cms.create(&dry, &cm).await).code, 403, "a dry run needs the verb");
    let s = status_of(Api::<Pod>::namespaced(sa.clone(), "ns").get("p").await);
    assert_eq!(s.code, 403, "pods/log does not grant pods");
    // pods/log is granted: the answer is the resource's own 404.
    let s =
        status_of(Api::<Pod>::namespaced(sa.clone(), "ns").logs("p", &LogParams::default()).await);
    assert_eq!(s.code, 404);
    assert_eq!(sim.forbidden_count(), 7);

    // Discovery is open to every authenticated user.
    sa.apiserver_version().await.expect("version");
    kube::discovery::Discovery::new(sa.clone()).run().await.expect("discovery");

    // An unknown token: 401.
    let bad =
        sim.service_account_kubeconfig("ctl", "sa", "ns").replace("token: kubesim-", "token: x");
    let s = status_of(Api::<ConfigMap>::namespaced(client_from(&bad).await, "ns").get("c").await);
    assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"));

    // The record of decisions names each (verb, resource, subresource).
    let log = sim.access_log();
    let allowed: Vec<String> = log
        .iter()
        .filter(|a| a.user == "system:serviceaccount:ctl:sa" && a.allowed)
        .map(|a| format!("{} {}/{}", a.verb, a.resource, a.subresource))
        .collect();
    assert_eq!(
        allowed,
        ["get configmaps/", "get pods/log", "list configmaps/", "patch configmaps/"]
    );
}

#[tokio::test]
async fn cluster_roles_bound_by_role_and_cluster_role_bindings() {
    let sim = rbac_sim().await;
    sim.create(
        "clusterroles",
        "",
        json!({"metadata": {"name": "scaler"}, "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]},
        ]}),
    )
    .expect("clusterrole");
    // Bound in one namespace by a RoleBinding, to a group.
    sim.create(
        "rolebindings",
        "ns",
        json!({
            "metadata": {"name": "scalers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scaler"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:ctl"}],
        }),
    )
    .expect("rolebinding");
    let sa = client_from(&sim.service_account_kubeconfig("ctl", "sa", "ns")).await;
    let admin: Api<Deployment> = Api::namespaced(sim.client(), "ns");
    admin.create(&PostParams::default(), &crate::deployment("web", "b1")).await.expect("create");
    let deployments: Api<Deployment> = Api::namespaced(sa.clone(), "ns");
    deployments.get("web").await.expect("resourceNames grants web");
    let patch = json!({"spec": {"replicas": 0}});
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale");
    let s =
        status_of(deployments.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert_eq!(s.code, 403, "deployments/scale does not grant deployments");
    let s = status_of(Api::<Deployment>::namespaced(sa.clone(), "default").get("web").await);
    assert_eq!(s.code, 403, "a RoleBinding grants only in its namespace");

    // A ClusterRoleBinding grants everywhere.
    sim.create(
        "clusterrolebindings",
        "",
        json!({
            "metadata": {"name": "scalers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scaler"},
            "subjects": [{"kind": "User", "name": "system:serviceaccount:ctl:sa"}],
        }),
    )
    .expect("clusterrolebinding");
    let s = status_of(Api::<Deployment>::namespaced(sa, "default").get("web").await);
    assert_eq!(s.code, 404, "allowed now; the answer is the resource's own");
}

#[tokio::test]
async fn a_server_side_apply_that_creates_needs_create_too() {
    let sim = rbac_sim().await;
    grant(&sim, json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]));
    let sa = client_from(&sim.service_account_kubeconfig("ctl", "sa", "ns")).await;
    let cms: Api<ConfigMap> = Api::namespaced(sa, "ns");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let apply = PatchParams::apply("test").force();
    // As kube-apiserver's patch handler: the create is authorized separately,
    // and its denial carries RBAC's empty reason.
    for pp in [apply.clone().dry_run(), apply.clone()] {
        let s = status_of(cms.patch("c", &pp, &Patch::Apply(&applied)).await);
        assert_eq!((s.code, s.message.as_str()), (403, "configmaps \"c\" is forbidden: "));
    }
    let admin: Api<ConfigMap> = Api::namespaced(sim.client(), "ns");
    admin.patch("c", &apply, &Patch::Apply(&applied)).await.expect("the admin creates");
    cms.patch("c", &apply, &Patch::Apply(&applied)).await.expect("patch suffices once it exists");
    let verbs: Vec<(String, bool)> = sim
        .access_log()
        .into_iter()
        .filter(|a| a.user.starts_with("system:serviceaccount:"))
        .map(|a| (a.verb, a.allowed))
        .collect();
    assert_eq!(verbs, [("create".into(), false), ("patch".into(), true)]);
}

#[tokio::test]
async fn requests_without_credentials_are_anonymous_or_the_insecure_ports_admin() {
    let sim = rbac_sim().await;
    let anonymous = crate::no_retry_client(&sim);
    let s =
        status_of(Api::<ConfigMap>::namespaced(anonymous, "ns").list(&ListParams::default()).await);
    assert_eq!(
        s.message,
        "configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"ns\""
    );
    let config = Config {
        namespaces: vec!["default".into(), "ns".into()],
        rbac: true,
        unauthenticated_as_admin: true,
        ..Config::default()
    };
    let sim = KubeSim::start_with(config).await.expect("kubesim starts");
    let unsecured = crate::no_retry_client(&sim);
    Api::<ConfigMap>::namespaced(unsecured, "ns")
        .list(&ListParams::default())
        .await
        .expect("admin");
    assert_eq!(sim.access_log()[0].user, "system:unsecured");
}

#[tokio::test]
async fn rbac_is_off_by_default() {
    let sim = crate::sim().await;
    assert!(!sim.rbac_enabled());
    let anonymous = crate::no_retry_client(&sim);
    Api::<ConfigMap>::namespaced(anonymous, "ns").list(&ListParams::default()).await.expect("list");
    assert_eq!(sim.forbidden_count(), 0);
    assert!(sim.access_log().is_empty());
    assert!(!sim.kubeconfig("ns").contains("token"));
}
