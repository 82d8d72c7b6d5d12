//! Failures: each maps to its exit code with a clear message.

use crate::support::{Server, admin, run, runboat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server() {
    // A port nothing listens on any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let r = run(runboat(&url), &["status"]).await;
    r.expect_code(5);
    assert!(r.stderr.contains(&format!("cannot reach the runboat server at {url}")), "{r:?}");
    assert!(r.stderr.contains("--url"), "a hint: {r:?}");
    let r = run(runboat(&url), &["watch"]).await;
    r.expect_code(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals() {
    let s = Server::start().await;
    // Missing credentials: 401, exit 4.
    let r = run(runboat(&s.url), &["trigger", "branch", "oca/web", "16.0"]).await;
    r.expect_code(4);
    assert!(r.stderr.contains("admin credentials required (HTTP 401)"), "{r:?}");
    // Wrong password.
    let mut cmd = runboat(&s.url);
    cmd.args(["--user", "admin", "--password", "not-it"]);
    let r = run(cmd, &["undeploy", "--repo", "oca/web", "--yes"]).await;
    r.expect_code(4);
    assert!(!r.stderr.contains("not-it"), "{r:?}");
    // Unsupported branch (it exists on GitHub): 400, exit 2, the server's
    // message.
    s.github.set_branch("oca/web", "main", &crate::support::sha(77));
    let r = run(admin(&s.url), &["trigger", "branch", "oca/web", "main"]).await;
    r.expect_code(2);
    assert!(r.stderr.contains("not supported"), "{r:?}");
    // Unknown on GitHub: 404, exit 3.
    let r = run(admin(&s.url), &["trigger", "pr", "oca/web", "99"]).await;
    r.expect_code(3);
    assert!(r.stderr.contains("pull request #99"), "{r:?}");
    // Unknown build.
    run(runboat(&s.url), &["logs", "nope"]).await.expect_code(3);
    run(runboat(&s.url), &["start", "nope"]).await.expect_code(3);
    // The controller is gone: 503, exit 6.
    s.handle.shutdown().await;
    let r = run(runboat(&s.url), &["start", "nope"]).await;
    r.expect_code(6);
    assert!(r.stderr.contains("HTTP 503"), "{r:?}");
    s.stop().await;
}
