//! `cargo xtask …`: project automation (rust-analyzer's xtask pattern).
#![allow(clippy::print_stdout)]

use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod perf;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci      run what CI runs: rustfmt check, clippy -D warnings, the test suite
  bench   the scale benchmarks [--builds N] [--quick] [--runs R] [--perf] (see BENCHMARKS.md)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::bench(&args[1..]),
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
