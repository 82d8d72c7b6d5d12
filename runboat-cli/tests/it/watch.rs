//! `runboat watch`: live lines, and reconnection across a server restart.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use crate::support::{PATIENCE, Server, runboat};

/// Reads lines until one contains every needle; returns it.
async fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, needles: &[&str]) -> String {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.expect("read").expect("watch still running");
            if needles.iter().all(|n| line.contains(n)) {
                return line;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no line with {needles:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_transitions_and_survives_a_restart() {
    let s = Server::start().await;
    let old = s.deploy("15.0", None, 1).await;
    s.until_status(&old, Some("stopped")).await;

    let mut cmd = runboat(&s.url);
    cmd.args(["watch", "--repo", "oca/web", "--color", "never"]).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // First the current builds.
    line_with(&mut lines, &[&old, "15.0", "stopped"]).await;

    let name = s.deploy("16.0", None, 2).await;
    line_with(&mut lines, &[&name, "initializing"]).await;
    let line = line_with(&mut lines, &[&name, "-> stopped"]).await;
    assert!(line.contains("initializing -> stopped") || line.contains("-> stopped"), "{line}");

    // Restart the server on the same address (same cluster).
    let (addr, sim) = (s.addr, s.sim.clone());
    s.stop().await;
    let s = Server::start_on(addr, sim).await;
    let third = s.deploy("17.0", Some(5), 3).await;
    // Depending on when the watcher reconnects, it first sees the build
    // initializing or already stopped.
    let mut line = line_with(&mut lines, &[&third, "17.0 #5"]).await;
    if !line.contains("stopped") {
        line = line_with(&mut lines, &[&third, "-> stopped"]).await;
    }
    assert!(line.ends_with("stopped"), "{line}");

    // An undeploy shows as a transition to "undeployed".
    let outcome = s.handle.undeploy(&old).await.expect("undeploy");
    assert_eq!(outcome, runboat_core::CommandOutcome::Done);
    line_with(&mut lines, &[&old, "-> undeployed"]).await;

    child.kill().await.expect("kill");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_is_one_event_per_line() {
    let s = Server::start().await;
    let mut cmd = runboat(&s.url);
    cmd.args(["watch", "--json", "--pr", "9"]).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while s.state.open_event_streams() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "watch never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.deploy("16.0", Some(8), 1).await;
    let name = s.deploy("16.0", Some(9), 2).await;
    let line = line_with(&mut lines, &[&name]).await;
    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(event["event"], "upd");
    assert_eq!(event["build"]["commit_info"]["pr"], 9, "the filter applies: {line}");
    child.kill().await.expect("kill");
    s.stop().await;
}
