//! The binary's command line: what it says when it cannot run.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runboat-server"))
        .args(args)
        .env_remove("RUNBOAT_REPOS")
        .output()
        .expect("run the binary");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_settings_file_is_named() {
    let (ok, err) = run(&["--config", "/nonexistent/runboat.toml", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("cannot read the settings file /nonexistent/runboat.toml"), "{err}");
}

#[test]
fn bad_options_are_refused() {
    let (ok, err) = run(&["--log-format", "xml"]);
    assert!(!ok);
    assert!(err.contains("xml"), "{err}");
    let (ok, err) = run(&["--listen", "nowhere"]);
    assert!(!ok);
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn bad_leader_election_settings_are_named() {
    let (ok, err) =
        run(&["--leader-election", "--lease-renew-deadline", "20", "--lease-identity", "a"]);
    assert!(!ok);
    assert!(err.contains("invalid leader election settings"), "{err}");
    assert!(err.contains("--lease-renew-deadline"), "{err}");
    let (ok, err) = run(&["--lease-retry-period", "soon"]);
    assert!(!ok);
    assert!(err.contains("soon") && err.contains("--lease-retry-period"), "{err}");
}

#[cfg(not(feature = "demo"))]
#[test]
fn demo_needs_its_feature() {
    let (ok, err) = run(&["--demo", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("--features demo"), "{err}");
}
