//! The default kubefiles' scripts, run with bash against stub commands: they do what
//! the original runboat's scripts do (the steps of `tests/original/scripts.yaml`,
//! here as behaviour), and keep secrets out of the logs.
//!
//! Each script runs in a temporary directory standing for the volume (`/mnt/data`,
//! `/opt/odoo-venv` and `/runboat` are rewritten to it), with `PATH` starting with
//! stubs that record their calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::kubefiles_dir;

struct Run {
    status: i32,
    log: String,
    calls: Vec<String>,
    dir: tempfile::TempDir,
}

impl Run {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A stub printing `output` and exiting with `status`, after recording its call.
struct Stub<'a> {
    name: &'a str,
    output: &'a str,
    status: i32,
}

fn stub(name: &str) -> Stub<'_> {
    Stub { name, output: "", status: 0 }
}

fn prepare() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["bin", "data", "venv", "runboat"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    dir
}

fn run(
    dir: tempfile::TempDir,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stubs: &[Stub<'_>],
) -> Run {
    let root = dir.path();
    let calls = root.join("calls");
    for stub in stubs {
        let path = root.join("bin").join(stub.name);
        let body = format!(
            "#!/bin/bash\necho \"{} $*\" >> '{}'\nprintf '%s' '{}'\nexit {}\n",
            stub.name,
            calls.display(),
            stub.output,
            stub.status
        );
        std::fs::write(&path, body).expect("stub");
        make_executable(&path);
    }
    let text = std::fs::read_to_string(kubefiles_dir("native").join(script)).expect("script");
    let text = text
        .replace("/mnt/data", &root.join("data").display().to_string())
        .replace("/opt/odoo-venv/", &format!("{}/", root.join("venv").display()))
        .replace("/runboat/", &format!("{}/", root.join("runboat").display()));
    let script_path = root.join(script);
    std::fs::write(&script_path, text).expect("write script");
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", root.join("bin").display());
    let output = Command::new("bash")
        .arg(&script_path)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    Run {
        status: output.status.code().unwrap_or(-1),
        log,
        calls: calls.lines().map(str::to_owned).collect(),
        dir,
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn start_env(rc: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ODOO_RC", rc.display().to_string()),
        ("ADDONS_PATH", "/odoo/addons".into()),
        ("ADDONS_DIR", "/mnt/addons".into()),
        ("PGDATABASE", "b123".into()),
        ("PGUSER", "odoo".into()),
    ]
}

fn start(deb_deps: &str) -> (Run, String) {
    let dir = prepare();
    std::fs::write(dir.path().join("data/initialized"), "").expect("sentinel");
    let rc = dir.path().join("odoo.rc");
    let env = start_env(&rc);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stubs = [
        stub("pip"),
        stub("apt-get"),
        Stub { name: "oca_list_external_dependencies", output: deb_deps, status: 0 },
        stub("oca_wait_for_postgres"),
        stub("unbuffer"),
        stub("odoo"),
    ];
    let run = run(dir, "runboat-start.sh", &[], &env, &stubs);
    let rc = std::fs::read_to_string(&rc).unwrap_or_default();
    (run, rc)
}

#[test]
fn start_updates_apt_lists_before_installing_deb_dependencies() {
    let (run, _) = start("libldap2-dev");
    assert_eq!(run.status, 0, "{}", run.log);
    let apt: Vec<&String> = run.calls.iter().filter(|c| c.starts_with("apt-get")).collect();
    assert_eq!(apt.len(), 2, "{:?}", run.calls);
    assert!(apt[0].starts_with("apt-get update"), "{:?}", run.calls);
    assert!(apt[1].contains("install") && apt[1].ends_with("libldap2-dev"), "{:?}", run.calls);
    // Nothing to install: no apt-get at all, as in the original.
    let (run, _) = start("");
    assert_eq!(run.status, 0, "{}", run.log);
    assert!(run.calls.iter().all(|c| !c.starts_with("apt-get")), "{:?}", run.calls);
}

#[test]
fn start_sets_a_random_master_password_and_does_not_log_it() {
    let (run, rc) = start("");
    assert_eq!(run.status, 0, "{}", run.log);
    let passwords: Vec<&str> = rc.lines().filter_map(|l| l.strip_prefix("admin_passwd=")).collect();
    assert_eq!(passwords.len(), 1, "{rc}");
    let password = passwords[0];
    assert!(password.len() >= 32 && password.chars().all(|c| c.is_ascii_hexdigit()), "{password}");
    assert!(!run.log.contains(password), "the master password is in the build log");
    assert!(rc.contains("addons_path=/odoo/addons,/mnt/addons"), "{rc}");
    let (_, other) = start("");
    assert_ne!(rc, other, "a new password for each start");
}

#[test]
fn start_serves_the_builds_databases_with_mail_to_the_sidecar() {
    let (run, _) = start("");
    let odoo = run.calls.iter().find(|c| c.starts_with("unbuffer")).expect("odoo runs");
    for arg in ["--db-filter=^b123", "--db_user=odoo", "--smtp=localhost", "--smtp-port=1025"] {
        assert!(odoo.split(' ').any(|a| a == arg), "{arg} in {odoo}");
    }
    assert!(!odoo.contains("--no-database-list") && !odoo.contains("--database"), "{odoo}");
    let waited = run.calls.iter().position(|c| c.starts_with("oca_wait_for_postgres"));
    let served = run.calls.iter().position(|c| c.starts_with("unbuffer"));
    assert!(waited < served, "{:?}", run.calls);
}

#[test]
fn start_refuses_an_uninitialized_build() {
    let dir = prepare();
    let rc = dir.path().join("odoo.rc");
    let env = start_env(&rc);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run(dir, "runboat-start.sh", &[], &env, &[stub("pip"), stub("unbuffer")]);
    assert_eq!(run.status, 1, "{}", run.log);
    assert!(run.calls.is_empty(), "{:?}", run.calls);
}

fn clone_env(data: &Path) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("ADDONS_DIR", data.join("odoo-addons-dir").display().to_string()),
        ("RUNBOAT_GIT_REPO", "oca/mis-builder".to_owned()),
        ("RUNBOAT_GIT_REF", "0123abc".to_owned()),
    ])
}

/// A tarball of one top directory holding `addon/__manifest__.py`, as GitHub's.
fn tarball(dir: &Path) -> PathBuf {
    let src = dir.join("src/repo-0123abc/addon");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("__manifest__.py"), "{}").expect("write");
    let tarball = dir.join("source.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.join("src"))
        .arg("repo-0123abc")
        .status()
        .expect("tar runs");
    assert!(status.success());
    tarball
}

fn curl_stub(dir: &Path, tarball: &Path, status: i32) {
    let path = dir.join("bin/curl");
    let body = format!(
        "#!/bin/bash\necho \"curl $*\" >> '{}'\ncat > /dev/null\n[ {status} -eq 0 ] && cat '{}'\nexit {status}\n",
        dir.join("calls").display(),
        tarball.display()
    );
    std::fs::write(&path, body).expect("curl stub");
    make_executable(&path);
}

#[test]
fn clone_and_install_clears_the_volume_downloads_and_installs() {
    let dir = prepare();
    let data = dir.path().join("data");
    std::fs::write(data.join("initialized"), "").expect("old sentinel");
    std::fs::write(data.join("stale"), "").expect("old data");
    std::fs::write(dir.path().join("venv/pyvenv.cfg"), "").expect("venv");
    let tarball = tarball(dir.path());
    curl_stub(dir.path(), &tarball, 0);
    let env = clone_env(&data);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run(dir, "runboat-clone-and-install.sh", &[], &env, &[stub("oca_install_addons")]);
    assert_eq!(run.status, 0, "{}", run.log);
    assert_eq!(run.calls[0], "curl -sSL https://github.com/oca/mis-builder/tarball/0123abc");
    assert_eq!(run.calls[1], "oca_install_addons ");
    let data = run.data();
    assert!(!data.join("stale").exists(), "the volume is cleared first");
    assert!(data.join("odoo-addons-dir/addon/__manifest__.py").exists(), "extracted");
    assert!(data.join("odoo-venv/pyvenv.cfg").exists(), "the virtualenv is kept");
    assert!(data.join("initialized").exists());
}

#[test]
fn the_token_download_keeps_the_token_out_of_every_log() {
    let dir = prepare();
    let data = dir.path().join("data");
    let tarball = tarball(dir.path());
    curl_stub(dir.path(), &tarball, 0);
    let mut env = clone_env(&data);
    env.insert("RUNBOAT_GITHUB_TOKEN", "ghp_s3cr3tT0ken".into());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run(dir, "runboat-clone-and-install.sh", &["download"], &env, &[]);
    assert_eq!(run.status, 0, "{}", run.log);
    assert_eq!(
        run.calls,
        [
            "curl -sSL --fail --retry 5 --config - https://api.github.com/repos/oca/mis-builder/tarball/0123abc"
        ],
        "the token is not in curl's arguments"
    );
    let download_log =
        std::fs::read_to_string(run.data().join("runboat-download.log")).expect("download log");
    for log in [&run.log, &download_log] {
        assert!(!log.contains("s3cr3t"), "the token is logged: {log}");
    }
    assert!(run.data().join("runboat-download.ok").exists());
    assert!(run.data().join("odoo-addons-dir/addon/__manifest__.py").exists());
}

#[test]
fn a_failed_token_download_fails_the_initialize_container_with_its_log() {
    let dir = prepare();
    let data = dir.path().join("data");
    let tarball = tarball(dir.path());
    curl_stub(dir.path(), &tarball, 22);
    let mut env = clone_env(&data);
    env.insert("RUNBOAT_GITHUB_TOKEN", "ghp_s3cr3tT0ken".into());
    let env_pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let download = run(dir, "runboat-clone-and-install.sh", &["download"], &env_pairs, &[]);
    assert_eq!(download.status, 0, "the init container succeeds: {}", download.log);
    assert!(!download.data().join("runboat-download.ok").exists());
    // The `initialize` container, with the same volume.
    let mut env = clone_env(&data);
    env.insert("RUNBOAT_SOURCE_DOWNLOADED", "1".into());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let install =
        run(download.dir, "runboat-clone-and-install.sh", &[], &env, &[stub("oca_install_addons")]);
    assert_eq!(install.status, 1, "{}", install.log);
    assert!(install.log.contains("Downloading https://api.github.com/"), "{}", install.log);
    assert!(install.log.contains("Downloading the source failed."), "{}", install.log);
    assert!(install.calls.iter().all(|c| !c.starts_with("oca_install_addons")));
}

fn initialize(addons_install_status: i32) -> Run {
    let dir = prepare();
    let rc = dir.path().join("odoo.rc");
    // Odoo fails on the main database only (the `-d b123` call).
    let odoo = dir.path().join("bin/odoo");
    std::fs::write(
        &odoo,
        format!(
            "#!/bin/bash\necho \"odoo $*\" >> '{}'\n[[ \" $* \" == *\" -d b123 \"* ]] && exit {addons_install_status}\nexit 0\n",
            dir.path().join("calls").display()
        ),
    )
    .expect("odoo stub");
    make_executable(&odoo);
    let unbuffer = dir.path().join("bin/unbuffer");
    std::fs::write(&unbuffer, "#!/bin/bash\nexec \"$@\"\n").expect("unbuffer stub");
    make_executable(&unbuffer);
    // The first step, `bash /runboat/runboat-clone-and-install.sh`, only recorded here.
    std::fs::write(
        dir.path().join("runboat/runboat-clone-and-install.sh"),
        format!("echo runboat-clone-and-install.sh >> '{}'\n", dir.path().join("calls").display()),
    )
    .expect("clone stub");
    let env = [
        ("ODOO_RC", rc.display().to_string()),
        ("ADDONS_DIR", "/mnt/addons".to_owned()),
        ("PGDATABASE", "b123".to_owned()),
        ("INCLUDE", "mis_builder".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stubs = [
        stub("oca_wait_for_postgres"),
        stub("dropdb"),
        Stub { name: "manifestoo", output: "mis_builder", status: 0 },
    ];
    let mut run = run(dir, "runboat-initialize.sh", &[], &env, &stubs);
    run.calls.retain(|c| !c.is_empty());
    let rc = std::fs::read_to_string(&rc).unwrap_or_default();
    assert!(rc.contains("with_demo = True"), "{rc}");
    run
}

#[test]
fn initialize_creates_the_base_only_then_the_full_database() {
    let run = initialize(0);
    assert_eq!(run.status, 0, "{}", run.log);
    let expected = [
        "runboat-clone-and-install.sh",
        "oca_wait_for_postgres ",
        "dropdb --if-exists b123",
        "dropdb --if-exists b123-baseonly",
        "manifestoo --select-addons-dir /mnt/addons --select-include mis_builder --select-exclude  list --separator=,",
        "odoo --data-dir=__DATA__/odoo-data-dir --db-template=template1 -d b123-baseonly -i base --stop-after-init",
        "odoo --data-dir=__DATA__/odoo-data-dir --db-template=template1 -d b123 -i mis_builder --stop-after-init",
    ];
    let data = run.data().display().to_string();
    let calls: Vec<String> = run.calls.iter().map(|c| c.replace(&data, "__DATA__")).collect();
    assert_eq!(calls, expected);
}

#[test]
fn a_failed_addons_install_keeps_the_base_only_database() {
    let run = initialize(1);
    assert_eq!(run.status, 0, "initialization still succeeds: {}", run.log);
    assert_eq!(run.calls.last().map(String::as_str), Some("dropdb --if-exists b123"));
}

#[test]
fn cleanup_drops_both_databases() {
    let env = [("PGDATABASE", "b123")];
    let run = run(prepare(), "runboat-cleanup.sh", &[], &env, &[stub("dropdb")]);
    assert_eq!(run.status, 0, "{}", run.log);
    assert_eq!(
        run.calls,
        ["dropdb --if-exists --force b123", "dropdb --if-exists --force b123-baseonly"]
    );
}
