//! Render rate of the default kubefiles: native (in-process) versus kustomize
//! (`kubectl kustomize` per render), mode `deployment`.
//!
//! `cargo bench -p runboat-k8s`. The kustomize case is skipped when kubectl is
//! missing.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use runboat_core::{CommitInfo, KubefilesMode};
use runboat_k8s::{Kubefiles, RenderContext};

fn context() -> RenderContext {
    RenderContext {
        namespace: "runboat-builds".into(),
        mode: KubefilesMode::Deployment,
        build_name: "b5f2c1e0a9d8c7b6a".into(),
        build_slug: "oca-mis-builder-16-0-pr42-0123456789ab".into(),
        build_domain: "runboat.example.com".into(),
        commit_info: CommitInfo::new(
            "oca/mis-builder",
            "16.0",
            Some(42),
            "0123456789abcdef0123456789abcdef01234567",
        )
        .expect("valid commit"),
        image_name: "ghcr.io/oca/oca-ci/py3.10-odoo16.0".into(),
        image_tag: "latest".into(),
        build_env: [("PGHOST".to_owned(), "postgres".to_owned())].into(),
        build_secret_env: [("PGPASSWORD".to_owned(), "secret".to_owned())].into(),
        build_template_vars: Default::default(),
    }
}

fn render(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ctx = context();
    let mut group = c.benchmark_group("render_default_kubefiles");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    let native = Kubefiles::embedded().expect("embedded kubefiles");
    group.bench_function("native", |b| {
        b.iter(|| runtime.block_on(native.render(&ctx)).expect("renders"));
    });

    if runtime.block_on(runboat_k8s::check_kustomize_available()).is_ok() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kubefiles/kustomize");
        let kustomize = Kubefiles::load(dir).expect("kustomize kubefiles");
        group.bench_function("kustomize", |b| {
            b.iter(|| runtime.block_on(kustomize.render(&ctx)).expect("renders"));
        });
    } else {
        eprintln!("NOTICE: kubectl unavailable, kustomize render not benchmarked");
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
