//! Each command's output and exit code.

use runboat_core::CommitInfo;
use runboat_core::sim::JobScript;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{PATIENCE, Server, admin, run, runboat, sha, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_completions_need_no_server() {
    let url = "http://127.0.0.1:9";
    let r = run(runboat(url), &["--help"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("Exit codes:") && r.stdout.contains("RUNBOAT_PASSWORD"), "{r:?}");
    for sub in [
        &["status", "--help"][..],
        &["builds", "--help"],
        &["show", "--help"],
        &["trigger", "branch", "--help"],
        &["trigger", "pr", "--help"],
        &["start", "--help"],
        &["stop", "--help"],
        &["reset", "--help"],
        &["pin", "--help"],
        &["unpin", "--help"],
        &["undeploy", "--help"],
        &["logs", "--help"],
        &["watch", "--help"],
        &["completions", "--help"],
    ] {
        let mut cmd = runboat(url);
        // A password in the environment is never shown by --help.
        cmd.env("RUNBOAT_PASSWORD", "hunter2");
        let r = run(cmd, sub).await;
        r.expect_code(0);
        assert!(r.stdout.contains("Examples:"), "{sub:?}: {r:?}");
    }
    let r = run(runboat(url), &["completions", "bash"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("_runboat") && r.stdout.contains("undeploy"), "{r:?}");
    // Usage errors: exit 2.
    run(runboat(url), &["builds", "--status", "running"]).await.expect_code(2);
    run(runboat(url), &["undeploy"]).await.expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_builds_and_show() {
    let s = Server::start().await;
    let branch = s.deploy("16.0", None, 1).await;
    let pr = s.deploy("16.0", Some(12), 2).await;
    s.until_status(&branch, Some("stopped")).await;
    s.until_status(&pr, Some("stopped")).await;

    let r = run(runboat(&s.url), &["status"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("deployed      2 / 10"), "{r:?}");
    assert!(r.stdout.contains("stopped       2"), "{r:?}");
    let r = run(runboat(&s.url), &["status", "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json()["deployed"], 2);

    let r = run(runboat(&s.url), &["builds"]).await;
    r.expect_code(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r:?}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("LAST SCALED"), "{r:?}");
    assert!(!r.stdout.contains('\u{1b}'), "no colours when not a terminal");
    // Board order: the newest row first (the PR was deployed last).
    assert!(lines[1].starts_with(&pr) && lines[1].contains("16.0 #12"), "{r:?}");
    assert!(lines[2].starts_with(&branch) && lines[2].contains(&sha(1)[..8]), "{r:?}");
    assert!(lines[2].contains("stopped"), "{r:?}");

    let r = run(runboat(&s.url), &["builds", "--color", "always"]).await;
    assert!(r.stdout.contains("\u{1b}[34mstopped"), "{r:?}");

    let r = run(runboat(&s.url), &["builds", "--wide"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("http://") && r.stdout.contains("LINK"), "{r:?}");

    let r = run(runboat(&s.url), &["builds", "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    let r = run(runboat(&s.url), &["builds", "--repo", "OCA/web", "--pr", "12", "--json"]).await;
    let builds = r.json();
    let builds = builds.as_array().expect("list");
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0]["name"], pr.as_str());
    let r = run(runboat(&s.url), &["builds", "--branch", "16.0", "--json"]).await;
    assert_eq!(r.json()[0]["name"], branch.as_str());
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = run(runboat(&s.url), &["builds", "--status", "started"]).await;
    r.expect_code(0);
    assert_eq!(r.stdout, "no builds\n");

    let r = run(runboat(&s.url), &["show", &pr]).await;
    r.expect_code(0);
    for needle in
        ["status:", "stopped", "pull request:", "#12", "instance:", "mail:", "commit link:"]
    {
        assert!(r.stdout.contains(needle), "{needle}: {r:?}");
    }
    let r = run(runboat(&s.url), &["show", &pr, "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json()["commit_info"]["pr"], 12);

    let r = run(runboat(&s.url), &["show", "nope"]).await;
    r.expect_code(3);
    assert!(r.stderr.contains("build \"nope\" not found"), "{r:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_wait_start_wait_logs_stop_undeploy() {
    let s = Server::start().await;
    s.github.set_branch("oca/web", "16.0", &sha(10));
    let r = run(admin(&s.url), &["trigger", "branch", "oca/web", "16.0", "--wait"]).await;
    r.expect_code(0);
    let name = CommitInfo::new("oca/web", "16.0", None, &sha(10)).expect("commit").build_name();
    assert!(r.stdout.contains(&format!("{name} is initialized (stopped)")), "{r:?}");
    // Not a terminal: plain progress lines on stderr.
    assert!(r.stderr.contains(&format!("{name}: initializing")), "{r:?}");
    assert_eq!(s.status(&name).as_deref(), Some("stopped"));

    // Triggering the same commit again changes nothing.
    let r = run(admin(&s.url), &["trigger", "branch", "oca/web", "16.0", "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json()["name"], name.as_str());

    let r = run(runboat(&s.url), &["start", &name, "--wait"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains(&format!("{name} is started: http://")), "{r:?}");
    assert_eq!(s.status(&name).as_deref(), Some("started"));

    let r = run(runboat(&s.url), &["logs", &name]).await;
    r.expect_code(0);
    assert!(r.stdout.contains(&format!("odoo serving {name}")), "{r:?}");
    let r = run(runboat(&s.url), &["logs", &name, "--init"]).await;
    r.expect_code(0);
    assert!(!r.stdout.is_empty() && !r.stdout.contains('\u{1b}'), "{r:?}");
    // With colours on (a terminal, or --color always) the log's own colours
    // come through: the simulated init log writes a green INFO.
    let r = run(runboat(&s.url), &["--color", "always", "logs", &name, "--init"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("\u{1b}[32mINFO\u{1b}[0m initializing"), "{r:?}");

    // Follow the log while the build runs: the command ends once it stops.
    let mut follow = runboat(&s.url).args(["logs", &name, "--follow"]).spawn().expect("spawn");
    let mut out = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let serving = format!("odoo serving {name}");
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = out.next_line().await.expect("read") {
            if line.contains(&serving) {
                return;
            }
        }
        panic!("the followed log ended early");
    })
    .await
    .expect("the followed log shows the build serving");
    let r = run(runboat(&s.url), &["stop", &name]).await;
    r.expect_code(0);
    assert_eq!(r.stdout, format!("{name}: stop requested\n"));
    s.until_status(&name, Some("stopped")).await;
    let mut rest = String::new();
    while let Some(line) =
        tokio::time::timeout(PATIENCE, out.next_line()).await.expect("ends").expect("read")
    {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status =
        tokio::time::timeout(PATIENCE, follow.wait()).await.expect("exits").expect("status");
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("build is stop"), "the server's end marker: {rest}");
    // Stopping a stopped build does not apply: the server ignores it (200,
    // as the original), the CLI exits 4 with the server's reason.
    let r = run(runboat(&s.url), &["stop", &name, "nope"]).await;
    r.expect_code(4);
    assert!(r.stderr.contains("build is stopped"), "{r:?}");
    assert!(r.stderr.contains("\"nope\" not found"), "every build is tried: {r:?}");

    let r = run(runboat(&s.url), &["reset", &name, "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json()["detail"], "reset requested");
    s.until_status(&name, Some("stopped")).await;

    // Pin and unpin need the admin credentials.
    let r = run(runboat(&s.url), &["pin", &name]).await;
    r.expect_code(4);
    assert!(r.stderr.contains("admin credentials required"), "{r:?}");
    let r = run(admin(&s.url), &["pin", &name]).await;
    r.expect_code(0);
    assert_eq!(r.stdout, format!("{name}: pin requested\n"));
    s.until_pinned(&name, true).await;
    let r = run(runboat(&s.url), &["show", &name]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("pinned:"), "{r:?}");
    assert_eq!(run(runboat(&s.url), &["show", &name, "--json"]).await.json()["pinned"], true);
    let r = run(runboat(&s.url), &["status"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("pinned") && r.stdout.contains("1 / 5"), "{r:?}");
    let r = run(admin(&s.url), &["unpin", &name, "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json()["detail"], "unpin requested");
    s.until_pinned(&name, false).await;
    let shown = run(runboat(&s.url), &["show", &name, "--json"]).await.json();
    assert!(shown.get("pinned").is_none(), "pinned is omitted when false: {shown}");

    // Undeploy needs the admin credentials.
    let r = run(runboat(&s.url), &["undeploy", &name]).await;
    r.expect_code(4);
    assert!(
        r.stderr.contains("admin credentials required") && r.stderr.contains("RUNBOAT_USER"),
        "{r:?}"
    );
    let r = run(admin(&s.url), &["undeploy", &name]).await;
    r.expect_code(0);
    s.until_status(&name, None).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_pr_wait_reports_a_failed_initialization() {
    let s = Server::start().await;
    s.github.set_pr("oca/web", 7, &sha(20));
    let name = CommitInfo::new("oca/web", "16.0", Some(7), &sha(20)).expect("commit").build_name();
    s.sim.script_init(&name, JobScript::fail_after(std::time::Duration::from_millis(50)));
    let r = run(admin(&s.url), &["trigger", "pr", "oca/web", "7", "--wait", "--json"]).await;
    r.expect_code(7);
    assert!(r.stderr.contains(&format!("build {name} failed")), "{r:?}");
    assert_eq!(s.status(&name).as_deref(), Some("failed"));
    // start of a failed build does not apply.
    let r = run(runboat(&s.url), &["start", &name, "--wait"]).await;
    r.expect_code(4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_undeploy_asks_for_confirmation() {
    let s = Server::start().await;
    let a = s.deploy("16.0", Some(12), 1).await;
    let b = s.deploy("16.0", Some(13), 2).await;
    s.until_status(&a, Some("stopped")).await;
    // No terminal to ask on and no --yes: refused, nothing undeployed.
    let r = run(admin(&s.url), &["undeploy", "--repo", "oca/web", "--pr", "12"]).await;
    r.expect_code(2);
    assert!(r.stderr.contains("--yes") && r.stderr.contains("1 build(s)"), "{r:?}");
    assert!(s.status(&a).is_some());
    let r = run(admin(&s.url), &["undeploy", "--repo", "oca/web", "--pr", "12", "--yes"]).await;
    r.expect_code(0);
    assert_eq!(r.stdout, "undeploying 1 build(s)\n");
    s.until_status(&a, None).await;
    assert!(s.status(&b).is_some(), "only PR 12 is undeployed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_config_file_flags_win() {
    let s = Server::start().await;
    s.github.set_branch("oca/web", "17.0", &sha(30));
    let dir = temp_dir("config");
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        format!("url = \"{}\"\nuser = \"admin\"\npassword = \"hunter2\"\n", s.url),
    )
    .expect("write");
    let path = path.to_str().expect("utf8");
    // The URL of the environment is wrong; the file's is right, the flag wins over env.
    let r = run(
        runboat("http://127.0.0.1:9"),
        &["--config", path, "--url", &s.url, "trigger", "branch", "oca/web", "17.0"],
    )
    .await;
    r.expect_code(0);
    assert!(r.stdout.contains("deploying"), "{r:?}");
    // The environment wins over the file: a wrong password there is refused.
    let mut cmd = runboat(&s.url);
    cmd.env("RUNBOAT_PASSWORD", "wrong-pw");
    let r = run(cmd, &["--config", path, "trigger", "branch", "oca/web", "17.0"]).await;
    r.expect_code(4);
    assert!(r.stderr.contains("refused the credentials of user \"admin\""), "{r:?}");
    assert!(!r.stderr.contains("wrong-pw"), "{r:?}");
    // A bad file is a usage error naming the key.
    std::fs::write(dir.join("bad.toml"), "pasword = \"hunter2\"\n").expect("write");
    let bad = dir.join("bad.toml");
    let r = run(runboat(&s.url), &["--config", bad.to_str().expect("utf8"), "status"]).await;
    r.expect_code(2);
    assert!(r.stderr.contains("pasword"), "{r:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ends_on_timeout_and_on_undeploy() {
    let s = Server::start().await;
    s.github.set_branch("oca/web", "15.0", &sha(40));
    let name = CommitInfo::new("oca/web", "15.0", None, &sha(40)).expect("commit").build_name();
    // An initialization that takes an hour.
    s.sim.script_init(&name, JobScript::succeed_after(std::time::Duration::from_secs(3600)));
    let r =
        run(admin(&s.url), &["trigger", "branch", "oca/web", "15.0", "--wait", "--timeout", "1"])
            .await;
    r.expect_code(9);
    assert!(r.stderr.contains(&format!("build {name} is still initializing")), "{r:?}");

    // Undeployed while waiting: exit 8.
    let waiting =
        tokio::spawn(run(admin(&s.url), &["trigger", "branch", "oca/web", "15.0", "--wait"]));
    // Once the waiting command follows the build (it has one event stream open).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while s.state.open_event_streams() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the waiter never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = run(admin(&s.url), &["undeploy", &name, "--json"]).await;
    r.expect_code(0);
    assert_eq!(r.json()["name"], name.as_str());
    let r = waiting.await.expect("join");
    r.expect_code(8);
    assert!(r.stderr.contains("undeployed"), "{r:?}");
    s.stop().await;
}

/// A server without the event stream (an older server, or a proxy that
/// refuses it): `--wait` falls back to polling the build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_polls_without_an_event_stream() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Json;
    use axum::routing::{get, post};
    use serde_json::json;

    let reads = Arc::new(AtomicUsize::new(0));
    let counter = reads.clone();
    let router = axum::Router::new()
        .route(
            "/api/v1/builds/{name}",
            get(move |axum::extract::Path(name): axum::extract::Path<String>| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = if n < 2 { "starting" } else { "started" };
                async move {
                    Json(json!({
                        "name": name,
                        "commit_info": {"repo": "oca/web", "target_branch": "16.0", "pr": null,
                            "git_commit": "0123456789abcdef0123456789abcdef01234567"},
                        "status": status,
                        "created": "2024-01-01T00:00:00Z",
                        "last_scaled": "2024-01-01T00:00:00Z",
                        "deploy_link": "http://x.example",
                        "deploy_link_mailhog": "http://x.mail.example",
                        "repo_target_branch_link": "https://github.com/oca/web/tree/16.0",
                        "repo_pr_link": null,
                        "repo_commit_link": "https://github.com/oca/web/commit/0123456789abcdef0123456789abcdef01234567",
                        "webui_link": "http://runboat.example/builds/b1",
                    }))
                }
            }),
        )
        .route(
            "/api/v1/builds/{name}/start",
            post(|| async { Json(json!({"detail": "start requested"})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let serving = tokio::spawn(async move { axum::serve(listener, router).await });
    let r = run(runboat(&url), &["start", "b1", "--wait"]).await;
    r.expect_code(0);
    assert!(r.stdout.contains("b1 is started: http://x.example"), "{r:?}");
    assert!(reads.load(Ordering::SeqCst) >= 3, "polled until started");
    serving.abort();
}
