//! `runboat` admin command line entry point.

fn main() -> std::process::ExitCode {
    eprintln!("runboat (the admin CLI) is not implemented yet (see the runboat-cli issue)");
    std::process::ExitCode::FAILURE
}
