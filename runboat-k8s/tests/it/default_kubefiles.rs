//! The default kubefiles: goldens for every mode (both formats against the same
//! files, so they are also equivalent), and the Odoo contract of the SPEC.

use runboat_core::KubefilesMode;
use runboat_k8s::{Format, Kubefiles, RenderContext};
use serde_json::Value;

use crate::support::{
    check_golden, find, full, kubectl_available, kubefiles_dir, kustomize, minimal, names, native,
};

async fn render(kubefiles: &Kubefiles, ctx: &RenderContext) -> Vec<Value> {
    kubefiles
        .render(ctx)
        .await
        .unwrap_or_else(|err| panic!("{} renders {}: {err}", kubefiles.origin(), ctx.mode))
}

#[tokio::test]
async fn native_renders_the_goldens_in_every_mode() {
    let kubefiles = native();
    assert_eq!(kubefiles.format(), Format::Native);
    for mode in KubefilesMode::ALL {
        check_golden(&format!("minimal-{mode}"), &render(&kubefiles, &minimal(mode)).await);
        check_golden(&format!("full-{mode}"), &render(&kubefiles, &full(mode)).await);
    }
}

#[tokio::test]
async fn kustomize_renders_the_same_goldens_in_every_mode() {
    if !kubectl_available("kustomize_renders_the_same_goldens_in_every_mode").await {
        return;
    }
    let kubefiles = kustomize();
    assert_eq!(kubefiles.format(), Format::Kustomize);
    for mode in KubefilesMode::ALL {
        check_golden(&format!("minimal-{mode}"), &render(&kubefiles, &minimal(mode)).await);
        check_golden(&format!("full-{mode}"), &render(&kubefiles, &full(mode)).await);
    }
}

#[tokio::test]
async fn native_and_kustomize_variants_are_equivalent() {
    if !kubectl_available("native_and_kustomize_variants_are_equivalent").await {
        return;
    }
    let (native, kustomize) = (native(), kustomize());
    for mode in KubefilesMode::ALL {
        for ctx in [minimal(mode), full(mode)] {
            let a = render(&native, &ctx).await;
            let b = render(&kustomize, &ctx).await;
            assert_eq!(names(&a), names(&b), "mode {mode}");
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(a, b, "mode {mode}: native and kustomize differ");
            }
        }
    }
}

#[tokio::test]
async fn each_mode_renders_its_objects() {
    let kubefiles = native();
    let expected = [
        (
            KubefilesMode::Deployment,
            vec![
                "ConfigMap/b5f2c1e0a9d8c7b6a-odooenv",
                "ConfigMap/b5f2c1e0a9d8c7b6a-runboat-scripts",
                "Secret/b5f2c1e0a9d8c7b6a-github-token",
                "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv",
                "Service/b5f2c1e0a9d8c7b6a-odoo",
                "PersistentVolumeClaim/b5f2c1e0a9d8c7b6a-data",
                "Deployment/b5f2c1e0a9d8c7b6a-odoo",
                "Ingress/b5f2c1e0a9d8c7b6a-mailhog",
                "Ingress/b5f2c1e0a9d8c7b6a-odoo",
            ],
        ),
        (
            KubefilesMode::Initialize,
            vec![
                "ConfigMap/b5f2c1e0a9d8c7b6a-odooenv",
                "ConfigMap/b5f2c1e0a9d8c7b6a-runboat-scripts",
                "Secret/b5f2c1e0a9d8c7b6a-github-token",
                "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv",
                "PersistentVolumeClaim/b5f2c1e0a9d8c7b6a-data",
                "Job/b5f2c1e0a9d8c7b6a-initialize",
            ],
        ),
        (
            KubefilesMode::Start,
            vec![
                "ConfigMap/b5f2c1e0a9d8c7b6a-odooenv",
                "ConfigMap/b5f2c1e0a9d8c7b6a-runboat-scripts",
                "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv",
            ],
        ),
        (
            KubefilesMode::Stop,
            vec![
                "ConfigMap/b5f2c1e0a9d8c7b6a-odooenv",
                "ConfigMap/b5f2c1e0a9d8c7b6a-runboat-scripts",
                "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv",
            ],
        ),
        (
            KubefilesMode::Cleanup,
            vec![
                "ConfigMap/b5f2c1e0a9d8c7b6a-odooenv",
                "ConfigMap/b5f2c1e0a9d8c7b6a-runboat-scripts",
                "Secret/b5f2c1e0a9d8c7b6a-odoosecretenv",
                "Job/b5f2c1e0a9d8c7b6a-cleanup",
            ],
        ),
    ];
    for (mode, expected) in expected {
        assert_eq!(names(&render(&kubefiles, &full(mode)).await), expected, "mode {mode}");
    }
}

#[tokio::test]
async fn the_deployment_follows_the_odoo_contract() {
    let objects = render(&native(), &full(KubefilesMode::Deployment)).await;
    let deployment = find(&objects, "Deployment", "-odoo");
    assert_eq!(deployment["spec"]["replicas"], 0);
    assert_eq!(deployment["metadata"]["annotations"]["runboat/init-status"], "todo");
    assert_eq!(deployment["metadata"]["annotations"]["runboat/pr"], "42");
    assert_eq!(deployment["metadata"]["finalizers"], serde_json::json!(["runboat/cleanup"]));
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"], "odoo");
    assert_eq!(pod["spec"]["enableServiceLinks"], false);
    let containers = pod["spec"]["containers"].as_array().expect("containers");
    let odoo = &containers[0];
    assert_eq!(odoo["name"], "odoo");
    assert_eq!(odoo["image"], "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(odoo[probe]["tcpSocket"]["port"], 8069, "{probe}");
    }
    assert_eq!(odoo["resources"]["limits"]["memory"], "3Gi", "template var");
    assert_eq!(odoo["resources"]["requests"]["memory"], "100Mi", "default");
    let mail = &containers[1];
    assert_eq!(mail["name"], "mailhog", "the original's name: a reset must not add a second one");
    assert_eq!(mail["image"], "axllent/mailpit:latest");
    assert_eq!(mail["ports"][1]["containerPort"], 8025);
    // Opt-in template vars.
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let pvc = find(&objects, "PersistentVolumeClaim", "-data");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(pvc["spec"]["resources"]["limits"]["storage"], "2Gi");
    assert_eq!(pvc["spec"]["storageClassName"], "fast-ssd");

    let odoo_host = "oca-mis-builder-16-0-pr42-0123456789ab.runboat.example.com";
    let mail_host = "oca-mis-builder-16-0-pr42-0123456789ab.mail.runboat.example.com";
    for (suffix, host, port) in [("-odoo", odoo_host, 8069), ("-mailhog", mail_host, 8025)] {
        let ingress = find(&objects, "Ingress", suffix);
        assert_eq!(ingress["spec"]["rules"][0]["host"], host);
        assert_eq!(ingress["spec"]["tls"][0]["hosts"][0], host);
        assert_eq!(ingress["spec"]["tls"][0]["secretName"], "runboat-wildcard-tls");
        assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
        let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
        assert_eq!(backend["name"], "b5f2c1e0a9d8c7b6a-odoo");
        assert_eq!(backend["port"]["number"], port);
    }
    let minimal = render(&native(), &minimal(KubefilesMode::Deployment)).await;
    let ingress = find(&minimal, "Ingress", "-odoo");
    assert!(ingress["spec"].get("tls").is_none(), "no TLS without tlsSecretName");
    let deployment = find(&minimal, "Deployment", "-odoo");
    assert_eq!(deployment["metadata"]["annotations"]["runboat/pr"], "");
    // Without template vars, the original's: no opt-in on, its sizes and images.
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod.get("automountServiceAccountToken").is_none());
    assert!(pod.get("securityContext").is_none());
    assert_eq!(pod["containers"][1]["image"], "mailhog/mailhog:latest");
    let pvc = find(&minimal, "PersistentVolumeClaim", "-data");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "200Mi");
    assert_eq!(pvc["spec"]["resources"]["limits"]["storage"], "250Mi");
    assert!(pvc["spec"].get("storageClassName").is_none());
}

#[tokio::test]
async fn the_init_job_follows_the_contract() {
    let objects = render(&native(), &full(KubefilesMode::Initialize)).await;
    let job = find(&objects, "Job", "-initialize");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 1200);
    assert_eq!(job["metadata"]["labels"]["runboat/job-kind"], "initialize");
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["runboat/job-kind"], "initialize");
    // A token is configured: the `download` init container fetches the source with it.
    let download = &job["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(download["name"], "download");
    assert_eq!(download["args"][2], "download");
    let token = &download["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], "b5f2c1e0a9d8c7b6a-github-token");
    // The container running the repository's code never sees the token.
    let install = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        install["env"],
        serde_json::json!([{"name": "RUNBOAT_SOURCE_DOWNLOADED", "value": "1"}])
    );
    assert!(!serde_json::to_string(install).expect("json").contains("github-token"));
    let cleanup = render(&native(), &full(KubefilesMode::Cleanup)).await;
    let job = find(&cleanup, "Job", "-cleanup");
    assert_eq!(job["metadata"]["labels"]["runboat/job-kind"], "cleanup");
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["runboat/job-kind"], "cleanup");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["image"], "postgres:17");

    // No token: the original's Job, one container that downloads the source itself.
    let objects = render(&native(), &minimal(KubefilesMode::Initialize)).await;
    let pod = &find(&objects, "Job", "-initialize")["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none());
    assert!(pod["containers"][0].get("env").is_none());
    assert!(
        objects
            .iter()
            .all(|o| !o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-github-token")))
    );
    let cleanup = render(&native(), &minimal(KubefilesMode::Cleanup)).await;
    let pod = &find(&cleanup, "Job", "-cleanup")["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "postgres", "the original's cleanup image");
}

#[tokio::test]
async fn a_token_secret_name_alone_turns_the_download_container_on() {
    let mut ctx = minimal(KubefilesMode::Initialize);
    ctx.build_template_vars.insert("githubTokenSecretName".into(), "org-token".into());
    let objects = render(&native(), &ctx).await;
    let pod = &find(&objects, "Job", "-initialize")["spec"]["template"]["spec"];
    let token = &pod["initContainers"][0]["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], "org-token");
    assert_eq!(token["key"], "token");
    assert!(
        objects
            .iter()
            .all(|o| o["kind"] != "Secret"
                || o["metadata"]["name"] != "b5f2c1e0a9d8c7b6a-github-token"),
        "an existing Secret is used, none is created"
    );
}

#[tokio::test]
async fn secrets_only_ever_go_to_secrets() {
    for mode in KubefilesMode::ALL {
        let objects = render(&native(), &full(mode)).await;
        for object in &objects {
            let text = serde_json::to_string(object).expect("json");
            if object["kind"] != "Secret" {
                for secret in ["s3cr3t-pg-password", "ghp_s3cr3tT0ken"] {
                    assert!(!text.contains(secret), "{secret} in {}", object["metadata"]["name"]);
                }
            }
            // Nor base64-encoded outside the Secrets' data.
            let annotations =
                serde_json::to_string(&object["metadata"]["annotations"]).expect("json");
            assert!(!annotations.contains("Z2hwX3MzY3IzdFQwa2Vu"), "token in annotations");
        }
        if mode == KubefilesMode::Deployment {
            let env = find(&objects, "Secret", "-odoosecretenv");
            assert_eq!(env["data"]["PGPASSWORD"], "czNjcjN0LXBnLXBhc3N3b3Jk");
            assert!(
                env["data"].get("RUNBOAT_GITHUB_TOKEN").is_none(),
                "token not in the env Secret"
            );
            let token = find(&objects, "Secret", "-github-token");
            assert_eq!(token["data"]["token"], "Z2hwX3MzY3IzdFQwa2Vu");
            let config = find(&objects, "ConfigMap", "-odooenv");
            assert_eq!(config["data"]["PGDATABASE"], "b5f2c1e0a9d8c7b6a", "fixed keys win");
            assert_eq!(config["data"]["PGHOST"], "postgres.runboat");
        }
    }
}

#[tokio::test]
async fn the_embedded_set_is_the_directory() {
    // A file added to kubefiles/native but not embedded changes what renders.
    let on_disk = Kubefiles::load(kubefiles_dir("native")).expect("loads");
    for mode in KubefilesMode::ALL {
        assert_eq!(render(&on_disk, &full(mode)).await, render(&native(), &full(mode)).await);
    }
}

#[test]
fn the_kustomize_scripts_are_the_native_ones() {
    let mut scripts: Vec<String> = std::fs::read_dir(kubefiles_dir("native"))
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sh"))
        .collect();
    scripts.sort();
    assert_eq!(scripts.len(), 4, "{scripts:?}");
    for script in scripts {
        let native = std::fs::read_to_string(kubefiles_dir("native").join(&script)).expect("read");
        let kustomize = std::fs::read_to_string(kubefiles_dir("kustomize").join(&script))
            .unwrap_or_else(|err| panic!("kustomize/{script}: {err}"));
        assert_eq!(native, kustomize, "{script} differs between the native and kustomize sets");
    }
}

#[tokio::test]
async fn kubefiles_render_from_spawned_tasks() {
    // The server shares one loaded set between tasks: it must be Sync and its render
    // future Send.
    let kubefiles = std::sync::Arc::new(native());
    let task = {
        let kubefiles = std::sync::Arc::clone(&kubefiles);
        tokio::spawn(async move {
            kubefiles.render(&minimal(KubefilesMode::Stop)).await.map(|o| o.len())
        })
    };
    assert_eq!(task.await.expect("task").expect("renders"), 3);
}
