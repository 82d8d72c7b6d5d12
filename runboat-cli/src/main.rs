//! `runboat`: the admin command line (see the `runboat_cli` library).

fn main() -> std::process::ExitCode {
    runboat_cli::run(std::env::args_os())
}
