//! What each command does.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::cli::{Command, FilterArgs, Trigger, UndeployArgs, WaitArgs};
use runboat_api::Filters;

use crate::client::ApiClient;
use crate::error::{Error, Result};
use crate::follow::{Goal, report_reached, wait_for, watch};
use crate::output::{
    Style, board_order, branch_or_pr, build_detail, build_from_json, builds_table, emit, emit_json,
    status_table, strip_ansi,
};

impl FilterArgs {
    /// The API filters.
    pub fn to_filters(&self) -> Filters {
        Filters {
            repo: self.repo.clone(),
            target_branch: self.target_branch.clone(),
            branch: self.branch.clone(),
            pr: self.pr,
            status: self.status,
            build_name: None,
        }
    }
}

/// Runs `command` (not `completions`, handled without a client).
pub async fn execute(client: &ApiClient, command: Command, style: Style) -> Result<()> {
    match command {
        Command::Status { json } => {
            let status = client.status().await?;
            if json { emit_json(&status) } else { emit(&status_table(&status)) }
        }
        Command::Builds { filters, json, wide } => {
            let builds = client.builds(&filters.to_filters()).await?;
            if json {
                return emit_json(&Value::Array(builds));
            }
            let mut parsed = builds.iter().map(build_from_json).collect::<Result<Vec<_>>>()?;
            if parsed.is_empty() {
                return emit("no builds\n");
            }
            board_order(&mut parsed);
            emit(&builds_table(&parsed, wide, Timestamp::now()).render(style))
        }
        Command::Show { name, json } => {
            let build = client.build(&name).await?;
            if json {
                return emit_json(&build);
            }
            emit(&build_detail(&build_from_json(&build)?, Timestamp::now(), style))
        }
        Command::Trigger(trigger) => self::trigger(client, trigger, style).await,
        Command::Start { names, wait, json } => start(client, &names, &wait, json, style).await,
        Command::Stop { names, json } => actions(client, &names, "stop", json).await,
        Command::Reset { names, json } => actions(client, &names, "reset", json).await,
        Command::Pin { names, json } => actions(client, &names, "pin", json).await,
        Command::Unpin { names, json } => actions(client, &names, "unpin", json).await,
        Command::Undeploy(args) => undeploy(client, args).await,
        Command::Logs { name, init, follow } => logs(client, &name, init, follow, style).await,
        Command::Watch { filters, name, json } => {
            let mut f = filters.to_filters();
            f.build_name = name;
            watch(client, f, json, style).await
        }
        Command::Completions { .. } => Ok(()),
    }
}

fn timeout(wait: &WaitArgs) -> Option<Duration> {
    wait.timeout.map(Duration::from_secs)
}

async fn trigger(client: &ApiClient, trigger: Trigger, style: Style) -> Result<()> {
    let (answer, wait, json) = match trigger {
        Trigger::Branch { repo, branch, wait, json } => {
            (client.trigger_branch(&repo, &branch).await?, wait, json)
        }
        Trigger::Pr { repo, pr, wait, json } => (client.trigger_pr(&repo, pr).await?, wait, json),
    };
    let name = answer.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !wait.wait {
        if json {
            return emit_json(&answer);
        }
        let detail = answer.get("detail").and_then(Value::as_str).unwrap_or("done");
        return emit(&format!("{name}: {detail}\n"));
    }
    if name.is_empty() {
        return Err(Error::InvalidAnswer(format!(
            "the trigger answer has no build name: {answer}"
        )));
    }
    if !json {
        let detail = answer.get("detail").and_then(Value::as_str).unwrap_or("done");
        notice(&format!("{name}: {detail}"));
    }
    let build = wait_for(client, &name, Goal::Initialized, timeout(&wait)).await?;
    report_reached(&build, json, style)
}

fn notice(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Runs `action` on each build; every build is tried, the first error is
/// returned (its exit code is the command's).
async fn actions(client: &ApiClient, names: &[String], action: &str, json: bool) -> Result<()> {
    let mut first_error = None;
    for name in names {
        let result = if action == "undeploy" {
            client.undeploy(name).await
        } else {
            client.action(name, action).await
        };
        match result {
            Ok(answer) if json => emit(&format!("{answer}\n"))?,
            Ok(answer) => {
                let detail = answer.get("detail").and_then(Value::as_str).unwrap_or("done");
                emit(&format!("{name}: {detail}\n"))?;
            }
            Err(e @ Error::Unreachable { .. }) => return Err(e),
            // One build: its error is the command's.
            Err(e) if names.len() == 1 => return Err(e),
            Err(e) => {
                crate::report(Some(name), &e, Some(client));
                first_error.get_or_insert(e.exit_code());
            }
        }
    }
    match first_error {
        Some(code) => Err(Error::Reported(code)),
        None => Ok(()),
    }
}

async fn start(
    client: &ApiClient,
    names: &[String],
    wait: &WaitArgs,
    json: bool,
    style: Style,
) -> Result<()> {
    if !wait.wait {
        return actions(client, names, "start", json).await;
    }
    // Start them all first, then wait for each.
    let mut first_error = None;
    let mut started = Vec::new();
    for name in names {
        match client.action(name, "start").await {
            Ok(answer) => {
                if !json {
                    let detail = answer.get("detail").and_then(Value::as_str).unwrap_or("done");
                    notice(&format!("{name}: {detail}"));
                }
                started.push(name);
            }
            Err(e @ Error::Unreachable { .. }) => return Err(e),
            Err(e) if names.len() == 1 => return Err(e),
            Err(e) => {
                crate::report(Some(name), &e, Some(client));
                first_error.get_or_insert(e.exit_code());
            }
        }
    }
    for name in started {
        match wait_for(client, name, Goal::Started, timeout(wait)).await {
            Ok(build) => report_reached(&build, json, style)?,
            Err(e) if names.len() == 1 => return Err(e),
            Err(e @ (Error::Unreachable { .. } | Error::BrokenPipe)) => return Err(e),
            Err(e) => {
                crate::report(None, &e, Some(client));
                first_error.get_or_insert(e.exit_code());
            }
        }
    }
    match first_error {
        Some(code) => Err(Error::Reported(code)),
        None => Ok(()),
    }
}

async fn undeploy(client: &ApiClient, args: UndeployArgs) -> Result<()> {
    let Some(repo) = args.repo else {
        return actions(client, &args.names, "undeploy", args.json).await;
    };
    let filters = Filters {
        repo: Some(repo.clone()),
        branch: args.branch.clone(),
        pr: args.pr,
        ..Filters::default()
    };
    let what = match (&args.pr, &args.branch) {
        (Some(pr), _) => format!("of {repo} pull request #{pr}"),
        (None, Some(branch)) => format!("of {repo} branch {branch}"),
        (None, None) => format!("of {repo}"),
    };
    if !args.yes {
        let builds = client.builds(&filters).await?;
        if builds.is_empty() {
            return emit(&format!("no builds {what}\n"));
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(format!(
                "refusing to undeploy {} build(s) {what} without confirmation: \
                 there is no terminal to ask on; add --yes",
                builds.len()
            )));
        }
        let mut list = String::new();
        for b in &builds {
            let b = build_from_json(b)?;
            list.push_str(&format!("  {}  {}  {}\n", b.name, branch_or_pr(&b), b.status));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "These {} build(s) {what} will be undeployed:\n{list}Undeploy them? [y/N] ",
            builds.len()
        );
        let _ = err.flush();
        drop(err);
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Error::io("reading the confirmation", e))?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Err(Error::Usage("not confirmed: nothing undeployed".to_owned()));
        }
    }
    let answer = client.undeploy_matching(&filters).await?;
    if args.json {
        return emit_json(&answer);
    }
    let detail = answer.get("detail").and_then(Value::as_str).unwrap_or("done");
    emit(&format!("{detail}\n"))
}

async fn logs(
    client: &ApiClient,
    name: &str,
    init: bool,
    follow: bool,
    style: Style,
) -> Result<()> {
    // Colours only go to a terminal (or with --color always): only then is
    // the server asked to keep them, and anything else is stripped here too.
    let show = |text: &str| -> Result<()> {
        if style.color { emit(text) } else { emit(&strip_ansi(text)) }
    };
    if !follow {
        return show(&client.log(name, init, style.color).await?);
    }
    let mut stream = client.follow_log(name, init, style.color).await?;
    while let Some(text) = stream.next().await? {
        show(&text)?;
    }
    Ok(())
}
