//! `cargo xtask …`: project automation (rust-analyzer's xtask pattern).
#![allow(clippy::print_stdout)]

use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod perf;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci      run what CI runs: rustfmt check, clippy -D warnings, the test suite
  bench   the scale benchmarks [--builds N] [--quick] [--runs R] [--perf] (see BENCHMARKS.md)
  abuse   the abuse suite on loopback [--release]: a table into RELIABILITY.md";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::bench(&args[1..]),
        Some("abuse") => abuse(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("could not run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    cargo(&["test", "--workspace"])
}

/// Markers of the generated table in RELIABILITY.md.
const ABUSE_BEGIN: &str = "<!-- abuse-table:begin -->";
const ABUSE_END: &str = "<!-- abuse-table:end -->";

/// Runs runboat-server's abuse tests (the real binary on kubesim, on
/// loopback) with their report on, and writes the rows they print as a
/// table between the markers of RELIABILITY.md.
fn abuse(args: &[String]) -> Result<()> {
    let release = args.iter().any(|a| a == "--release");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["test", "-p", "runboat-server", "--test", "it"]);
    if release {
        cmd.arg("--release");
    }
    cmd.args(["abuse::", "--", "--test-threads", "1", "--nocapture"])
        .env("RUNBOAT_ABUSE_REPORT", "1");
    let out = cmd.output().context("could not run the abuse suite")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the abuse suite failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    let rows: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix("ABUSE-ROW ")).collect();
    if rows.is_empty() {
        bail!("the abuse suite printed no report rows:\n{stderr}");
    }
    let profile = if release { "release" } else { "debug" };
    let mut table = format!(
        "{ABUSE_BEGIN}\n_`cargo xtask abuse{}` ({profile} build), {}_\n\n\
         | attack | requests tried | 5xx seen | peak RSS (MiB) | descriptors | still answering |\n\
         |---|---:|---:|---:|---:|---|\n",
        if release { " --release" } else { "" },
        utc_date(),
    );
    for row in &rows {
        table.push_str(row);
        table.push('\n');
    }
    table.push_str(ABUSE_END);
    let path = "RELIABILITY.md";
    let doc = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let (Some(begin), Some(end)) = (doc.find(ABUSE_BEGIN), doc.find(ABUSE_END)) else {
        bail!("{path} has no {ABUSE_BEGIN} … {ABUSE_END} markers");
    };
    let updated = format!("{}{table}{}", &doc[..begin], &doc[end + ABUSE_END.len()..]);
    std::fs::write(path, updated).with_context(|| format!("cannot write {path}"))?;
    println!("{table}");
    Ok(())
}

/// The date (UTC) from `date`, or nothing: xtask has no date crate.
fn utc_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
