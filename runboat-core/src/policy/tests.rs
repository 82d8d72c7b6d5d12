//! Tests of the step: examples of each decision, then properties of
//! [`decide`] over arbitrary indexes, job tables, in-flight sets, limits and
//! request queues, checked against the linear reference model of the index.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::cluster::JobFacts;
use crate::testutil::{Model, Spec, arb_build};

fn settings(i: usize, s: usize, d: usize) -> Settings {
    let mut settings = Settings::from_toml_str(
        r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "ns"
build_domain = "example.com"
base_url = "https://runboat.example.com"

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{ image = "odoo:16" }]
"#,
    )
    .expect("settings");
    settings.max_initializing = i;
    settings.max_started = s;
    settings.max_deployed = d;
    settings
}

fn index_of(specs: &[Spec]) -> BuildIndex {
    let mut idx = BuildIndex::new();
    for s in specs {
        idx.upsert(s.build());
    }
    idx
}

fn spec(name: &str, status: BuildStatus, created: i64, sha: u8) -> Spec {
    let mut s = Spec::new(name, status);
    s.created = created;
    s.sha = sha;
    s
}

fn job(name: &str, build: &str, kind: JobKind, phase: JobPhase) -> JobFacts {
    JobFacts {
        name: name.into(),
        build_name: build.into(),
        kind,
        phase,
        deleting: false,
        started: None,
        finished: None,
    }
}

/// Everything the step reads but the index, with room for any number of
/// actions unless `max_concurrent_actions` is changed.
struct Fixture {
    settings: Settings,
    jobs: JobTable,
    in_flight: InFlight,
    failures: BTreeSet<String>,
    max_concurrent_actions: usize,
    now: Instant,
    wall_now: jiff::Timestamp,
    leader: bool,
}

impl Fixture {
    fn new(settings: Settings) -> Fixture {
        Fixture {
            settings,
            jobs: JobTable::new(),
            in_flight: InFlight::new(),
            failures: BTreeSet::new(),
            max_concurrent_actions: 1000,
            now: Instant::now(),
            wall_now: crate::testutil::ts(25),
            leader: true,
        }
    }

    fn world<'a>(&'a self, index: &'a BuildIndex) -> World<'a> {
        World {
            index,
            jobs: &self.jobs,
            in_flight: &self.in_flight,
            settings: &self.settings,
            max_concurrent_actions: self.max_concurrent_actions,
            cleanup_failures: &self.failures,
            now: self.now,
            wall_now: self.wall_now,
            leader: self.leader,
        }
    }

    fn decide(&self, index: &BuildIndex, touched: &[&str], requests: &[Request]) -> Step {
        let touched: BTreeSet<String> = touched.iter().map(|s| (*s).to_owned()).collect();
        decide(&self.world(index), &touched, requests)
    }
}

fn names(tasks: &[Task]) -> Vec<String> {
    tasks.iter().map(ToString::to_string).collect()
}

#[test]
fn initializes_the_oldest_todo_builds_within_the_room_left() {
    let mut running = spec("running", BuildStatus::Initializing, 0, 0);
    running.init = InitStatus::Started;
    let idx = index_of(&[
        running,
        spec("t3", BuildStatus::Initializing, 3, 3),
        spec("t1", BuildStatus::Initializing, 1, 1),
        spec("t2", BuildStatus::Initializing, 2, 2),
    ]);
    let f = Fixture::new(settings(3, 9, 99));
    assert_eq!(names(&f.decide(&idx, &[], &[]).tasks), ["initialize t1", "initialize t2"]);
    assert!(Fixture::new(settings(1, 9, 99)).decide(&idx, &[], &[]).tasks.is_empty());
    // A limit of 0 pauses initialization.
    assert!(Fixture::new(settings(0, 9, 99)).decide(&idx, &[], &[]).tasks.is_empty());

    // A running init Job whose Deployment event has not shown `started`
    // yet holds a slot too, and its build is not initialized twice.
    let mut f = Fixture::new(settings(3, 9, 99));
    f.jobs.insert(job("j", "t1", JobKind::Initialize, JobPhase::Pending));
    assert_eq!(names(&f.decide(&idx, &[], &[]).tasks), ["initialize t2"]);
    // So does an initialize action whose Job has not shown yet.
    let mut f = Fixture::new(settings(3, 9, 99));
    let t2 = Target::of(idx.get("t2").expect("t2"));
    f.in_flight.begin(&Task::Initialize(t2), f.now, Duration::from_secs(30));
    assert_eq!(names(&f.decide(&idx, &[], &[]).tasks), ["initialize t1"]);
}

#[test]
fn stops_the_oldest_scaled_started_builds_above_the_limit() {
    let mut specs = Vec::new();
    for (i, scaled) in [5, 1, 3].into_iter().enumerate() {
        let mut s =
            spec(&format!("s{scaled}"), BuildStatus::Started, 0, u8::try_from(i).expect("small"));
        s.last_scaled = Some(scaled);
        specs.push(s);
    }
    specs.push(spec("starting", BuildStatus::Starting, 0, 9));
    let idx = index_of(&specs);
    let f = Fixture::new(settings(1, 1, 99));
    assert_eq!(names(&f.decide(&idx, &[], &[]).tasks), ["stop s1", "stop s3"]);
    assert!(Fixture::new(settings(1, 3, 99)).decide(&idx, &[], &[]).tasks.is_empty());
    // One slot left: the oldest goes first.
    let mut f = Fixture::new(settings(1, 1, 99));
    f.max_concurrent_actions = 1;
    assert_eq!(names(&f.decide(&idx, &[], &[]).tasks), ["stop s1"]);
}

#[test]
fn undeploys_the_oldest_stopped_never_the_newest_of_a_branch_and_cleans_up() {
    let mut pr = spec("pr", BuildStatus::Stopped, 9, 3);
    pr.pr = Some(4);
    let idx = index_of(&[
        spec("old", BuildStatus::Failed, 1, 1),
        spec("newest", BuildStatus::Stopped, 5, 2),
        pr,
        spec("started", BuildStatus::Started, 0, 4),
        spec("gone", BuildStatus::Undeploying, 0, 5),
    ]);
    // 4 deployed (the undeploying one does not count), limit 1: 3 too many,
    // but only "old" and "pr" are eligible.
    let f = Fixture::new(settings(1, 9, 1));
    assert_eq!(
        names(&f.decide(&idx, &[], &[]).tasks),
        ["undeploy old", "undeploy pr", "cleanup gone"]
    );
    let f = Fixture::new(settings(1, 9, 3));
    assert_eq!(names(&f.decide(&idx, &[], &[]).tasks), ["undeploy old", "cleanup gone"]);
    let f = Fixture::new(settings(1, 0, 3));
    assert_eq!(
        names(&f.decide(&idx, &[], &[]).tasks),
        ["stop started", "undeploy old", "cleanup gone"]
    );
    // A running cleanup Job: no second cleanup.
    let mut f = Fixture::new(settings(1, 9, 99));
    f.jobs.insert(job("c", "gone", JobKind::Cleanup, JobPhase::Running));
    assert!(f.decide(&idx, &["gone"], &[]).tasks.is_empty());
}

#[test]
fn job_handling_follows_spec_for_the_touched_builds() {
    let mut started = spec("started", BuildStatus::Initializing, 0, 1);
    started.init = InitStatus::Started;
    let idx = index_of(&[
        spec("todo", BuildStatus::Initializing, 0, 0),
        started,
        spec("gone", BuildStatus::Undeploying, 0, 2),
        spec("done", BuildStatus::Stopped, 0, 3),
    ]);
    let mut f = Fixture::new(settings(0, 9, 99));
    f.jobs.insert(job("j1", "todo", JobKind::Initialize, JobPhase::Running));
    f.jobs.insert(job("j2", "started", JobKind::Initialize, JobPhase::Failed));
    f.jobs.insert(job("j3", "gone", JobKind::Cleanup, JobPhase::Succeeded));
    f.jobs.insert(job("j4", "orphan", JobKind::Initialize, JobPhase::Succeeded));
    // A replayed success of a finished initialization: nothing.
    f.jobs.insert(job("j5", "done", JobKind::Initialize, JobPhase::Succeeded));
    let step = f.decide(&idx, &["done", "gone", "orphan", "started", "todo"], &[]);
    assert_eq!(
        names(&step.tasks),
        [
            "cleanup-succeeded gone",
            "delete-orphan orphan",
            "init-failed started",
            "init-started todo"
        ]
    );
    // Untouched builds get no job handling.
    assert!(f.decide(&idx, &[], &[]).tasks.is_empty());

    // Init status `started` and no init Job at all: back to todo (and the
    // undeploying build, with no cleanup Job yet, gets its cleanup).
    let f = Fixture::new(settings(0, 9, 99));
    assert_eq!(
        names(&f.decide(&idx, &["started"], &[]).tasks),
        ["requeue started", "cleanup gone"]
    );

    // A failed cleanup is reported once and not run again; when its Job
    // goes, the report is cleared and the cleanup runs again.
    let mut f = Fixture::new(settings(0, 9, 99));
    f.jobs.insert(job("c", "gone", JobKind::Cleanup, JobPhase::Failed));
    let step = f.decide(&idx, &["gone"], &[]);
    assert_eq!(step.cleanup_failed, [Target::of(idx.get("gone").expect("gone"))]);
    assert!(step.tasks.is_empty());
    f.failures.insert("gone".into());
    assert!(f.decide(&idx, &["gone"], &[]).cleanup_failed.is_empty());
    f.jobs.remove("c");
    let step = f.decide(&idx, &["gone"], &[]);
    assert_eq!(step.cleanup_cleared, ["gone"]);
    assert_eq!(names(&step.tasks), ["cleanup gone"]);
}

#[test]
fn requests_are_answered_in_order_and_wait_while_their_build_is_busy() {
    let idx = index_of(&[
        spec("stopped", BuildStatus::Stopped, 0, 0),
        spec("started", BuildStatus::Started, 0, 1),
        spec("gone", BuildStatus::Undeploying, 0, 2),
    ]);
    let commit = |repo: &str, sha: u8| {
        CommitInfo::new(repo, "16.0", None, &format!("{sha:02x}").repeat(20)).expect("commit")
    };
    let known = idx.get("stopped").expect("known").commit_info.clone();
    let mut f = Fixture::new(settings(0, 9, 99));
    let requests = [
        Request::Start("stopped".into()),
        Request::Stop("stopped".into()),
        Request::Start("started".into()),
        Request::Reset("nope".into()),
        Request::Deploy(commit("oca/x", 9)),
        Request::Deploy(commit("other/x", 9)),
        Request::Deploy(known),
        Request::Deploy(idx.get("gone").expect("gone").commit_info.clone()),
        Request::UndeployMatching(SearchFilters::default()),
    ];
    let step = f.decide(&idx, &[], &requests);
    let new_name = commit("oca/x", 9).build_name();
    assert_eq!(
        step.verdicts,
        [
            Verdict::Run(Task::Start(Target::of(idx.get("stopped").expect("stopped")))),
            // The build was `stopped` when the step looked: not allowed.
            Verdict::Answer(CommandOutcome::Ignored(IgnoredReason::Status(BuildStatus::Stopped))),
            Verdict::Answer(CommandOutcome::Ignored(IgnoredReason::Status(BuildStatus::Started))),
            Verdict::Answer(CommandOutcome::NotFound),
            Verdict::Run(Task::Deploy(Target { name: new_name, commit: commit("oca/x", 9) })),
            Verdict::Answer(CommandOutcome::Unsupported),
            Verdict::Answer(CommandOutcome::Ignored(IgnoredReason::AlreadyDeployed {
                build_name: "stopped".into()
            })),
            Verdict::AcceptAndWait,
            // "stopped" got its start above: its undeploy waits.
            Verdict::Expand {
                count: 2,
                run: vec![Task::Undeploy("started".into())],
                later: vec!["stopped".into()],
            },
        ]
    );
    // A busy build's request waits; the next ones are still looked at.
    f.in_flight.begin(&Task::Undeploy("stopped".into()), f.now, Duration::from_secs(30));
    let step =
        f.decide(&idx, &[], &[Request::Start("stopped".into()), Request::Stop("started".into())]);
    assert_eq!(step.verdicts[0], Verdict::Wait);
    assert!(matches!(step.verdicts[1], Verdict::Run(Task::Stop(_))));
    // No capacity: the rest of the queue is not looked at.
    f.max_concurrent_actions = 1;
    let step =
        f.decide(&idx, &[], &[Request::Start("stopped".into()), Request::Stop("started".into())]);
    assert!(step.verdicts.is_empty());
}

/// A PR closed while one of its builds waits for initialization: the
/// undeploy takes the build in this step, before initialization could.
#[test]
fn an_undeploy_of_matching_builds_comes_before_initialization() {
    let mut pr = spec("todo", BuildStatus::Initializing, 0, 1);
    pr.pr = Some(5);
    let idx = index_of(&[pr, spec("other", BuildStatus::Initializing, 1, 2)]);
    let f = Fixture::new(settings(5, 9, 99));
    let filters = SearchFilters { pr: Some(5), ..SearchFilters::default() };
    let step = f.decide(&idx, &[], &[Request::UndeployMatching(filters)]);
    assert_eq!(
        step.verdicts,
        [Verdict::Expand { count: 1, run: vec![Task::Undeploy("todo".into())], later: vec![] }]
    );
    assert_eq!(names(&step.tasks), ["initialize other"]);
}

/// A failing deletion of an orphan's resources backs off more each time:
/// its backoff is kept while its Jobs are there.
#[test]
fn a_failing_orphan_keeps_its_backoff_while_its_jobs_remain() {
    let idx = BuildIndex::new();
    let mut jobs = JobTable::new();
    jobs.insert(job("j", "orphan", JobKind::Initialize, JobPhase::Failed));
    let mut fl = InFlight::new();
    let touched: BTreeSet<String> = ["orphan".to_owned()].into();
    let (mut now, timeout) = (Instant::now(), Duration::from_secs(30));
    let mut failures = Vec::new();
    for _ in 0..3 {
        fl.begin(&Task::DeleteOrphan("orphan".into()), now, timeout);
        let ended = fl
            .end("orphan", false, now, timeout, |n| Duration::from_secs(1 << n))
            .expect("running");
        failures.push(ended.failures);
        now += Duration::from_secs(60);
        fl.settle(&idx, &jobs, &touched, now, false);
    }
    assert_eq!(failures, [1, 2, 3]);
    // Once the jobs are gone, so is the backoff.
    jobs.remove("j");
    fl.settle(&idx, &jobs, &touched, now, false);
    fl.begin(&Task::DeleteOrphan("orphan".into()), now, timeout);
    let ended = fl.end("orphan", false, now, timeout, |_| Duration::ZERO).expect("running");
    assert_eq!(ended.failures, 1);
}

#[test]
fn in_flight_keeps_a_build_busy_until_the_effect_shows_or_the_deadline_passes() {
    let idx = index_of(&[spec("s", BuildStatus::Started, 0, 0)]);
    let jobs = JobTable::new();
    let mut fl = InFlight::new();
    let now = Instant::now();
    let timeout = Duration::from_secs(30);
    let target = Target::of(idx.get("s").expect("s"));
    fl.begin(&Task::Stop(target.clone()), now, timeout);
    assert!(fl.busy("s", now));
    let ended = fl.end("s", true, now, timeout, |_| Duration::ZERO).expect("running");
    assert_eq!(ended.kind, TaskKind::Stop);
    assert_eq!(ended.wake_at, [now + timeout]);
    let touched: BTreeSet<String> = ["s".to_owned()].into();
    // Still started with one replica: the stop has not shown.
    fl.settle(&idx, &jobs, &touched, now, false);
    assert!(fl.busy("s", now));
    fl.settle(&idx, &jobs, &touched, now + timeout, false);
    assert!(!fl.busy("s", now + timeout));

    // A failure: busy for the backoff, then free.
    fl.begin(&Task::Stop(target), now, timeout);
    let ended =
        fl.end("s", false, now, timeout, |n| Duration::from_secs(u64::from(n))).expect("ran");
    assert_eq!((ended.failures, ended.wake_at.clone()), (1, vec![now + Duration::from_secs(1)]));
    assert!(fl.busy("s", now) && !fl.busy("s", now + Duration::from_secs(1)));
    assert!(fl.end("s", true, now, timeout, |_| Duration::ZERO).is_none(), "not running");
}

// ---- Properties of the step ----

/// Build names are `b0`..`b39`; jobs may also name `b40`..`b44` (orphans).
const NAMES: usize = 45;

#[derive(Debug, Clone)]
struct World0 {
    builds: Vec<Build>,
    jobs: Vec<(usize, usize, JobKind, JobPhase, bool)>,
    /// (build, initialize?, state: 0 running, 1 awaiting, 2 in backoff)
    in_flight: Vec<(usize, bool, u8)>,
    limits: (usize, usize, usize),
    capacity: usize,
    touched: Vec<usize>,
    requests: Vec<(u8, usize)>,
    /// `max_pinned`, and the idle session in seconds (`None`: off).
    pins_idle: (usize, Option<i64>, bool),
}

fn arb_world() -> impl Strategy<Value = World0> {
    let kind = prop::sample::select(vec![JobKind::Initialize, JobKind::Cleanup]);
    let phase = prop::sample::select(vec![
        JobPhase::Pending,
        JobPhase::Running,
        JobPhase::Succeeded,
        JobPhase::Failed,
    ]);
    (
        prop::collection::vec(arb_build(40), 0..60),
        prop::collection::vec((0..8usize, 0..NAMES, kind, phase, prop::bool::weighted(0.1)), 0..30),
        prop::collection::vec((0..NAMES, any::<bool>(), 0..3u8), 0..10),
        (0..5usize, 0..8usize, 0..30usize),
        1..40usize,
        prop::collection::vec(0..NAMES, 0..NAMES),
        prop::collection::vec((0..8u8, 0..NAMES), 0..10),
        (0..4usize, prop::option::of(1..30i64), any::<bool>()),
    )
        .prop_map(
            |(builds, jobs, in_flight, limits, capacity, touched, requests, pins_idle)| World0 {
                builds,
                jobs,
                in_flight,
                limits,
                capacity,
                touched,
                requests,
                pins_idle,
            },
        )
}

fn name(i: usize) -> String {
    format!("b{i}")
}

fn some_commit() -> CommitInfo {
    CommitInfo::new("oca/a", "16.0", None, &"ab".repeat(20)).expect("commit")
}

struct Built {
    index: BuildIndex,
    model: Model,
    fixture: Fixture,
    touched: BTreeSet<String>,
    requests: Vec<Request>,
}

fn build(w: &World0) -> Built {
    let mut index = BuildIndex::new();
    let mut model = Model::default();
    for b in &w.builds {
        model.upsert(b.clone());
        index.upsert(b.clone());
    }
    let (i, s, d) = w.limits;
    let mut fixture = Fixture::new(settings(i, s, d));
    fixture.settings.max_pinned = w.pins_idle.0;
    fixture.settings.wake_service = w
        .pins_idle
        .2
        .then(|| crate::settings::WakeService { name: "runboat-wake".to_owned(), port: 80 });
    fixture.settings.idle_stop_after =
        w.pins_idle.1.map(|secs| Duration::from_secs(secs.unsigned_abs()));
    fixture.max_concurrent_actions = w.capacity;
    for (n, (j, b, kind, phase, deleting)) in w.jobs.iter().enumerate() {
        let mut facts = job(&format!("j{j}-{n}"), &name(*b), *kind, *phase);
        facts.deleting = *deleting;
        fixture.jobs.insert(facts);
    }
    let timeout = Duration::from_secs(30);
    let before = fixture.now - Duration::from_secs(1);
    for (b, initialize, state) in &w.in_flight {
        let n = name(*b);
        if fixture.in_flight.running(&n).is_some() {
            continue;
        }
        let task = match (*initialize, b % 3) {
            (true, _) => Task::Initialize(Target { name: n.clone(), commit: some_commit() }),
            (false, 0) => Task::Pin(n.clone()),
            _ => Task::Undeploy(n.clone()),
        };
        fixture.in_flight.begin(&task, before, timeout);
        match state {
            1 => {
                fixture.in_flight.end(&n, true, before, timeout, |_| Duration::ZERO);
            }
            2 => {
                fixture.in_flight.end(&n, false, before, timeout, |_| Duration::from_secs(10));
            }
            _ => {}
        }
    }
    let touched = w.touched.iter().map(|b| name(*b)).collect();
    let requests = w
        .requests
        .iter()
        .map(|(r, b)| match r {
            0 => Request::Start(name(*b)),
            1 => Request::Stop(name(*b)),
            2 => Request::Reset(name(*b)),
            3 => Request::Undeploy(name(*b)),
            6 => Request::Pin(name(*b)),
            7 => Request::Unpin(name(*b)),
            4 => Request::Deploy(
                CommitInfo::new("oca/a", "17.0", Some(*b as u64 + 1), &format!("{b:040x}"))
                    .expect("commit"),
            ),
            _ => Request::UndeployMatching(SearchFilters {
                repo: Some("oca/b".into()),
                ..Default::default()
            }),
        })
        .collect();
    Built { index, model, fixture, touched, requests }
}

/// The builds holding an initialization slot: init status `started`, a
/// pending or running init Job, or an initialize action not reflected yet.
fn init_slots(b: &Built) -> BTreeSet<String> {
    let mut slots: BTreeSet<String> = b
        .model
        .builds
        .iter()
        .filter(|x| x.init_status == InitStatus::Started)
        .map(|x| x.name.clone())
        .collect();
    slots.extend(b.fixture.jobs.active_init().map(str::to_owned));
    slots.extend(b.fixture.in_flight.initializing().map(str::to_owned));
    slots
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_step_respects_limits_busy_builds_and_capacity(w in arb_world()) {
        let b = build(&w);
        let world = b.fixture.world(&b.index);
        let step = decide(&world, &b.touched, &b.requests);
        let now = b.fixture.now;
        let all: Vec<&Task> = step.all_tasks().collect();

        // One task per build, none for a busy build, within capacity.
        let distinct: HashSet<&str> = all.iter().map(|t| t.build_name()).collect();
        prop_assert_eq!(distinct.len(), all.len(), "a build got two tasks: {:?}", all);
        for t in &all {
            prop_assert!(!b.fixture.in_flight.busy(t.build_name(), now), "{} for a busy build", t);
        }
        let capacity = w.capacity.saturating_sub(b.fixture.in_flight.running_count());
        prop_assert!(all.len() <= capacity);
        // Requests are only left unexamined when capacity ran out.
        if step.verdicts.len() < b.requests.len() {
            prop_assert!(step.tasks.is_empty());
            prop_assert_eq!(all.len(), capacity);
        }

        // Initialization: todo, not undeploying, no live init Job, and the
        // builds holding a slot never exceed max_initializing.
        let slots = init_slots(&b);
        let mut after = slots.clone();
        for t in &all {
            if let Task::Initialize(target) = t {
                let build = b.index.get(&target.name).expect("initializing a known build");
                prop_assert_eq!(build.init_status, InitStatus::Todo);
                prop_assert_ne!(build.status, BuildStatus::Undeploying);
                prop_assert!(!b.fixture.jobs.has_live(&target.name, JobKind::Initialize));
                after.insert(target.name.clone());
            }
        }
        if after.len() > slots.len() {
            prop_assert!(after.len() <= w.limits.0, "{} slots held, max {}", after.len(), w.limits.0);
        }

        // Limits: no more stops or undeploys than the excess (stops of
        // builds whose idle session ran out aside); only started builds
        // stopped; never a pinned build stopped or undeployed; never the
        // newest build of a branch undeployed.
        let stops: Vec<&Task> = step.tasks.iter().filter(|t| matches!(t, Task::Stop(_))).collect();
        let excess_started = b.model.count(BuildStatus::Started).saturating_sub(w.limits.1);
        let expired = |x: &Build| {
            w.pins_idle.1.is_some_and(|secs| {
                x.last_scaled_or_created() + jiff::SignedDuration::from_secs(secs)
                    <= b.fixture.wall_now
            })
        };
        let mut not_idle = 0;
        for t in &stops {
            let build = b.index.get(t.build_name()).expect("stopping a known build");
            prop_assert_eq!(build.status, BuildStatus::Started);
            prop_assert!(!build.pinned, "stopping pinned build {}", build.name);
            if !expired(build) {
                not_idle += 1;
            }
        }
        prop_assert!(not_idle <= excess_started, "{} stops beyond the excess {}", not_idle, excess_started);
        // The idle-stop count: stops of expired builds only, the rest
        // within the excess.
        let expired_stops = stops.iter().filter(|t| b.index.get(t.build_name()).is_some_and(expired)).count();
        prop_assert!(step.idle_stops <= expired_stops, "{} idle stops of {} expired", step.idle_stops, expired_stops);
        prop_assert!(stops.len() - step.idle_stops <= excess_started);
        // Idle stop is live: with room for every task, every started build
        // whose session ran out, neither pinned nor busy, is stopped.
        if w.capacity >= 1000 && step.verdicts.len() == b.requests.len() {
            for x in b.model.oldest_started() {
                if expired(x) && !b.fixture.in_flight.busy(&x.name, now) && !distinct.contains(x.name.as_str()) {
                    prop_assert!(false, "idle build {} not stopped", x.name);
                }
            }
        }
        // Pins: never beyond `max_pinned`, counting the pins in flight.
        let new_pins = all.iter().filter(|t| matches!(t, Task::Pin(_))).count();
        if new_pins > 0 {
            let held = b.model.count_pinned() + b.fixture.in_flight.count_of(TaskKind::Pin);
            prop_assert!(held + new_pins <= w.pins_idle.0, "{} + {} pins, max {}", held, new_pins, w.pins_idle.0);
        }
        for t in &all {
            if let Task::Pin(n) = t {
                let build = b.index.get(n).expect("pinning a known build");
                prop_assert!(!build.pinned);
                prop_assert_ne!(build.status, BuildStatus::Undeploying);
            }
        }
        // Routing: only with a wake Service, only touched builds, never an
        // undeploying one, always to where its status wants it.
        for t in &all {
            if let Task::Route(n, route) = t {
                prop_assert!(b.touched.contains(n.as_str()), "routing untouched {}", n);
                let build = b.index.get(n).expect("routing a known build");
                prop_assert_ne!(build.status, BuildStatus::Undeploying);
                if w.pins_idle.2 {
                    prop_assert_eq!(*route, crate::build::Route::wanted(build.status));
                } else {
                    // Without a wake Service, only back from it.
                    prop_assert_eq!(*route, crate::build::Route::Build);
                    prop_assert_eq!(build.route, Some(crate::build::Route::Wake));
                }
                prop_assert_ne!(build.route, Some(*route));
            }
        }
        let undeploys: Vec<&Task> =
            step.tasks.iter().filter(|t| matches!(t, Task::Undeploy(_))).collect();
        prop_assert!(undeploys.len() <= b.model.deployed().saturating_sub(w.limits.2));
        for t in &undeploys {
            let build = b.index.get(t.build_name()).expect("undeploying a known build");
            prop_assert!(!build.pinned, "undeploying pinned build {}", build.name);
            prop_assert!(matches!(
                build.status,
                BuildStatus::Stopped | BuildStatus::Stopping | BuildStatus::Failed
            ));
            prop_assert!(!b.model.is_newest(build), "undeploying the newest build of a branch");
        }
        // Cleanup only of undeploying builds.
        for t in &step.tasks {
            if let Task::Cleanup(target) = t {
                prop_assert_eq!(
                    b.index.get(&target.name).map(|x| x.status),
                    Some(BuildStatus::Undeploying)
                );
            }
        }
    }

    #[test]
    fn the_step_is_idempotent_once_its_tasks_are_in_flight(w in arb_world()) {
        let mut b = build(&w);
        let step = {
            let world = b.fixture.world(&b.index);
            decide(&world, &b.touched, &b.requests)
        };
        // Apply the step to the model: tasks in flight, answered requests
        // gone, waiting ones kept, failure reports recorded.
        let now = b.fixture.now;
        for t in step.all_tasks() {
            b.fixture.in_flight.begin(t, now, Duration::from_secs(30));
        }
        let mut remaining = Vec::new();
        for (verdict, request) in step.verdicts.iter().zip(&b.requests) {
            if matches!(verdict, Verdict::Wait | Verdict::AcceptAndWait) {
                remaining.push(request.clone());
            }
        }
        for verdict in &step.verdicts {
            if let Verdict::Expand { later, .. } = verdict {
                remaining.extend(later.iter().map(|n| Request::Undeploy(n.clone())));
            }
        }
        remaining.extend(b.requests[step.verdicts.len()..].iter().cloned());
        b.fixture.failures.extend(step.cleanup_failed.iter().map(|t| t.name.clone()));
        for n in &step.cleanup_cleared {
            b.fixture.failures.remove(n);
        }
        let world = b.fixture.world(&b.index);
        let again = decide(&world, &b.touched, &remaining);
        let again: Vec<&Task> = again.all_tasks().collect();
        prop_assert!(again.is_empty(), "new tasks: {:?} after {:?}", again, step);
    }

    #[test]
    fn a_follower_issues_only_the_tasks_of_requests(w in arb_world()) {
        let mut b = build(&w);
        b.fixture.leader = false;
        let world = b.fixture.world(&b.index);
        let step = decide(&world, &b.touched, &b.requests);
        prop_assert!(step.tasks.is_empty(), "scheduling tasks of a follower: {:?}", step.tasks);
        prop_assert!(step.revisit.is_empty());
        prop_assert!(step.cleanup_failed.is_empty() && step.cleanup_cleared.is_empty());
        // Requests are served exactly as the leader serves them.
        b.fixture.leader = true;
        let world = b.fixture.world(&b.index);
        let as_leader = decide(&world, &b.touched, &b.requests);
        prop_assert_eq!(step.verdicts, as_leader.verdicts);
    }
}

// ---- Supersede ----

fn supersede_settings(keep: usize) -> Settings {
    let mut s = settings(2, 6, 99);
    s.supersede_keep = keep;
    s
}

fn pr_spec(name: &str, status: BuildStatus, init: InitStatus, created: i64, sha: u8) -> Spec {
    let mut s = spec(name, status, created, sha);
    s.pr = Some(7);
    s.init = init;
    s
}

#[test]
fn supersede_waits_for_the_new_build_to_initialize() {
    use InitStatus::{Failed, Started, Succeeded, Todo};
    let old = pr_spec("old", BuildStatus::Started, Succeeded, 1, 1);
    let new_todo = pr_spec("new", BuildStatus::Initializing, Todo, 2, 2);
    let f = Fixture::new(supersede_settings(1));
    // The new commit is initializing: the old build stays.
    let idx = index_of(&[old.clone(), new_todo.clone()]);
    assert!(f.decide(&idx, &["old", "new"], &[]).tasks.iter().all(|t| t.build_name() != "old"));
    let mut running = new_todo.clone();
    running.init = Started;
    let idx = index_of(&[old.clone(), running]);
    assert!(f.decide(&idx, &["old", "new"], &[]).tasks.iter().all(|t| t.build_name() != "old"));
    // It failed: the old build, the last good one, stays.
    let failed = pr_spec("new", BuildStatus::Failed, Failed, 2, 2);
    let idx = index_of(&[old.clone(), failed]);
    assert!(f.decide(&idx, &["old", "new"], &[]).tasks.is_empty());
    // It succeeded: the old one is superseded by it, with what it had
    // earned; a build of another PR or of the branch is not.
    let ready = pr_spec("new", BuildStatus::Stopped, Succeeded, 2, 2);
    let mut other_pr = pr_spec("other", BuildStatus::Stopped, Succeeded, 0, 3);
    other_pr.pr = Some(8);
    let branch = spec("branch", BuildStatus::Stopped, 0, 4);
    let idx = index_of(&[old.clone(), ready.clone(), other_pr, branch]);
    let step = f.decide(&idx, &["new"], &[]);
    assert_eq!(
        step.tasks,
        [Task::Supersede(Superseded {
            target: Target::of(idx.get("old").expect("old")),
            by: "new".into(),
            init_status: Succeeded,
        })]
    );
    let keep = |keep| supersede::Rule { keep, cap: 0 };
    assert_eq!(
        supersede::superseded_by(&idx, idx.get("old").expect("old"), keep(1)).as_deref(),
        Some("new")
    );
    assert_eq!(supersede::superseded_by(&idx, idx.get("new").expect("new"), keep(1)), None);
    // Off by default: nothing superseded, nothing shown.
    assert!(Fixture::new(settings(2, 6, 99)).decide(&idx, &["new"], &[]).tasks.is_empty());
    assert_eq!(supersede::superseded_by(&idx, idx.get("old").expect("old"), keep(0)), None);
    // Keeping 2: both stay; a third good one supersedes the oldest only.
    assert!(Fixture::new(supersede_settings(2)).decide(&idx, &["new"], &[]).tasks.is_empty());
    let third = pr_spec("third", BuildStatus::Stopped, Succeeded, 3, 5);
    let idx = index_of(&[old, ready, third]);
    assert_eq!(
        names(&Fixture::new(supersede_settings(2)).decide(&idx, &["third"], &[]).tasks),
        ["supersede old"]
    );
}

#[test]
fn supersede_revisits_when_out_of_capacity_and_skips_busy_builds() {
    use InitStatus::Succeeded;
    let idx = index_of(&[
        pr_spec("a", BuildStatus::Stopped, Succeeded, 1, 1),
        pr_spec("b", BuildStatus::Stopped, Succeeded, 2, 2),
        pr_spec("c", BuildStatus::Stopped, Succeeded, 3, 3),
    ]);
    let mut f = Fixture::new(supersede_settings(1));
    f.max_concurrent_actions = 1;
    let step = f.decide(&idx, &["c"], &[]);
    assert_eq!(step.tasks.len(), 1);
    assert_eq!(step.revisit.len(), 1);
    let mut f = Fixture::new(supersede_settings(1));
    f.in_flight.begin(&Task::Undeploy("a".into()), f.now, Duration::from_secs(30));
    assert_eq!(names(&f.decide(&idx, &["c"], &[]).tasks), ["supersede b"]);
}

#[test]
fn the_cap_supersedes_the_oldest_but_never_the_newest_good_build() {
    use InitStatus::{Failed, Succeeded, Todo};
    let mut s = settings(2, 6, 99);
    s.supersede_max_builds = 2;
    let f = Fixture::new(s);
    // Newest first: two failing, one initializing, the good one, an old one.
    let idx = index_of(&[
        pr_spec("f2", BuildStatus::Failed, Failed, 5, 1),
        pr_spec("f1", BuildStatus::Failed, Failed, 4, 2),
        pr_spec("init", BuildStatus::Initializing, Todo, 3, 3),
        pr_spec("good", BuildStatus::Stopped, Succeeded, 2, 4),
        pr_spec("old", BuildStatus::Stopped, Succeeded, 1, 5),
    ]);
    let mut tasks = names(&f.decide(&idx, &["f2"], &[]).tasks);
    tasks.retain(|t| t.starts_with("supersede"));
    assert_eq!(tasks, ["supersede init", "supersede old"]);
    let rule = supersede::Rule { keep: 0, cap: 2 };
    let by = |n: &str| supersede::superseded_by(&idx, idx.get(n).expect("build"), rule);
    assert_eq!(by("old").as_deref(), Some("good"));
    // No good build newer than it: by the newest.
    assert_eq!(by("init").as_deref(), Some("f2"));
    assert_eq!((by("good"), by("f1"), by("f2")), (None, None, None));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Supersede never takes the newest `keep` successfully initialized
    /// builds of a pull request or branch, only builds older than them, and
    /// says by which build.
    #[test]
    fn supersede_never_undeploys_the_last_good_builds(
        w in arb_world(),
        keep in 0..3usize,
        cap in 0..4usize,
    ) {
        let mut b = build(&w);
        b.fixture.settings.supersede_keep = keep;
        b.fixture.settings.supersede_max_builds = cap;
        let world = b.fixture.world(&b.index);
        let step = decide(&world, &b.touched, &b.requests);
        for t in step.all_tasks() {
            let Task::Supersede(s) = t else { continue };
            let old = b.index.get(&s.target.name).expect("a known build");
            prop_assert_ne!(old.status, BuildStatus::Undeploying);
            let c = &old.commit_info;
            let in_group = |x: &&Build| x.commit_info.repo() == c.repo()
                && x.commit_info.target_branch() == c.target_branch()
                && x.commit_info.pr() == c.pr()
                && x.status != BuildStatus::Undeploying;
            let newer = |x: &&Build| (x.created, &x.name) > (old.created, &old.name);
            let good = |x: &&Build| x.init_status == InitStatus::Succeeded;
            let good_newer: Vec<&Build> =
                b.model.builds.iter().filter(in_group).filter(newer).filter(good).collect();
            let live_newer = b.model.builds.iter().filter(in_group).filter(newer).count();
            // Never the newest good build of its group.
            prop_assert!(!good(&old) || !good_newer.is_empty(), "{} was the newest good build", old.name);
            // Either K good newer ones, or the cap's excess.
            let by_keep = keep > 0 && good_newer.len() >= keep;
            let by_cap = cap > 0 && live_newer >= cap;
            prop_assert!(by_keep || by_cap, "{} superseded: {} good, {} deployed newer", old.name, good_newer.len(), live_newer);
            // By the newest good build, else the group's newest.
            let by = match good_newer.iter().max_by_key(|x| (x.created, &x.name)) {
                Some(by) => *by,
                None => b.model.builds.iter().filter(in_group).max_by_key(|x| (x.created, &x.name)).expect("some"),
            };
            prop_assert_eq!(&s.by, &by.name);
            prop_assert_eq!(s.init_status, old.init_status);
        }
        // Off, nothing is superseded.
        b.fixture.settings.supersede_keep = 0;
        b.fixture.settings.supersede_max_builds = 0;
        let world = b.fixture.world(&b.index);
        let step = decide(&world, &b.touched, &b.requests);
        prop_assert!(!step.all_tasks().any(|t| matches!(t, Task::Supersede(_))));
    }
}

#[test]
fn a_pinned_build_is_never_superseded() {
    use InitStatus::Succeeded;
    let mut pinned = pr_spec("a", BuildStatus::Stopped, Succeeded, 1, 1);
    pinned.pinned = true;
    let idx = index_of(&[
        pinned,
        pr_spec("b", BuildStatus::Stopped, Succeeded, 2, 2),
        pr_spec("c", BuildStatus::Stopped, Succeeded, 3, 3),
    ]);
    // Keeping 1 and a cap of 1: both rules would take "a" and "b".
    let mut s = supersede_settings(1);
    s.supersede_max_builds = 1;
    let step = Fixture::new(s).decide(&idx, &["c"], &[]);
    assert_eq!(names(&step.tasks), ["supersede b"]);
    let rule = supersede::Rule { keep: 1, cap: 1 };
    assert_eq!(supersede::superseded_by(&idx, idx.get("a").expect("a"), rule), None);
    assert_eq!(
        supersede::superseded_by(&idx, idx.get("b").expect("b"), rule).as_deref(),
        Some("c")
    );
}
