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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use runboat_core::Cluster;
use runboat_core::sim::{JobScript, SimCluster, SimConfig};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_shows_live_status_and_starts_a_build_in_chromium() {
    if std::env::var("RUNBOAT_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!("NOTICE: browser test skipped: set RUNBOAT_SLOW_TESTS=1 to run it");
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_dir = manifest.join("tests").join("browser");
    let Some(chromium) = chromium() else {
        return notice("no chromium on PATH (apt-get install chromium)");
    };
    let Some(node) = on_path("node") else {
        return notice("no node on PATH");
    };
    if !script_dir.join("node_modules").join("playwright-core").is_dir() {
        return notice("playwright-core not installed (npm ci in runboat-server/tests/browser)");
    }

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
