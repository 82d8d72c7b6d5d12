//! The official Python Kubernetes client against kubesim: runs
//! `tests/python/clients_check.py` with each interpreter listed in
//! `KUBESIM_PY_CLIENTS` (colon-separated paths to a `python` whose
//! environment has the `kubernetes` package; `.ci/run` installs 34.1.0 and
//! the newest one). Slow: only with `RUNBOAT_SLOW_TESTS=1`. Without an
//! interpreter the test prints a notice and passes, unless `CI` is set.

use std::process::Command;

use crate::sim;

fn slow_tests() -> bool {
    std::env::var("RUNBOAT_SLOW_TESTS").as_deref() == Ok("1")
}

/// Skips with a notice on a developer's machine; fails in CI.
pub(crate) fn missing_tool(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} (CI must install it: see .ci/run)");
    }
    eprintln!("skipped: {what}");
}

fn interpreters() -> Vec<String> {
    std::env::var("KUBESIM_PY_CLIENTS")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_conformance() {
    if !slow_tests() {
        return;
    }
    let pythons = interpreters();
    if pythons.is_empty() {
        missing_tool("KUBESIM_PY_CLIENTS is not set: no Python Kubernetes client to test with");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients_check.py");
    let sim = sim().await;
    for (i, python) in pythons.iter().enumerate() {
        let version = Command::new(python)
            .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
            .output();
        let version = match version {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            _ => {
                missing_tool(&format!("{python} cannot import the kubernetes package"));
                continue;
            }
        };
        let mut cmd = Command::new(python);
        cmd.arg(script).arg(sim.url()).arg(format!("py-{i}"));
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("joined")
            .expect("python runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "Python kubernetes client {version} ({python}) against kubesim:\n{text}"
        );
        eprintln!("Python kubernetes client {version}:\n{text}");
    }
}
