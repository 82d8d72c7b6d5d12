//! The web UI in headless Chromium: `tests/browser/board.mjs` (Node and
//! `playwright-core`, driving Debian's `chromium`) loads the board of a repo,
//! delivers a signed push webhook, sees the build change status live over
//! server-sent events, clicks "start", sees it started and saves a
//! screenshot under `target/browser/`.
//!
//! The server is the production wiring (`run_with_cluster`) on a real
//! 127.0.0.1 socket over the real controller and the simulated cluster, on
//! the real clock with jobs of a few seconds.
//!
//! Slow: runs only with `RUNBOAT_SLOW_TESTS=1`. Needs `chromium` (or
//! `RUNBOAT_CHROMIUM`), `node` and `npm ci` in `tests/browser`; without them
//! it prints a NOTICE and passes, except under CI (`CI` set), where missing
//! tools are a failure (`.ci/run` installs them).
//!
//! The second test, `board_stays_fast_at_oca_scale`, drives
//! `tests/browser/scale.mjs` over 2,000 builds in 150 repositories: it
//! checks that the board touches only the changed builds' cards during a
//! burst of 100 changes, paginates, and that the repositories and build
//! pages work at that size; it prints the long tasks and frame gaps the
//! browser measured (a benchmark figure, not an assertion) and saves
//! screenshots under the workspace's `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use runboat_core::sim::{JobScript, SimCluster, SimConfig};
use runboat_core::{Cluster, CommitInfo, InitStatus};
use tokio::net::TcpListener;

/// Bounds a hang of the whole browser run (the script has its own, shorter
/// deadlines for each step).
const BROWSER_DEADLINE: Duration = Duration::from_secs(180);

pub(crate) fn notice(reason: &str) {
    let msg = format!("NOTICE: browser test skipped: {reason}");
    assert!(std::env::var_os("CI").is_none(), "{msg} (CI is set: .ci/run must install it)");
    eprintln!("{msg}");
}

pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

pub(crate) fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RUNBOAT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser"].iter().find_map(|p| on_path(p))
}

fn target_dir(manifest: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => manifest.join("..").join("target"),
    }
}

/// Waits for `child` with a deadline; on timeout kills it (by its id) and
/// fails.
pub(crate) async fn wait_output(child: std::process::Child) -> std::process::Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(BROWSER_DEADLINE, waiting).await {
        Ok(joined) => joined.expect("join").expect("wait for node"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the browser test did not finish within {BROWSER_DEADLINE:?}");
        }
    }
}

/// What the browser tests need: Chromium, Node and the script directory
/// with playwright-core installed; `None` (after a NOTICE, or a failure
/// under CI) when the test is not to run.
struct Tools {
    chromium: PathBuf,
    node: PathBuf,
    script_dir: PathBuf,
}

fn tools() -> Option<Tools> {
    if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!("NOTICE: browser test skipped: set RUNBOAT_SLOW_TESTS=1 to run it");
        return None;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_dir = manifest.join("tests").join("browser");
    let Some(chromium) = chromium() else {
        notice("no chromium on PATH (apt-get install chromium)");
        return None;
    };
    let Some(node) = on_path("node") else {
        notice("no node on PATH");
        return None;
    };
    if !script_dir.join("node_modules").join("playwright-core").is_dir() {
        notice("playwright-core not installed (npm ci in runboat-server/tests/browser)");
        return None;
    }
    Some(Tools { chromium, node, script_dir })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_shows_live_status_and_starts_a_build_in_chromium() {
    let Some(Tools { chromium, node, script_dir }) = tools() else { return };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Short jobs on the real clock: initialization 3 s, scaling 1 s.
    let sim = SimCluster::new(SimConfig {
        init_job: JobScript::succeed_after(Duration::from_secs(3)),
        scale_delay: Duration::from_secs(1),
        ..SimConfig::default()
    });
    let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
    let settings = (*crate::support::settings()).clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runboat_server::run::run_with_cluster(
        settings,
        cluster,
        runboat_server::ServerOptions::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let screenshot = target_dir(manifest).join("browser").join("board.png");
    let _ = std::fs::remove_file(&screenshot);
    let child = Command::new(node)
        .arg(script_dir.join("board.mjs"))
        .current_dir(&script_dir)
        .env("RUNBOAT_URL", format!("http://{addr}"))
        .env("RUNBOAT_WEBHOOK_SECRET", "whsecret")
        .env("RUNBOAT_SCREENSHOT", &screenshot)
        .env("RUNBOAT_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let out = wait_output(child).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "browser test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("[browser] ok"), "{stdout}");

    // The page is a PNG of a real rendering, not an empty file.
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "suspiciously small screenshot: {} bytes", png.len());

    // What the browser showed is what the cluster has.
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("[browser] webhook accepted: build "))
        .expect("build name in the output");
    let deployment = sim.deployment(name).expect("deployment of the build");
    assert_eq!(deployment.available_replicas, Some(1), "{deployment:?}");

    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops within 10 s")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}

/// Repositories and builds of the scale test (OCA's order of magnitude).
const SCALE_REPOS: usize = 150;
const SCALE_BUILDS: usize = 2_000;
/// Builds of the one large repository (`oca/big`): a branch and pull
/// requests with hundreds of builds, for pagination and "show more".
const BIG_REPO_BUILDS: usize = 300;

/// Seeds `sim` with [`SCALE_BUILDS`] existing builds in [`SCALE_REPOS`]
/// repositories, created over the last weeks: mostly stopped, some started,
/// failed or to initialize; returns how many builds each repository got.
fn seed(sim: &SimCluster) -> Vec<(String, usize)> {
    let now = jiff::Timestamp::now().as_second();
    let mut per_repo = vec![0usize; SCALE_REPOS];
    for i in 0..SCALE_BUILDS {
        // Repository 0 is the big one; the others share the rest evenly.
        let repo_ix = if i < BIG_REPO_BUILDS { 0 } else { 1 + (i * 7919) % (SCALE_REPOS - 1) };
        per_repo[repo_ix] += 1;
        let repo =
            if repo_ix == 0 { "oca/big".to_owned() } else { format!("oca/repo-{repo_ix:03}") };
        let branch = ["15.0", "16.0", "17.0"][i % 3];
        // One build in three is a pull request's (a handful of PRs per repo;
        // the big repo's first 200 builds are all on its 16.0 branch).
        let pr = if repo_ix == 0 && i < 200 {
            None
        } else if i % 3 == 0 {
            Some(1 + (i % 40) as u64)
        } else {
            None
        };
        let branch = if repo_ix == 0 && i < 200 { "16.0" } else { branch };
        let commit = CommitInfo::new(
            &repo,
            branch,
            pr,
            // A commit-like hexadecimal name, distinct per build.
            &format!(
                "{:08x}{:032x}",
                (i as u32 + 1).wrapping_mul(0x9e37_79b9),
                (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5cdb_8353)
            ),
        )
        .expect("commit");
        let (init, replicas) = match i % 20 {
            0 => (InitStatus::Failed, 0),
            1 => (InitStatus::Succeeded, 1),
            // A few to initialize (the controller starts at most
            // `max_initializing` jobs, which then run for an hour).
            2 if i % 200 == 2 => (InitStatus::Todo, 0),
            _ => (InitStatus::Succeeded, 0),
        };
        // Spread over 30 days, a build about every 20 minutes.
        let created = jiff::Timestamp::from_second(now - 60 - (i as i64) * 1_297).expect("ts");
        sim.insert_deployment(&commit, init, replicas, created);
    }
    per_repo
        .into_iter()
        .enumerate()
        .map(|(ix, n)| {
            (if ix == 0 { "oca/big".to_owned() } else { format!("oca/repo-{ix:03}") }, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_stays_fast_at_oca_scale() {
    let Some(Tools { chromium, node, script_dir }) = tools() else { return };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Starting takes 1 s; initialization an hour (builds to initialize
    // stay initializing).
    let hour = Duration::from_secs(3600);
    let sim = SimCluster::new(SimConfig {
        init_job: JobScript::succeed_after(hour),
        scale_delay: Duration::from_secs(1),
        ..SimConfig::default()
    });
    let per_repo = seed(&sim);
    assert_eq!(per_repo.len(), SCALE_REPOS);
    assert_eq!(per_repo.iter().map(|(_, n)| n).sum::<usize>(), SCALE_BUILDS);
    let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
    // Limits that let every seeded build stay deployed and every started
    // one stay started, and the test's 100 starts through.
    let settings = (*crate::support::settings_with(
        "max_deployed = 100000\nmax_started = 100000\nmax_initializing = 2",
    ))
    .clone();
    let mut options = runboat_server::ServerOptions::default();
    options.limits.actions_per_client_per_minute = 10_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runboat_server::run::run_with_cluster(
        settings,
        cluster,
        options,
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    // The workspace's target directory, whatever CARGO_TARGET_DIR says:
    // where people look for the screenshots.
    let shots = manifest.join("..").join("target").join("screenshots");
    for file in
        ["board-scale.png", "repos-scale.png", "build-scale.png", "build-timeline-scale.png"]
    {
        let _ = std::fs::remove_file(shots.join(file));
    }
    let child = Command::new(node)
        .arg(script_dir.join("scale.mjs"))
        .current_dir(&script_dir)
        .env("RUNBOAT_URL", format!("http://{addr}"))
        .env("RUNBOAT_SCREENSHOTS", &shots)
        .env("RUNBOAT_CHROMIUM", &chromium)
        .env("RUNBOAT_EXPECT_BUILDS", SCALE_BUILDS.to_string())
        .env("RUNBOAT_EXPECT_REPOS", SCALE_REPOS.to_string())
        .env("RUNBOAT_BIG_REPO", "oca/big")
        .env("RUNBOAT_BIG_REPO_BUILDS", BIG_REPO_BUILDS.to_string())
        .env("RUNBOAT_ADMIN_USER", "admin")
        .env("RUNBOAT_ADMIN_PASSWORD", "hunter2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let out = wait_output(child).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "scale browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("[scale] ok"), "{stdout}");
    // The figures are printed (a benchmark, not an assertion).
    assert!(stdout.contains("[scale] burst:"), "{stdout}");

    for file in
        ["board-scale.png", "repos-scale.png", "build-scale.png", "build-timeline-scale.png"]
    {
        let png = std::fs::read(shots.join(file)).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{file} is not a PNG");
        assert!(png.len() > 10_000, "suspiciously small {file}: {} bytes", png.len());
    }

    // The builds the browser started are started in the cluster.
    let started: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("[scale] started: "))
        .expect("the started builds in the output")
        .split(',')
        .collect();
    assert_eq!(started.len(), 100, "{started:?}");
    for name in started {
        let deployment = sim.deployment(name).expect("deployment of the build");
        assert_eq!(deployment.available_replicas, Some(1), "{name}: {deployment:?}");
    }

    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops within 10 s")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}
