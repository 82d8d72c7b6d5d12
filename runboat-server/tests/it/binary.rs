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

#[cfg(not(feature = "demo"))]
#[test]
fn demo_needs_its_feature() {
    let (ok, err) = run(&["--demo", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("--features demo"), "{err}");
}
