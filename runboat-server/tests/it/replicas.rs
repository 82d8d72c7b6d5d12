//! Several real `runboat-server` processes on one kubesim, with leader
//! election (`--leader-election`, short lease settings so handovers take
//! seconds): exactly one leads, each says who does, a leader that dies or
//! stops is replaced, and one whose lease writes fail (a partition that
//! leaves its watches working) steps down, never overlapping another.
//!
//! The burst test (`RUNBOAT_SLOW_TESTS=1`, about a minute) sends 200 pull
//! request webhooks spread over every live replica, kills the leader with
//! SIGKILL in the middle, adds a third replica, stops the next leader with
//! SIGTERM, and checks from kubesim's own records (its job history, its
//! objects), not from runboat's view: every build initialized exactly once
//! (no duplicate init Job), never more init Jobs running at once than
//! `max_initializing`, nothing left after the undeploy. It prints the time
//! from each leader's death to the lease handover and to the new leader's
//! first write (its first init Job).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kubesim::{ControllerConfig, KubeSim};
use serde_json::{Value, json};

use crate::e2e::{BUILD_RESOURCES, Env, NS, REPO, STEP, Server};

/// Lease settings of the test: seconds, not the production 15/10/2.
const LEASE: [&str; 6] =
    ["--lease-duration", "3", "--lease-renew-deadline", "2", "--lease-retry-period", "0.5"];
const MAX_INITIALIZING: usize = 4;

async fn env(job: Duration) -> Env {
    let config = kubesim::Config {
        namespaces: vec!["default".into(), NS.into()],
        controllers: ControllerConfig {
            pod_ready_delay: Duration::from_millis(50),
            job_duration: job,
            ..ControllerConfig::default()
        },
        ..kubesim::Config::default()
    };
    let sim = KubeSim::start_with(config).await.expect("kubesim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig("default")).expect("write kubeconfig");
    Env { sim, dir, kubeconfig }
}

async fn replica(env: &Env, settings: &Path, identity: &str) -> Server {
    let mut args = vec!["--leader-election", "--lease-identity", identity];
    args.extend_from_slice(&LEASE);
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, settings, &args).await;
    server.wait_ready().await;
    server
}

async fn text(server: &Server, path: &str) -> String {
    let req = Request::get(format!("{}{path}", server.base)).body(Full::default()).expect("req");
    let resp = server.http.request(req).await.expect("HTTP request");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The `leadership` of a replica's `GET /api/v1/status`.
async fn leadership(server: &Server) -> Value {
    let (status, body) = server.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["leadership"].clone()
}

/// Waits until exactly one of `servers` says it leads and every one names
/// it as the holder; returns its index.
async fn agreed_leader(servers: &[&Server]) -> usize {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let mut views = Vec::new();
        for s in servers {
            views.push(leadership(s).await);
        }
        let leaders: Vec<usize> =
            (0..views.len()).filter(|&i| views[i]["leader"] == true).collect();
        if let [leader] = leaders[..] {
            let holder = &views[leader]["identity"];
            if views.iter().all(|v| &v["holder"] == holder) {
                return leader;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no agreed leader: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn holder(h: &kubesim::Handle) -> Option<String> {
    let lease = h.get("leases", NS, "runboat-leader").ok().flatten()?;
    lease.pointer("/spec/holderIdentity").and_then(Value::as_str).map(str::to_owned)
}

/// Waits (on kubesim's own changes) until the lease is held by someone
/// other than `old`; returns when that was seen.
async fn handed_over(h: &kubesim::Handle, old: &str) -> Instant {
    let changed = |h: &kubesim::Handle| holder(h).is_some_and(|x| x != old);
    assert!(h.wait_until(STEP, changed).await, "the lease stayed with {old}: {:?}", holder(h));
    Instant::now()
}

fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Two replicas: one leads and both say so (status and metrics); SIGTERM
/// on the leader releases the lease, the other takes over within about a
/// retry period, and the stopped one exits successfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_on_one_leader_and_sigterm_hands_over_at_once() {
    let env = env(Duration::from_millis(200)).await;
    let settings = env.settings("");
    let mut servers = vec![
        replica(&env, &settings, "replica-a").await,
        replica(&env, &settings, "replica-b").await,
    ];
    let li = agreed_leader(&[&servers[0], &servers[1]]).await;
    let mut leader = servers.remove(li);
    let follower = &servers[0];
    let leader = &mut leader;
    let lv = leadership(leader).await;
    let fv = leadership(follower).await;
    assert_eq!(lv["leader"], true);
    assert_eq!(fv["leader"], false);
    assert_eq!(fv["holder"], lv["identity"]);
    assert_ne!(fv["identity"], lv["identity"]);
    let held = holder(&env.sim.handle()).expect("a holder");
    assert_eq!(lv["identity"], json!(held));
    let m = text(leader, "/metrics").await;
    assert_eq!(metric(&m, "runboat_leader"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "runboat_leader_transitions_total"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "runboat_lease_renew_failures_total"), Some(0.0), "{m}");
    let m = text(follower, "/metrics").await;
    assert_eq!(metric(&m, "runboat_leader"), Some(0.0), "{m}");

    // The follower answers webhooks: the build is deployed and the leader
    // initializes it.
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let push = json!({"ref": "refs/heads/16.0", "after": sha, "repository": {"full_name": REPO}});
    assert_eq!(follower.webhook("push", &push).await, StatusCode::ACCEPTED);
    let h = env.sim.handle();
    let initialized = |h: &kubesim::Handle| !h.job_history().is_empty();
    assert!(h.wait_until(STEP, initialized).await, "no init job:\n{}", leader.log());

    let follower_view = leadership(follower).await;
    let stopped_at = Instant::now();
    leader.terminate();
    let taken_at = handed_over(&h, &held).await;
    eprintln!(
        "SIGTERM handover: the lease held by another replica {:?} after SIGTERM",
        taken_at - stopped_at
    );
    assert_eq!(holder(&h), follower_view["identity"].as_str().map(str::to_owned));
    let exit = tokio::time::timeout(Duration::from_secs(10), leader.child.wait()).await;
    let exit = exit.expect("exits after SIGTERM").expect("wait");
    assert!(exit.success(), "exit {exit:?}:\n{}", leader.log());
    let deadline = tokio::time::Instant::now() + STEP;
    while !leader.log().contains("lease released") {
        assert!(tokio::time::Instant::now() < deadline, "not released:\n{}", leader.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = agreed_leader(&[follower]).await;
    assert_eq!(view, 0);
}

/// `[created, ended)` of each init Job: the most running at once.
fn peak_running(records: &[&kubesim::JobRecord], end: Instant) -> usize {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for r in records {
        edges.push((r.created, 1));
        edges.push((r.ended.unwrap_or(end), -1));
    }
    // An end before a start at the same instant.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

fn labelled_objects(h: &kubesim::Handle) -> Vec<String> {
    let mut left = Vec::new();
    for resource in BUILD_RESOURCES {
        for o in h.list(resource, Some(NS)).expect("list") {
            if o.pointer("/metadata/labels/runboat~1build").is_some() {
                let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
                left.push(format!("{resource}/{name}"));
            }
        }
    }
    left
}

fn pull_request(n: u64) -> Value {
    json!({
        "action": "opened",
        "number": n,
        "pull_request": {"number": n, "base": {"ref": "16.0"}, "head": {"sha": format!("{n:040x}")}},
        "repository": {"full_name": REPO},
    })
}

/// Sends the webhooks of pull requests `prs`, round robin over `servers`,
/// ten at a time.
async fn burst(servers: &[&Server], prs: std::ops::Range<u64>) {
    let prs: Vec<u64> = prs.collect();
    for chunk in prs.chunks(10) {
        let sends = chunk.iter().map(|&n| {
            let server = servers[usize::try_from(n).expect("small") % servers.len()];
            async move { (n, server.webhook("pull_request", &pull_request(n)).await) }
        });
        for (n, status) in futures::future::join_all(sends).await {
            assert_eq!(status, StatusCode::ACCEPTED, "pull request {n}");
        }
    }
}

fn first_init_job_after(h: &kubesim::Handle, at: Instant) -> Option<Instant> {
    h.job_history()
        .iter()
        .filter(|r| r.labels.get("runboat/job-kind").map(String::as_str) == Some("initialize"))
        .map(|r| r.created)
        .filter(|c| *c >= at)
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_three_replicas_survives_sigkill_and_sigterm_of_leaders() {
    if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!("NOTICE: replica burst test skipped: set RUNBOAT_SLOW_TESTS=1 to run it");
        return;
    }
    const BUILDS: u64 = 200;
    let env = env(Duration::from_millis(250)).await;
    let settings = env.settings(&format!(
        "max_initializing = {MAX_INITIALIZING}\nmax_started = 6\nmax_deployed = 1000"
    ));
    let h = env.sim.handle();
    let started = Instant::now();
    let mut servers: Vec<Option<Server>> = vec![
        Some(replica(&env, &settings, "replica-a").await),
        Some(replica(&env, &settings, "replica-b").await),
    ];
    fn alive(servers: &[Option<Server>]) -> Vec<&Server> {
        servers.iter().flatten().collect()
    }
    fn leader_index(servers: &[Option<Server>], i: usize) -> usize {
        // The i-th live one is servers[?].
        servers.iter().enumerate().filter(|(_, s)| s.is_some()).nth(i).expect("live").0
    }

    // 1. Two replicas; a third of the burst.
    burst(&alive(&servers), 1..70).await;
    let first = leader_index(&servers, agreed_leader(&alive(&servers)).await);
    let first_id = holder(&h).expect("held");

    // 2. SIGKILL the leader mid-burst; a third replica joins.
    let mut killed = servers[first].take().expect("live");
    let killed_at = Instant::now();
    killed.child.start_kill().expect("SIGKILL");
    let _ = killed.child.wait().await;
    let handover = tokio::spawn({
        let h = h.clone();
        let old = first_id.clone();
        async move { handed_over(&h, &old).await }
    });
    burst(&alive(&servers), 70..100).await;
    servers.push(Some(replica(&env, &settings, "replica-c").await));
    burst(&alive(&servers), 100..140).await;
    let kill_takeover = handover.await.expect("handover task");
    let second = leader_index(&servers, agreed_leader(&alive(&servers)).await);
    let second_id = holder(&h).expect("held");
    assert_ne!(second_id, first_id);

    // 3. SIGTERM the next leader mid-burst.
    let mut stopped = servers[second].take().expect("live");
    let stopped_at = Instant::now();
    stopped.terminate();
    let handover = tokio::spawn({
        let h = h.clone();
        let old = second_id.clone();
        async move { handed_over(&h, &old).await }
    });
    burst(&alive(&servers), 140..BUILDS + 1).await;
    let term_takeover = handover.await.expect("handover task");
    let exit = tokio::time::timeout(Duration::from_secs(10), stopped.child.wait()).await;
    let exit = exit.expect("exits after SIGTERM").expect("wait");
    assert!(exit.success(), "exit {exit:?}:\n{}", stopped.log());
    let third = leader_index(&servers, agreed_leader(&alive(&servers)).await);

    // 4. Every build converges (initialized once, stopped), as every live
    // replica shows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for server in alive(&servers) {
        loop {
            let (_, s) = server.get("/api/v1/status").await;
            if s["stopped"] == json!(BUILDS) && s["deployed"] == json!(BUILDS) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not converged: {s}\nleader log:\n{}",
                servers[third].as_ref().expect("live").log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let converged = started.elapsed();

    // From kubesim's records: one init Job per build, never more running
    // than max_initializing.
    let history = h.job_history();
    let init: Vec<&kubesim::JobRecord> = history
        .iter()
        .filter(|r| r.labels.get("runboat/job-kind").map(String::as_str) == Some("initialize"))
        .collect();
    let mut per_build: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &init {
        *per_build.entry(r.labels.get("runboat/build").map_or("?", String::as_str)).or_default() +=
            1;
    }
    let duplicates: Vec<(&&str, &usize)> = per_build.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicate init Jobs: {duplicates:?}");
    assert_eq!(per_build.len(), usize::try_from(BUILDS).expect("small"));
    let peak = peak_running(&init, Instant::now());
    assert!(peak <= MAX_INITIALIZING, "{peak} init Jobs ran at once");

    let kill_write = first_init_job_after(&h, kill_takeover).expect("the new leader initialized");
    let term_write = first_init_job_after(&h, term_takeover).expect("the new leader initialized");

    // 5. Undeploy everything (through the last replica); nothing is left.
    let survivor = alive(&servers)[0];
    let path = format!("/api/v1/builds?repo={REPO}");
    let (status, answer) = survivor.send(Method::DELETE, &path, true).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["count"], json!(BUILDS), "{answer}");
    let gone = |h: &kubesim::Handle| labelled_objects(h).is_empty();
    assert!(
        h.wait_until(Duration::from_secs(120), gone).await,
        "left behind: {:?}",
        labelled_objects(&h)
    );
    for server in alive(&servers) {
        let (_, s) = server.get("/api/v1/status").await;
        assert_eq!(s["deployed"], json!(0), "{s}");
    }

    eprintln!(
        "replica burst: {BUILDS} builds converged in {converged:?}; peak init Jobs at once \
         {peak} (max_initializing {MAX_INITIALIZING}); SIGKILL of the leader: lease taken \
         after {:?}, first write of the new leader after {:?}; SIGTERM: lease taken after \
         {:?}, first write after {:?}",
        kill_takeover - killed_at,
        kill_write - killed_at,
        term_takeover - stopped_at,
        term_write - stopped_at,
    );
}

/// A partitioned leader: its watches and reads work, but every lease write
/// fails (kubesim answers 500 to `update` on leases, for every replica).
/// It steps down within its renew deadline; nobody leads while no lease
/// write can succeed (two leaders are never seen at once); once writes
/// work again, one leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_and_never_overlaps_another() {
    let env = env(Duration::from_millis(200)).await;
    let settings = env.settings("");
    let servers =
        [replica(&env, &settings, "replica-a").await, replica(&env, &settings, "replica-b").await];
    let both = [&servers[0], &servers[1]];
    let leader = agreed_leader(&both).await;
    let h = env.sim.handle();
    h.fail_next(kubesim::FailRule::new(u32::MAX, 500).verb("update").resource("leases"));
    let cut_at = Instant::now();
    let mut stepped_down = None;
    // Past the lease duration (3 s) with a margin: the other replica would
    // have taken an unrenewed lease by then, were its writes not failing.
    while cut_at.elapsed() < Duration::from_secs(5) {
        let views = [leadership(both[0]).await, leadership(both[1]).await];
        let leading: Vec<bool> = views.iter().map(|v| v["leader"] == true).collect();
        assert!(!(leading[0] && leading[1]), "two leaders: {views:?}");
        assert!(!leading[1 - leader], "the follower led without writing the lease: {views:?}");
        if !leading[leader] && stepped_down.is_none() {
            stepped_down = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stepped_down = stepped_down.expect("the partitioned leader stepped down");
    let m = text(both[leader], "/metrics").await;
    assert!(metric(&m, "runboat_lease_renew_failures_total").is_some_and(|n| n > 0.0), "{m}");
    assert_eq!(metric(&m, "runboat_leader_transitions_total"), Some(2.0), "{m}");
    assert_eq!(metric(&m, "runboat_leader"), Some(0.0), "{m}");
    eprintln!(
        "partitioned leader: stepped down {stepped_down:?} after its lease writes began to fail \
         (renew deadline 2 s)"
    );

    h.clear_faults();
    agreed_leader(&both).await;
}
