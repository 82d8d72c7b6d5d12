//! `runboat-server` binary entry point.

fn main() -> std::process::ExitCode {
    eprintln!("runboat-server is not implemented yet (see the runboat-server issue)");
    std::process::ExitCode::FAILURE
}
