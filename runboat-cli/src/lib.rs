//! `runboat`, the admin's command line of a runboat server: inspect builds,
//! trigger, start, stop, reset and undeploy them, read their logs and watch
//! them change, over runboat-server's REST API (`/api/v1`) and its event
//! stream.
//!
//! Entry point: [`run`] (what the thin `main` calls) parses the arguments,
//! resolves the connection (flags > `RUNBOAT_*` env > config file >
//! defaults), runs the command and returns the exit code ([`error::exit`]).
//! [`client::ApiClient`] is the REST client, usable on its own.
//!
//! What it must not do: talk to Kubernetes or GitHub (only the server's
//! HTTP API), decide anything about builds (the server does), or let the
//! admin password reach standard output, an error message, a log or a
//! `Debug` output.

#![allow(clippy::print_stdout)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod follow;
pub mod output;
pub mod sse;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, ColorChoice, Command};
use crate::client::ApiClient;
use crate::config::{ConfigFile, Connection, default_config_path};
pub use crate::error::{Error, Result, exit};
use crate::output::Style;

/// Whether to colour standard output.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    }
}

/// The connection of the parsed command line.
pub fn connection(cli: &Cli) -> Result<Connection> {
    let path = cli.global.config.clone().or_else(default_config_path);
    let file = match &path {
        Some(path) => {
            let file = ConfigFile::load(path)?;
            warn_if_readable_by_others(path, &file);
            file
        }
        None => ConfigFile::default(),
    };
    Ok(Connection::resolve(
        cli.global.url.clone(),
        cli.global.user.clone(),
        cli.global.password.clone(),
        file,
    ))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path, file: &ConfigFile) {
    use std::os::unix::fs::PermissionsExt;
    if file.password.is_none() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: {} holds a password and is readable by other users (chmod 600 it)",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &std::path::Path, _file: &ConfigFile) {}

/// Runs the command line `args` (program name first) and returns the exit
/// code. Errors are printed on standard error.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    if let Command::Completions { shell } = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "runboat", &mut out);
        return finish(output::emit(&String::from_utf8_lossy(&out)), None);
    }
    let style = Style { color: use_color(cli.global.color) };
    let conn = match connection(&cli) {
        Ok(c) => c,
        Err(e) => return finish(Err(e), None),
    };
    let client = match ApiClient::new(&conn) {
        Ok(c) => c,
        Err(e) => return finish(Err(e), None),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return finish(Err(Error::io("starting the async runtime", e)), None),
    };
    let result = runtime.block_on(commands::execute(&client, cli.command, style));
    finish(result, Some(&client))
}

/// Prints the error (with a hint when there is one) and gives the exit
/// code.
fn finish(result: Result<()>, client: Option<&ApiClient>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    if !matches!(e, Error::BrokenPipe | Error::Reported(_)) {
        report(None, &e, client);
    }
    ExitCode::from(e.exit_code())
}

/// Prints `error: [NAME: ]message` and its hint on standard error.
pub fn report(name: Option<&str>, e: &Error, client: Option<&ApiClient>) {
    let mut err = std::io::stderr().lock();
    let prefix = name.map(|n| format!("{n}: ")).unwrap_or_default();
    let _ = writeln!(err, "error: {prefix}{}", error::chain(e));
    if let Some(hint) = hint(e, client) {
        let _ = writeln!(err, "hint: {hint}");
    }
}

/// What the admin may do about `e`.
pub fn hint(e: &Error, client: Option<&ApiClient>) -> Option<String> {
    match e {
        Error::Http { status: 401, .. } => Some(match client.and_then(ApiClient::user) {
            Some(user) => format!("the server refused the credentials of user {user:?}"),
            None => "give the admin credentials: --user/--password, RUNBOAT_USER/RUNBOAT_PASSWORD \
                  or the config file"
                .to_owned(),
        }),
        Error::Unreachable { .. } => Some(
            "is the server running? Set its URL with --url, RUNBOAT_URL or the config file"
                .to_owned(),
        ),
        _ => None,
    }
}
