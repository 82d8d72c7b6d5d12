//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use runboat_api::BuildStatus;

use crate::config::Password;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  local error (I/O)
  2  usage error, bad config file, or a parameter the server refused (HTTP 400)
  3  not found (HTTP 404)
  4  not allowed: missing/wrong admin credentials (HTTP 401/403), or the action
     does not apply to the build's current state (the server ignored it)
  5  server unreachable
  6  server error (HTTP 5xx, or an answer that is not understood)
  7  --wait: the build failed
  8  --wait: the build was undeployed while waiting
  9  --wait --timeout: the build did not get there in time
130 interrupted (Ctrl-C) while waiting";

const MAIN_AFTER_HELP: &str = "\
Connection:
  The server URL and the admin credentials come from the flags, else the
  environment (RUNBOAT_URL, RUNBOAT_USER, RUNBOAT_PASSWORD), else the config file
  (--config, RUNBOAT_CONFIG, or ~/.config/runboat/cli.toml when it exists):
      url = \"https://runboat.example.com\"
      user = \"admin\"
      password = \"...\"
  Prefer the environment or the file to --password (other users can see command
  lines). The password is never printed.

Examples:
  runboat status
  runboat builds --repo oca/web --status started
  runboat trigger pr oca/web 1234 --wait
  runboat start b1a2b3c4d5e6 --wait
  runboat logs b1a2b3c4d5e6 --init --follow
  runboat watch --repo oca/web
  runboat undeploy --repo oca/web --pr 1234
";

/// `runboat`: the admin's command line of a runboat server.
#[derive(Debug, Parser)]
#[command(
    name = "runboat",
    version,
    about = "Inspect and operate a runboat server (preview builds of GitHub branches and pull requests)",
    long_about = "Inspect and operate a runboat server (preview builds of GitHub branches and pull \
                  requests) through its REST API: list builds, trigger, start, stop, reset and \
                  undeploy them, read their logs, and watch them change live.",
    after_help = format!("{MAIN_AFTER_HELP}\n{EXIT_CODES}"),
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output (every command)")]
pub struct GlobalArgs {
    /// Server URL [default: http://localhost:8000]
    #[arg(long, env = "RUNBOAT_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Admin user (HTTP Basic), needed to trigger and undeploy
    #[arg(long, env = "RUNBOAT_USER", global = true, value_name = "USER")]
    pub user: Option<String>,
    /// Admin password (prefer RUNBOAT_PASSWORD or the config file)
    #[arg(
        long,
        env = "RUNBOAT_PASSWORD",
        global = true,
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<Password>,
    /// Config file (TOML with url, user, password)
    #[arg(long, env = "RUNBOAT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// When to use colours
    #[arg(long, value_enum, global = true, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colours when writing to a terminal (and NO_COLOR is not set)
    Auto,
    /// Always colours
    Always,
    /// Never colours
    Never,
}

/// `--status`: one of the API's status names (runboat-api's
/// [`BuildStatus`]).
fn status_parser() -> impl clap::builder::TypedValueParser<Value = BuildStatus> {
    clap::builder::PossibleValuesParser::new(BuildStatus::ALL.map(BuildStatus::as_str))
        .try_map(|s| s.parse::<BuildStatus>())
}

/// Build filters.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Builds of this repository (owner/name)
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Branch builds of this branch only
    #[arg(long, value_name = "BRANCH", conflicts_with = "target_branch")]
    pub branch: Option<String>,
    /// Builds targeting this branch (branch builds and pull requests)
    #[arg(long, value_name = "BRANCH")]
    pub target_branch: Option<String>,
    /// Builds of this pull request
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pr: Option<u64>,
    /// Builds in this status
    #[arg(long, value_name = "STATUS", value_parser = status_parser())]
    pub status: Option<BuildStatus>,
}

/// `--wait` and its timeout.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Follow the build until it is ready (or fails); the exit code says how it ended
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit code 9)
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub timeout: Option<u64>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the controller counters (deployed, started, initializing… and their limits)
    #[command(after_help = "Examples:\n  runboat status\n  runboat status --json | jq .started")]
    Status {
        /// Print the server's JSON
        #[arg(long)]
        json: bool,
    },
    /// List builds, as the web board orders them (rows of a branch or PR, newest first)
    #[command(
        after_help = "Columns: name, repo, target branch (and #PR), commit, status, age, last scaled.\n\n\
                      Examples:\n  runboat builds --repo oca/web\n  runboat builds --status failed\n  \
                      runboat builds --repo oca/web --pr 1234 --wide\n  \
                      runboat builds --json | jq -r '.[].name'"
    )]
    Builds {
        #[command(flatten)]
        filters: FilterArgs,
        /// Print the server's JSON (the server's order)
        #[arg(long)]
        json: bool,
        /// Add the links (instance, mail catcher, build page)
        #[arg(long)]
        wide: bool,
    },
    /// Show one build in detail, with all its links
    #[command(
        after_help = "Examples:\n  runboat show b1a2b3c4d5e6\n  runboat show b1a2b3c4d5e6 --json"
    )]
    Show {
        /// Build name
        name: String,
        /// Print the server's JSON
        #[arg(long)]
        json: bool,
    },
    /// Deploy the head commit of a branch or pull request (admin)
    #[command(
        subcommand,
        after_help = "Examples:\n  runboat trigger branch oca/web 16.0\n  runboat trigger pr oca/web 1234 --wait"
    )]
    Trigger(Trigger),
    /// Start builds (stopped ones); the oldest started builds stop past the limit
    #[command(
        after_help = "Examples:\n  runboat start b1a2b3c4d5e6\n  runboat start b1a2b3c4d5e6 --wait --timeout 300"
    )]
    Start {
        /// Build names
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
        /// Print the server's JSON answers (and the build, with --wait)
        #[arg(long)]
        json: bool,
    },
    /// Stop started builds
    #[command(after_help = "Examples:\n  runboat stop b1a2b3c4d5e6 b6e5d4c3b2a1")]
    Stop {
        /// Build names
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Print the server's JSON answers
        #[arg(long)]
        json: bool,
    },
    /// Reinitialize builds (kill their jobs, initialize again)
    #[command(after_help = "Examples:\n  runboat reset b1a2b3c4d5e6")]
    Reset {
        /// Build names
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Print the server's JSON answers
        #[arg(long)]
        json: bool,
    },
    /// Pin builds (admin): the limits and idle stop never stop or undeploy them
    #[command(after_help = "Pinned builds still count against max_started and max_deployed; \
                      the server refuses a pin beyond its max_pinned setting (HTTP 409).\n\n\
                      Examples:\n  runboat pin b1a2b3c4d5e6\n  runboat unpin b1a2b3c4d5e6")]
    Pin {
        /// Build names
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Print the server's JSON answers
        #[arg(long)]
        json: bool,
    },
    /// Unpin builds (admin)
    #[command(after_help = "Examples:\n  runboat unpin b1a2b3c4d5e6")]
    Unpin {
        /// Build names
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Print the server's JSON answers
        #[arg(long)]
        json: bool,
    },
    /// Undeploy builds by name, or every build of a repo, PR or branch (admin)
    #[command(
        after_help = "Undeploying by --repo lists the builds and asks for confirmation, unless --yes.\n\
                      Without a terminal to ask on, --yes is required.\n\n\
                      Examples:\n  runboat undeploy b1a2b3c4d5e6\n  runboat undeploy --repo oca/web --pr 1234\n  \
                      runboat undeploy --repo oca/web --branch 15.0 --yes"
    )]
    Undeploy(UndeployArgs),
    /// Print a build's log (or its initialization log), as plain text
    #[command(after_help = "Colours are kept on a terminal (see --color).\n\n\
                      Examples:\n  runboat logs b1a2b3c4d5e6\n  runboat logs b1a2b3c4d5e6 --init --follow")]
    Logs {
        /// Build name
        name: String,
        /// The initialization log instead of the running log
        #[arg(long)]
        init: bool,
        /// Keep printing what is added while the build runs (initializes, with --init)
        #[arg(long, short)]
        follow: bool,
    },
    /// Print build changes live, one line per change (reconnects if the server restarts)
    #[command(
        after_help = "Lines: time, build, repo, branch/PR, commit, old status -> new status.\n\
                      First the current matching builds, then each change.\n\n\
                      Examples:\n  runboat watch\n  runboat watch --repo oca/web --pr 1234\n  \
                      runboat watch --json | jq -c ."
    )]
    Watch {
        #[command(flatten)]
        filters: FilterArgs,
        /// One build only
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Print each event's JSON on one line
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  runboat completions bash > ~/.local/share/bash-completion/completions/runboat\n  \
                      runboat completions zsh > ~/.zfunc/_runboat\n  \
                      runboat completions fish > ~/.config/fish/completions/runboat.fish"
    )]
    Completions {
        /// Shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `runboat trigger …`.
#[derive(Debug, Subcommand)]
pub enum Trigger {
    /// Deploy the head commit of a branch
    #[command(
        after_help = "Examples:\n  runboat trigger branch oca/web 16.0\n  runboat trigger branch oca/web 16.0 --wait"
    )]
    Branch {
        /// Repository (owner/name)
        repo: String,
        /// Branch
        branch: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Print the server's JSON answer (and the build, with --wait)
        #[arg(long)]
        json: bool,
    },
    /// Deploy the head commit of a pull request
    #[command(
        after_help = "Examples:\n  runboat trigger pr oca/web 1234\n  runboat trigger pr oca/web 1234 --wait --timeout 1800"
    )]
    Pr {
        /// Repository (owner/name)
        repo: String,
        /// Pull request number
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        pr: u64,
        #[command(flatten)]
        wait: WaitArgs,
        /// Print the server's JSON answer (and the build, with --wait)
        #[arg(long)]
        json: bool,
    },
}

/// `runboat undeploy`.
#[derive(Debug, Args)]
pub struct UndeployArgs {
    /// Build names
    #[arg(value_name = "NAME", required_unless_present = "repo", conflicts_with = "repo")]
    pub names: Vec<String>,
    /// Undeploy the builds of this repository (with --pr or --branch: only those)
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Only the builds of this pull request
    #[arg(long, value_name = "N", requires = "repo", conflicts_with = "branch",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pr: Option<u64>,
    /// Only the branch builds of this branch
    #[arg(long, value_name = "BRANCH", requires = "repo")]
    pub branch: Option<String>,
    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,
    /// Print the server's JSON answers
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        let mut cmd = Cli::command();
        cmd.build();
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() == "help" {
                    continue;
                }
                let after = sub.get_after_help().map(|s| s.to_string()).unwrap_or_default();
                assert!(after.contains("Examples:"), "{name} has no examples");
                assert!(sub.get_about().is_some(), "{name} has no about");
                walk(sub, &name);
            }
        }
        walk(&cmd, "runboat");
    }

    #[test]
    fn usage_errors_are_exit_code_2() {
        let err = Cli::try_parse_from(["runboat", "undeploy"]).expect_err("needs names or repo");
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["runboat", "undeploy", "x", "--repo", "a/b"])
            .expect_err("names and repo");
        assert_eq!(err.exit_code(), 2);
        let err =
            Cli::try_parse_from(["runboat", "undeploy", "--pr", "3"]).expect_err("pr needs repo");
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["runboat", "trigger", "pr", "a/b", "0"]).expect_err("pr 0");
        assert_eq!(err.exit_code(), 2);
        let err =
            Cli::try_parse_from(["runboat", "builds", "--status", "running"]).expect_err("status");
        assert_eq!(err.exit_code(), 2);
        let ok = Cli::try_parse_from(["runboat", "--url", "http://x", "start", "a", "b", "--wait"]);
        assert!(ok.is_ok());
    }

    #[test]
    fn password_never_in_debug() {
        let cli = Cli::try_parse_from(["runboat", "--password", "hunter2", "status"]).expect("ok");
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
