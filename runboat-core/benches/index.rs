//! Benchmarks of the build index and the policies at 100,000 builds.
//!
//! Targets (issue 2): an upsert under 5 µs, one policy decision under 1 ms,
//! under 1 KiB of index memory per build.
//!
//! Memory is measured before criterion runs: the resident set size (from
//! `/proc/self/statm`, Linux only) is read before and after upserting
//! 100,000 builds one by one into an empty index, and the difference is
//! divided by the number of builds. It includes the builds themselves and
//! every auxiliary structure of the index, and the allocator's overhead.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use runboat_core::policy::{InFlight, JobTable, World, decide};
use runboat_core::{
    Build, BuildIndex, BuildStatus, CommitInfo, InitStatus, SearchFilters, Settings, SortOrder,
};

const N: usize = 100_000;

fn ts(secs: usize) -> Timestamp {
    let secs = i64::try_from(secs).expect("small");
    Timestamp::from_second(1_704_067_200 + secs).expect("in range")
}

/// Build `i` of a realistic population: 300 repos, 3 branches each, 80% pull
/// request builds, statuses spread like a busy production namespace.
fn build(i: usize) -> Build {
    let repo = format!("oca/repository-{}", i % 300);
    let branch = ["16.0", "17.0", "18.0"][i % 3];
    let pr = (!i.is_multiple_of(5)).then_some(u64::try_from(1 + i % 4000).expect("small"));
    let sha =
        format!("{:040x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834));
    let commit_info = CommitInfo::new(&repo, branch, pr, &sha).expect("valid");
    let name = commit_info.build_name();
    // Mostly stopped, some started, a few initializing, failed, undeploying.
    let (status, init_status) = match i % 1000 {
        0..=0 => (BuildStatus::Started, InitStatus::Succeeded),
        1..=3 => (BuildStatus::Initializing, InitStatus::Todo),
        4 => (BuildStatus::Undeploying, InitStatus::Succeeded),
        5..=50 => (BuildStatus::Failed, InitStatus::Failed),
        _ => (BuildStatus::Stopped, InitStatus::Succeeded),
    };
    Build {
        deployment_name: name.clone(),
        name,
        commit_info,
        status,
        init_status,
        desired_replicas: i32::from(status == BuildStatus::Started),
        created: ts(i),
        last_scaled: (i.is_multiple_of(2)).then(|| ts(i + 7)),
        pinned: false,
        route: None,
    }
}

fn full_index() -> BuildIndex {
    let mut idx = BuildIndex::new();
    for i in 0..N {
        idx.upsert(build(i));
    }
    idx
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn report_memory() {
    let before = rss_bytes();
    let idx = full_index();
    let after = rss_bytes();
    if let (Some(before), Some(after)) = (before, after) {
        let per_build = after.saturating_sub(before) / idx.len();
        eprintln!(
            "index memory: {} builds, RSS +{:.1} MiB, {} bytes per build (target < 1024)",
            idx.len(),
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
            per_build
        );
    } else {
        eprintln!("index memory: /proc/self/statm unavailable, not measured");
    }
    drop(black_box(idx));
}

fn benches(c: &mut Criterion) {
    report_memory();
    let mut idx = full_index();

    let mut g = c.benchmark_group("index_100k");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    // Real changes: flip the last-scaled time of existing builds spread over
    // the index, so every upsert moves entries in the ordered sets.
    let variants: Vec<(Build, Build)> = (0..1000)
        .map(|k| {
            let a = build(k * 97);
            let mut b = a.clone();
            b.last_scaled = Some(ts(N + k));
            b.status =
                if a.status == BuildStatus::Stopped { BuildStatus::Started } else { a.status };
            (a, b)
        })
        .collect();
    let mut flip = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("upsert_change", |b| {
        b.iter_batched(
            || {
                flip += 1;
                let (x, y) = &variants[flip % variants.len()];
                if (flip / variants.len()).is_multiple_of(2) { y.clone() } else { x.clone() }
            },
            |build| black_box(idx.upsert(build)),
            BatchSize::SmallInput,
        )
    });
    let current: Vec<Build> =
        variants.iter().filter_map(|(a, _)| idx.get(&a.name).cloned()).collect();
    g.bench_function("upsert_unchanged", |b| {
        b.iter_batched(
            || {
                flip += 1;
                current[flip % current.len()].clone()
            },
            |build| black_box(idx.upsert(build)),
            BatchSize::SmallInput,
        )
    });
    // Limits placing the index just above them, as in a steady state where
    // every change triggers a few actions: 2 initializations, 5 stops, 10
    // undeploys and the cleanup of the ~100 undeploying builds.
    let mut settings = Settings::from_toml_str(
        "api_admin_user = \"a\"\napi_admin_passwd = \"p\"\nbuild_namespace = \"ns\"\n\
         build_domain = \"example.com\"\nbase_url = \"https://runboat.example.com\"\n",
    )
    .expect("settings");
    settings.max_initializing = 2;
    settings.max_started = idx.count_by_status(BuildStatus::Started) - 5;
    settings.max_deployed = idx.count_deployed() - 10;
    let (jobs, in_flight, failures, touched) =
        (JobTable::new(), InFlight::new(), BTreeSet::new(), BTreeSet::new());
    let world = World {
        index: &idx,
        jobs: &jobs,
        in_flight: &in_flight,
        settings: &settings,
        // No cap, so that the step decides everything the limits ask for.
        max_concurrent_actions: usize::MAX,
        cleanup_failures: &failures,
        now: tokio::time::Instant::now(),
        wall_now: jiff::Timestamp::now(),
        leader: true,
    };
    let step = decide(&world, &touched, []);
    eprintln!("decide at {} builds returns {} actions", idx.len(), step.tasks.len());
    g.bench_function("decide", |b| b.iter(|| black_box(decide(&world, &touched, []))));
    let filters =
        SearchFilters { repo: Some("oca/repository-42".to_owned()), ..Default::default() };
    g.bench_function("search_one_repo", |b| {
        b.iter(|| black_box(idx.search(&filters, SortOrder::Desc).len()))
    });
    g.finish();

    let mut g = c.benchmark_group("index_fill");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let builds: Vec<Build> = (0..N).map(build).collect();
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("upsert_100k_new_builds", |b| {
        b.iter_batched(
            || builds.clone(),
            |builds| {
                let mut idx = BuildIndex::new();
                for b in builds {
                    idx.upsert(b);
                }
                idx
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(index, benches);
criterion_main!(index);
