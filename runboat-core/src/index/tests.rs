use std::collections::HashSet;

use proptest::prelude::*;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::testutil::{Model, Spec, arb_build, arb_states, ts};

fn names(builds: &[&Build]) -> Vec<String> {
    builds.iter().map(|b| b.name.clone()).collect()
}

#[test]
fn upsert_get_remove() {
    let mut idx = BuildIndex::new();
    let b = Spec::new("b1", BuildStatus::Stopped).build();
    assert!(idx.upsert(b.clone()));
    assert_eq!(idx.get("b1"), Some(&b));
    assert_eq!(idx.get_by_commit(&b.commit_info), Some(&b));
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.count_by_status(BuildStatus::Stopped), 1);
    assert_eq!(idx.count_by_init_status(InitStatus::Succeeded), 1);
    assert_eq!(idx.repos(), vec!["oca/x"]);
    assert_eq!(idx.remove("b1"), Some(b.clone()));
    assert_eq!(idx.remove("b1"), None);
    assert!(idx.is_empty());
    assert_eq!(idx.get_by_commit(&b.commit_info), None);
    assert_eq!(idx.count_by_status(BuildStatus::Stopped), 0);
    assert!(idx.repos().is_empty());
}

#[test]
fn events_only_for_real_changes() {
    let mut idx = BuildIndex::new();
    let mut rx = idx.subscribe();
    let b = Spec::new("b1", BuildStatus::Stopped).build();
    assert!(idx.upsert(b.clone()));
    assert!(!idx.upsert(b.clone()));
    let mut started = b.clone();
    started.status = BuildStatus::Started;
    idx.upsert(started.clone());
    idx.remove("b1");
    idx.remove("b1");
    assert_eq!(rx.try_recv().expect("upd"), IndexEvent::Upd(b));
    assert_eq!(rx.try_recv().expect("upd"), IndexEvent::Upd(started.clone()));
    let del = rx.try_recv().expect("del");
    assert_eq!(del.kind(), "del");
    assert_eq!(del.build(), &started);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn event_json_and_status_counts() {
    let mut idx = BuildIndex::new();
    let b = Spec::new("b1", BuildStatus::Stopped).build();
    idx.upsert(b.clone());
    let mut t = Spec::new("t", BuildStatus::Initializing);
    t.sha = 1;
    idx.upsert(t.build());
    let v = IndexEvent::Del(b.clone()).to_json("d.example", "http://x");
    assert_eq!(v["event"], "del");
    assert_eq!(v["build"], b.to_json("d.example", "http://x"));
    let counts = idx.status_counts(&crate::settings::Limits::default());
    assert_eq!(
        serde_json::to_value(counts).expect("json"),
        serde_json::json!({
            "deployed": 2, "max_deployed": 10, "failed": 0, "stopped": 1, "started": 0,
            "max_started": 6, "to_initialize": 1, "initializing": 0, "max_initializing": 2,
            "undeploying": 0, "pinned": 0, "max_pinned": 5,
        })
    );
}

#[test]
fn a_slow_subscriber_lags_and_never_blocks_the_index() {
    let mut idx = BuildIndex::with_event_capacity(2);
    let mut rx = idx.subscribe();
    for i in 0..5 {
        let mut s = Spec::new(&format!("b{i}"), BuildStatus::Stopped);
        s.created = i;
        idx.upsert(s.build());
    }
    assert_eq!(idx.len(), 5);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(3)));
    assert_eq!(rx.try_recv().expect("after lag").build().name, "b3");
}

#[test]
fn replace_all_emits_only_differences() {
    let mut idx = BuildIndex::new();
    let a = Spec::new("a", BuildStatus::Stopped).build();
    let b = Spec::new("b", BuildStatus::Stopped).build();
    let mut c = Spec::new("c", BuildStatus::Started);
    c.sha = 1;
    let c = c.build();
    idx.upsert(a.clone());
    idx.upsert(b.clone());
    let mut rx = idx.subscribe();
    let mut b2 = b.clone();
    b2.status = BuildStatus::Stopping;
    idx.replace_all(vec![b2.clone(), c.clone()]);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!(events, vec![IndexEvent::Del(a), IndexEvent::Upd(b2), IndexEvent::Upd(c)]);
    assert_eq!(idx.len(), 2);
}

#[test]
fn newest_build_of_a_branch_is_sticky_and_prs_are_not() {
    let mut idx = BuildIndex::new();
    let mut old = Spec::new("old", BuildStatus::Stopped);
    old.created = 1;
    let mut new = Spec::new("new", BuildStatus::Stopped);
    new.created = 2;
    new.sha = 1;
    let mut pr = Spec::new("pr", BuildStatus::Stopped);
    pr.created = 3;
    pr.pr = Some(7);
    pr.sha = 2;
    idx.upsert(new.build());
    assert!(idx.oldest_stopped(10).is_empty(), "the only build of a branch is protected");
    idx.upsert(old.build());
    idx.upsert(pr.build());
    assert_eq!(names(&idx.oldest_stopped(10)), vec!["old", "pr"]);
    assert_eq!(idx.newest_of_branch("oca/x", "16.0").map(|b| b.name.as_str()), Some("new"));
    // The newest leaving hands the protection to the next newest.
    idx.remove("new");
    assert_eq!(names(&idx.oldest_stopped(10)), vec!["pr"]);
    // A newer build (whatever its status) takes it over.
    let mut newer = Spec::new("newer", BuildStatus::Initializing);
    newer.created = 5;
    newer.sha = 3;
    idx.upsert(newer.build());
    assert_eq!(names(&idx.oldest_stopped(10)), vec!["old", "pr"]);
    // Other branches are independent.
    let mut other = Spec::new("other", BuildStatus::Stopped);
    other.branch = "17.0".to_owned();
    idx.upsert(other.build());
    assert_eq!(names(&idx.oldest_stopped(10)), vec!["old", "pr"]);
}

#[test]
fn ordered_queries_use_last_scaled_falling_back_to_created() {
    let mut idx = BuildIndex::new();
    let mut a = Spec::new("a", BuildStatus::Started);
    a.created = 1;
    a.last_scaled = Some(10);
    let mut b = Spec::new("b", BuildStatus::Started);
    b.created = 5;
    b.sha = 1;
    let mut c = Spec::new("c", BuildStatus::Started);
    c.created = 2;
    c.last_scaled = Some(3);
    c.sha = 2;
    for s in [&a, &b, &c] {
        idx.upsert(s.build());
    }
    assert_eq!(names(&idx.oldest_started(10)), vec!["c", "b", "a"]);
    assert_eq!(names(&idx.oldest_started(2)), vec!["c", "b"]);
    // Rescaling moves a build to the back.
    c.last_scaled = Some(20);
    idx.upsert(c.build());
    assert_eq!(names(&idx.oldest_started(1)), vec!["b"]);
}

#[test]
fn to_initialize_is_todo_oldest_first_never_undeploying() {
    let mut idx = BuildIndex::new();
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        let mut s = Spec::new(name, BuildStatus::Initializing);
        s.created = 10 - i64::try_from(i).expect("small");
        s.sha = u8::try_from(i).expect("small");
        idx.upsert(s.build());
    }
    let mut gone = Spec::new("gone", BuildStatus::Undeploying);
    gone.init = InitStatus::Todo;
    gone.sha = 9;
    idx.upsert(gone.build());
    let mut running = Spec::new("running", BuildStatus::Initializing);
    running.init = InitStatus::Started;
    running.sha = 8;
    idx.upsert(running.build());
    assert_eq!(names(&idx.to_initialize(2)), vec!["z", "y"]);
    assert_eq!(idx.count_by_init_status(InitStatus::Todo), 4);
    assert_eq!(idx.count_by_status(BuildStatus::Initializing), 4);
    assert_eq!(names(&idx.to_cleanup()), vec!["gone"]);
    assert_eq!(idx.count_deployed(), 4);
}

#[test]
fn search_filters_and_orders_like_the_original() {
    let mut idx = BuildIndex::new();
    let mk = |name: &str, repo: &str, branch: &str, pr: Option<u64>, created: i64| {
        let mut s = Spec::new(name, BuildStatus::Stopped);
        s.repo = repo.to_owned();
        s.branch = branch.to_owned();
        s.pr = pr;
        s.created = created;
        s.sha = u8::try_from(created).expect("small");
        s.build()
    };
    for b in [
        mk("a1", "oca/a", "16.0", None, 1),
        mk("a2", "oca/a", "16.0", None, 2),
        mk("a3", "oca/a", "17.0", None, 3),
        mk("a4", "oca/a", "16.0", Some(5), 4),
        mk("a5", "oca/a", "17.0", Some(12), 5),
        mk("b1", "oca/b", "16.0", None, 6),
    ] {
        idx.upsert(b);
    }
    let all = SearchFilters::default();
    assert_eq!(names(&idx.search(&all, SortOrder::Asc)), vec!["a4", "a5", "a1", "a2", "a3", "b1"]);
    assert_eq!(names(&idx.search(&all, SortOrder::Desc)), vec!["b1", "a3", "a2", "a1", "a5", "a4"]);
    let f = SearchFilters { repo: Some("OCA/A".to_owned()), ..Default::default() };
    assert_eq!(idx.search(&f, SortOrder::Desc).len(), 5);
    let f = SearchFilters { target_branch: Some("16.0".to_owned()), ..Default::default() };
    assert_eq!(names(&idx.search(&f, SortOrder::Asc)), vec!["a4", "a1", "a2", "b1"]);
    let f = SearchFilters {
        repo: Some("oca/a".to_owned()),
        branch: Some("16.0".to_owned()),
        ..Default::default()
    };
    assert_eq!(names(&idx.search(&f, SortOrder::Desc)), vec!["a2", "a1"]);
    let f = SearchFilters { pr: Some(12), ..Default::default() };
    assert_eq!(names(&idx.search(&f, SortOrder::Desc)), vec!["a5"]);
    let f = SearchFilters { status: Some(BuildStatus::Started), ..Default::default() };
    assert!(idx.search(&f, SortOrder::Desc).is_empty());
    let f = SearchFilters { name: Some("b1".to_owned()), ..Default::default() };
    assert_eq!(names(&idx.search(&f, SortOrder::Desc)), vec!["b1"]);
    assert_eq!(idx.repos(), vec!["oca/a", "oca/b"]);
}

#[test]
fn duplicate_commit_identities_resolve_to_the_smallest_name() {
    let mut idx = BuildIndex::new();
    let z = Spec::new("z", BuildStatus::Stopped).build();
    let a = Spec::new("a", BuildStatus::Stopped).build();
    idx.upsert(z.clone());
    idx.upsert(a.clone());
    assert_eq!(idx.get_by_commit(&z.commit_info).map(|b| b.name.as_str()), Some("a"));
    idx.remove("a");
    assert_eq!(idx.get_by_commit(&z.commit_info).map(|b| b.name.as_str()), Some("z"));
}

#[test]
fn an_upsert_may_change_every_field() {
    let mut idx = BuildIndex::new();
    let a = Spec::new("a", BuildStatus::Stopped);
    idx.upsert(a.build());
    let mut moved = a.clone();
    moved.repo = "oca/other".to_owned();
    moved.pr = Some(3);
    moved.created = 9;
    idx.upsert(moved.build());
    assert_eq!(idx.repos(), vec!["oca/other"]);
    assert_eq!(idx.newest_of_branch("oca/x", "16.0"), None);
    assert_eq!(idx.get_by_commit(&a.build().commit_info), None);
    assert_eq!(names(&idx.oldest_stopped(5)), vec!["a"]);
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(Build),
    /// Change the state of an existing build (same commit and creation).
    Touch(usize, (InitStatus, BuildStatus), Option<i64>),
    Remove(usize),
    ReplaceAll(Vec<Build>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => arb_build(12).prop_map(Op::Upsert),
        6 => (0..12usize, arb_states(), prop::option::of(0..20i64))
            .prop_map(|(n, states, scaled)| Op::Touch(n, states, scaled)),
        3 => (0..12usize).prop_map(Op::Remove),
        1 => prop::collection::vec(arb_build(12), 0..8).prop_map(Op::ReplaceAll),
    ]
}

fn arb_filters() -> impl Strategy<Value = SearchFilters> {
    (
        prop::option::of(prop::sample::select(vec!["oca/a", "OCA/B", "acsone/c", "x/y"])),
        prop::option::of(prop::sample::select(vec!["16.0", "17.0"])),
        prop::option::of(prop::sample::select(vec!["16.0", "17.0"])),
        prop::option::of(1..4u64),
        prop::option::of((0..12usize).prop_map(|n| format!("b{n}"))),
        prop::option::of(prop::sample::select(BuildStatus::ALL.to_vec())),
    )
        .prop_map(|(repo, target_branch, branch, pr, name, status)| SearchFilters {
            repo: repo.map(str::to_owned),
            target_branch: target_branch.map(str::to_owned),
            branch: branch.map(str::to_owned),
            pr,
            name,
            status,
        })
}

fn model_search<'a>(model: &'a Model, f: &SearchFilters, order: SortOrder) -> Vec<&'a Build> {
    let mut v: Vec<&Build> = model.builds.iter().filter(|b| f.matches(b)).collect();
    v.sort_by_key(|b| {
        let c = &b.commit_info;
        (c.repo(), c.pr().unwrap_or(u64::MAX), c.target_branch(), b.created, b.name.clone())
    });
    if order == SortOrder::Desc {
        v.reverse();
    }
    v
}

fn check(idx: &BuildIndex, model: &Model, filters: &[SearchFilters]) -> Result<(), TestCaseError> {
    prop_assert_eq!(idx.len(), model.builds.len());
    for b in &model.builds {
        prop_assert_eq!(idx.get(&b.name), Some(b));
        let by_commit = model
            .builds
            .iter()
            .filter(|x| x.commit_info == b.commit_info)
            .min_by(|x, y| x.name.cmp(&y.name));
        prop_assert_eq!(idx.get_by_commit(&b.commit_info), by_commit);
        prop_assert_eq!(idx.is_newest_of_branch(b), model.is_newest(b));
        prop_assert_eq!(idx.is_pinned(&b.name), b.pinned);
        let by_slug =
            model.builds.iter().filter(|x| x.slug() == b.slug()).min_by(|x, y| x.name.cmp(&y.name));
        prop_assert_eq!(idx.get_by_slug(&b.slug()), by_slug);
        prop_assert_eq!(
            idx.newest_of_branch(b.commit_info.repo(), b.commit_info.target_branch()),
            model.newest_of_branch(b.commit_info.repo(), b.commit_info.target_branch())
        );
    }
    for s in BuildStatus::ALL {
        prop_assert_eq!(idx.count_by_status(s), model.count(s), "status {}", s);
    }
    for s in InitStatus::ALL {
        prop_assert_eq!(idx.count_by_init_status(s), model.count_init(s), "init {}", s);
    }
    prop_assert_eq!(idx.count_deployed(), model.deployed());
    prop_assert_eq!(idx.count_pinned(), model.count_pinned());
    for limit in [0, 1, 3, usize::MAX] {
        let take = |v: Vec<&Build>| names(&v.into_iter().take(limit).collect::<Vec<_>>());
        prop_assert_eq!(names(&idx.to_initialize(limit)), take(model.to_initialize()));
        prop_assert_eq!(names(&idx.oldest_started(limit)), take(model.oldest_started()));
        prop_assert_eq!(names(&idx.oldest_stopped(limit)), take(model.oldest_stopped()));
    }
    prop_assert_eq!(names(&idx.to_cleanup()), names(&model.to_cleanup()));
    let mut repos: Vec<&str> = model.builds.iter().map(|b| b.commit_info.repo()).collect();
    repos.sort_unstable();
    repos.dedup();
    prop_assert_eq!(idx.repos(), repos);
    for f in filters.iter().chain([&SearchFilters::default()]) {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            prop_assert_eq!(
                names(&idx.search(f, order)),
                names(&model_search(model, f, order)),
                "{:?} {:?}",
                f,
                order
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_agrees_with_a_naive_model(
        ops in prop::collection::vec(arb_op(), 1..40),
        filters in prop::collection::vec(arb_filters(), 4),
    ) {
        let mut idx = BuildIndex::new();
        let mut rx = idx.subscribe();
        let mut model = Model::default();
        let mut revs: HashMap<String, u64> = HashMap::new();
        let mut seen_revs: HashSet<u64> = HashSet::new();
        for op in ops {
            let version_before = idx.version();
            let mut expected = Vec::new();
            match op {
                Op::Upsert(b) => {
                    let changed = model.upsert(b.clone());
                    prop_assert_eq!(idx.upsert(b.clone()), changed);
                    if changed {
                        expected.push(IndexEvent::Upd(b));
                    }
                }
                Op::Touch(n, (init, status), scaled) => {
                    let Some(mut b) = model.builds.iter().find(|b| b.name == format!("b{n}")).cloned()
                    else {
                        continue;
                    };
                    b.init_status = init;
                    b.status = status;
                    b.last_scaled = scaled.map(ts);
                    let changed = model.upsert(b.clone());
                    prop_assert_eq!(idx.upsert(b.clone()), changed);
                    if changed {
                        expected.push(IndexEvent::Upd(b));
                    }
                }
                Op::Remove(n) => {
                    let name = format!("b{n}");
                    let removed = model.remove(&name);
                    prop_assert_eq!(idx.remove(&name), removed.clone());
                    expected.extend(removed.map(IndexEvent::Del));
                }
                Op::ReplaceAll(builds) => {
                    let mut last: BTreeMap<String, Build> = BTreeMap::new();
                    for b in &builds {
                        last.insert(b.name.clone(), b.clone());
                    }
                    let mut vanished: Vec<Build> = model
                        .builds
                        .iter()
                        .filter(|b| !last.contains_key(&b.name))
                        .cloned()
                        .collect();
                    vanished.sort_by(|a, b| a.name.cmp(&b.name));
                    for b in vanished {
                        model.remove(&b.name);
                        expected.push(IndexEvent::Del(b));
                    }
                    for b in last.into_values() {
                        if model.upsert(b.clone()) {
                            expected.push(IndexEvent::Upd(b));
                        }
                    }
                    // Event order of deletions is not specified.
                    idx.replace_all(builds);
                }
            }
            let mut got = Vec::new();
            while let Ok(e) = rx.try_recv() {
                got.push(e);
            }
            let key = |e: &IndexEvent| (e.kind(), e.build().name.clone());
            got.sort_by_key(key);
            expected.sort_by_key(key);
            // Revisions: new (never seen before) exactly for the builds
            // that changed, the same for the others.
            let changed: Vec<&str> = expected
                .iter()
                .filter(|e| e.kind() == "upd")
                .map(|e| e.build().name.as_str())
                .collect();
            let mut now = HashMap::new();
            for b in &model.builds {
                let rev = idx.revision(&b.name);
                prop_assert!(rev.is_some(), "no revision for {}", b.name);
                let rev = rev.unwrap_or_default();
                if changed.contains(&b.name.as_str()) {
                    prop_assert!(seen_revs.insert(rev), "revision {} reused", rev);
                } else {
                    prop_assert_eq!(revs.get(&b.name), Some(&rev), "{} kept its revision", b.name);
                }
                now.insert(b.name.clone(), rev);
            }
            revs = now;
            // The version moves exactly when something changed.
            prop_assert_eq!(idx.version() != version_before, !got.is_empty() || !expected.is_empty());
            for order in [SortOrder::Asc, SortOrder::Desc] {
                let with: Vec<(String, u64)> = idx
                    .search_with_revisions(&SearchFilters::default(), order)
                    .into_iter()
                    .map(|(b, r)| (b.name.clone(), r))
                    .collect();
                let plain: Vec<(String, u64)> = idx
                    .search(&SearchFilters::default(), order)
                    .into_iter()
                    .map(|b| (b.name.clone(), revs[&b.name]))
                    .collect();
                prop_assert_eq!(with, plain);
            }
            prop_assert_eq!(got, expected);
            check(&idx, &model, &filters)?;
        }
    }
}
