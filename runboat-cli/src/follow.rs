//! Following builds over the event stream: `runboat watch` and `--wait`.
//!
//! Both reconnect with exponential backoff (0.5 s to 10 s) when the stream
//! ends or the server cannot be reached, so a server restart only shows as
//! a notice on standard error.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use runboat_api::{BuildStatus, Filters};

use crate::client::{ApiClient, EventStream};
use crate::error::{Error, Result};
use crate::output::{Build, Style, branch_or_pr, build_from_json, emit, emit_json, short_sha};
use crate::sse::SseEvent;

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A change of one build, from a stream message.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The build is as given (new or changed).
    Upd(Box<Build>, Value),
    /// The build is gone.
    Del(Box<Build>, Value),
    /// The server dropped changes for this client: what follows is the full
    /// set again.
    Resync,
}

/// Reads a stream message.
pub fn parse_event(event: &SseEvent) -> Result<Option<Change>> {
    if event.event == "resync" {
        return Ok(Some(Change::Resync));
    }
    if event.event != "message" {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(&event.data)
        .map_err(|e| Error::InvalidAnswer(format!("event is not JSON ({e}): {}", event.data)))?;
    let kind = value.get("event").and_then(Value::as_str).unwrap_or_default();
    if kind == "resync" {
        return Ok(Some(Change::Resync));
    }
    let raw = value.get("build").cloned().unwrap_or(Value::Null);
    let build = build_from_json(&raw)?;
    match kind {
        "upd" => Ok(Some(Change::Upd(Box::new(build), value))),
        "del" => Ok(Some(Change::Del(Box::new(build), value))),
        _ => Ok(None),
    }
}

fn notice(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
}

/// A stream that reconnects.
struct Follower<'a> {
    client: &'a ApiClient,
    filters: Filters,
    stream: Option<EventStream>,
    backoff: Duration,
    connected_once: bool,
    quiet: bool,
}

/// What [`Follower::next`] yields.
enum Next {
    Change(Change),
    /// A (re)connection was made: the matching builds follow.
    Connected {
        reconnect: bool,
    },
}

impl<'a> Follower<'a> {
    fn new(client: &'a ApiClient, filters: Filters, quiet: bool) -> Self {
        Follower {
            client,
            filters,
            stream: None,
            backoff: BACKOFF_START,
            connected_once: false,
            quiet,
        }
    }

    async fn next(&mut self) -> Result<Next> {
        loop {
            let Some(stream) = &mut self.stream else {
                match self.client.events(&self.filters).await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        let reconnect = self.connected_once;
                        if reconnect && !self.quiet {
                            notice("reconnected");
                        }
                        self.connected_once = true;
                        self.backoff = BACKOFF_START;
                        return Ok(Next::Connected { reconnect });
                    }
                    // Before the first connection, fail fast: the user
                    // probably has the wrong URL.
                    Err(e) if e.is_transient() && self.connected_once => {
                        if !self.quiet {
                            notice(&format!("{e}; retrying in {:.1}s", self.backoff.as_secs_f64()));
                        }
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            match stream.next().await {
                Ok(Some(event)) => {
                    if let Some(change) = parse_event(&event)? {
                        return Ok(Next::Change(change));
                    }
                }
                Ok(None) | Err(_) => {
                    self.stream = None;
                    if !self.quiet {
                        notice("event stream closed by the server; reconnecting");
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Column widths of `runboat watch` lines: they only grow, so lines stay
/// aligned as long as the builds fit.
#[derive(Debug, Default)]
pub struct Widths {
    name: usize,
    repo: usize,
    branch: usize,
}

/// One line of `runboat watch`: of `build`, or of a build known only by
/// its `name` (gone before this client saw it whole).
pub fn watch_line(
    time: &str,
    name: &str,
    build: Option<&Build>,
    old: Option<&str>,
    new: &str,
    style: Style,
    widths: &mut Widths,
) -> String {
    let transition = match old {
        Some(old) => format!("{} -> {}", style.status(old, old), style.status(new, new)),
        None => style.status(new, new),
    };
    let branch = build.map(branch_or_pr).unwrap_or_default();
    let repo = build.map_or("", |b| b.commit_info.repo.as_str());
    widths.name = widths.name.max(name.chars().count());
    widths.repo = widths.repo.max(repo.chars().count());
    widths.branch = widths.branch.max(branch.chars().count());
    format!(
        "{time}  {:nw$}  {:rw$}  {:bw$}  {:8}  {transition}\n",
        name,
        repo,
        branch,
        build.map_or("", short_sha),
        nw = widths.name,
        rw = widths.repo,
        bw = widths.branch,
    )
}

fn now_hms() -> String {
    jiff::Zoned::now().strftime("%H:%M:%S").to_string()
}

/// `runboat watch`: prints the matching builds, then each change, forever.
pub async fn watch(client: &ApiClient, filters: Filters, json: bool, style: Style) -> Result<()> {
    let mut follower = Follower::new(client, filters.clone(), false);
    // Last status printed per build.
    let mut known: HashMap<String, String> = HashMap::new();
    let mut widths = Widths::default();
    loop {
        match follower.next().await? {
            Next::Connected { reconnect } => {
                if reconnect {
                    // Builds deleted while disconnected: the new stream will
                    // not mention them.
                    if let Ok(current) = client.builds(&filters).await {
                        let names: std::collections::HashSet<String> = current
                            .iter()
                            .filter_map(|b| b.get("name").and_then(Value::as_str))
                            .map(str::to_owned)
                            .collect();
                        let gone: Vec<String> =
                            known.keys().filter(|n| !names.contains(*n)).cloned().collect();
                        for name in gone {
                            let old = known.remove(&name);
                            if json {
                                emit(&format!(
                                    "{}\n",
                                    serde_json::json!({"event": "del", "build": {"name": name}})
                                ))?;
                            } else {
                                emit(&watch_line(
                                    &now_hms(),
                                    &name,
                                    None,
                                    old.as_deref(),
                                    "undeployed",
                                    style,
                                    &mut widths,
                                ))?;
                            }
                        }
                    }
                }
            }
            Next::Change(Change::Resync) => {
                notice("the server resynchronised this stream (it fell behind)");
            }
            Next::Change(Change::Upd(build, raw)) => {
                let old = known.insert(build.name.clone(), build.status.as_str().to_owned());
                if old.as_deref() == Some(build.status.as_str()) {
                    continue;
                }
                if json {
                    emit(&format!("{raw}\n"))?;
                } else {
                    emit(&watch_line(
                        &now_hms(),
                        &build.name,
                        Some(&build),
                        old.as_deref(),
                        build.status.as_str(),
                        style,
                        &mut widths,
                    ))?;
                }
            }
            Next::Change(Change::Del(build, raw)) => {
                let old = known.remove(&build.name);
                if json {
                    emit(&format!("{raw}\n"))?;
                } else {
                    let old = old.or(Some(build.status.as_str().to_owned()));
                    emit(&watch_line(
                        &now_hms(),
                        &build.name,
                        Some(&build),
                        old.as_deref(),
                        "undeployed",
                        style,
                        &mut widths,
                    ))?;
                }
            }
        }
    }
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Initialization over (`trigger`): stopped (or already started).
    Initialized,
    /// Running (`start`): started.
    Started,
}

/// Where a build is with respect to a goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Waiting,
    Reached,
    Failed(String),
    Gone(String),
}

/// Judges `status` for `goal`; `seen_starting` tells whether the build was
/// seen starting since the wait began (for `start`, a stop after that means
/// the start was undone).
pub fn judge(goal: Goal, name: &str, status: &str, seen_starting: bool) -> Verdict {
    match (goal, status) {
        (_, "failed") => Verdict::Failed(format!("build {name} failed (initialization failed)")),
        (_, "undeploying") => Verdict::Gone(format!("build {name} is being undeployed")),
        (Goal::Initialized, "stopped" | "started" | "starting" | "stopping") => Verdict::Reached,
        (Goal::Started, "started") => Verdict::Reached,
        (Goal::Started, "stopped" | "stopping") if seen_starting => {
            Verdict::Failed(format!("build {name} was stopped before it was ready"))
        }
        _ => Verdict::Waiting,
    }
}

/// Progress display of `--wait`: a spinner line on a terminal, a line per
/// status change otherwise (both on standard error).
struct Progress {
    tty: bool,
    started: Instant,
    frame: usize,
    name: String,
    status: String,
}

impl Progress {
    fn new(name: &str) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            frame: 0,
            name: name.to_owned(),
            status: "waiting".to_owned(),
        }
    }

    fn status(&mut self, status: &str) {
        if status == self.status {
            return;
        }
        status.clone_into(&mut self.status);
        if self.tty {
            self.tick();
        } else {
            notice(&format!("{}: {status}", self.name));
        }
    }

    fn tick(&mut self) {
        if !self.tty {
            return;
        }
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\u{1b}[2K{} {} {} ({}s)",
            FRAMES[self.frame],
            self.name,
            self.status,
            self.started.elapsed().as_secs()
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\u{1b}[2K");
            let _ = err.flush();
        }
    }
}

/// `--wait`: follows build `name` until `goal` is reached (its JSON), it
/// fails, it is undeployed, or `timeout` passes.
pub async fn wait_for(
    client: &ApiClient,
    name: &str,
    goal: Goal,
    timeout: Option<Duration>,
) -> Result<Value> {
    let mut progress = Progress::new(name);
    let deadline = timeout.map(|t| Instant::now() + t);
    let result = wait_inner(client, name, goal, &mut progress, deadline).await;
    progress.clear();
    result
}

/// Interval between two reads of the build when polling.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What the waiting loop learned.
enum Seen {
    Build(Box<Build>, Value),
    Gone,
    Nothing,
}

/// Tracks a wait: judges each state of the build.
struct Judge<'a> {
    name: &'a str,
    goal: Goal,
    seen: bool,
    seen_starting: bool,
}

impl Judge<'_> {
    /// `Some` when the wait is over.
    fn see(&mut self, seen: Seen, progress: &mut Progress) -> Option<Result<Value>> {
        let (build, raw) = match seen {
            Seen::Nothing => return None,
            Seen::Gone => {
                return Some(Err(Error::BuildGone(format!("build {} was undeployed", self.name))));
            }
            Seen::Build(build, raw) => (build, raw),
        };
        if build.name != self.name {
            return None;
        }
        self.seen = true;
        progress.status(build.status.as_str());
        self.seen_starting |= build.status == BuildStatus::Starting;
        match judge(self.goal, self.name, build.status.as_str(), self.seen_starting) {
            Verdict::Waiting => None,
            Verdict::Reached => Some(Ok(raw)),
            Verdict::Failed(m) => Some(Err(Error::BuildFailed(m))),
            Verdict::Gone(m) => Some(Err(Error::BuildGone(m))),
        }
    }
}

async fn wait_inner(
    client: &ApiClient,
    name: &str,
    goal: Goal,
    progress: &mut Progress,
    deadline: Option<Instant>,
) -> Result<Value> {
    let filters = Filters { build_name: Some(name.to_owned()), ..Filters::default() };
    let mut follower = Follower::new(client, filters, false);
    let mut judge = Judge { name, goal, seen: false, seen_starting: false };
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    let mut polling = false;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    loop {
        let seen = tokio::select! {
            n = follower.next(), if !polling => match n {
                Ok(Next::Connected { reconnect: true }) if judge.seen => {
                    // It may have been deleted while we were away.
                    match client.build(name).await {
                        Err(Error::Http { status: 404, .. }) => Seen::Gone,
                        _ => Seen::Nothing,
                    }
                }
                Ok(Next::Connected { .. } | Next::Change(Change::Resync)) => Seen::Nothing,
                Ok(Next::Change(Change::Del(..))) => Seen::Gone,
                Ok(Next::Change(Change::Upd(build, raw))) => {
                    Seen::Build(build, raw.get("build").cloned().unwrap_or(Value::Null))
                }
                // A server (or a proxy) without the event stream: poll.
                Err(Error::Http { status: 404 | 405 | 501, .. }) => {
                    polling = true;
                    Seen::Nothing
                }
                Err(e) => return Err(e),
            },
            _ = poll.tick(), if polling => match client.build(name).await {
                Ok(raw) => Seen::Build(Box::new(build_from_json(&raw)?), raw),
                Err(Error::Http { status: 404, .. }) if judge.seen => Seen::Gone,
                Err(e) if e.is_transient() || matches!(e, Error::Http { status: 404, .. }) => {
                    Seen::Nothing
                }
                Err(e) => return Err(e),
            },
            _ = tick.tick() => {
                progress.tick();
                Seen::Nothing
            }
            _ = tokio::signal::ctrl_c() => return Err(Error::Interrupted),
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                return Err(Error::TimedOut(format!(
                    "build {name} is still {} after the timeout", progress.status
                )));
            }
        };
        if let Some(result) = judge.see(seen, progress) {
            return result;
        }
    }
}

/// Prints the end of a successful wait.
pub fn report_reached(build: &Value, json: bool, style: Style) -> Result<()> {
    if json {
        return emit_json(build);
    }
    let b = build_from_json(build)?;
    let status = style.status(b.status.as_str(), b.status.as_str());
    if b.status == BuildStatus::Started {
        emit(&format!("{} is {status}: {}\n", b.name, b.deploy_link))
    } else {
        emit(&format!(
            "{} is initialized ({status}); start it with: runboat start {}\n",
            b.name, b.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_trigger_and_start_waits() {
        use Verdict::*;
        assert_eq!(judge(Goal::Initialized, "b", "initializing", false), Waiting);
        assert_eq!(judge(Goal::Initialized, "b", "stopped", false), Reached);
        assert_eq!(judge(Goal::Initialized, "b", "started", false), Reached);
        assert!(matches!(judge(Goal::Initialized, "b", "failed", false), Failed(_)));
        assert!(matches!(judge(Goal::Initialized, "b", "undeploying", false), Gone(_)));
        // Before the controller acts on a start, the build still looks stopped.
        assert_eq!(judge(Goal::Started, "b", "stopped", false), Waiting);
        assert_eq!(judge(Goal::Started, "b", "starting", true), Waiting);
        assert_eq!(judge(Goal::Started, "b", "started", true), Reached);
        assert!(matches!(judge(Goal::Started, "b", "stopping", true), Failed(_)));
    }

    #[test]
    fn parses_stream_messages() {
        let ev =
            |event: &str, data: &str| SseEvent { event: event.into(), data: data.into(), id: None };
        let build = r#"{"name":"b1","commit_info":{"repo":"oca/web","target_branch":"16.0","pr":null,"git_commit":"abc"},"status":"stopped","created":"2024-01-01T00:00:00Z","last_scaled":"2024-01-01T00:00:00Z","deploy_link":"","deploy_link_mailhog":"","repo_target_branch_link":"","repo_pr_link":null,"repo_commit_link":"","webui_link":""}"#;
        let upd = parse_event(&ev("message", &format!(r#"{{"event":"upd","build":{build}}}"#)))
            .expect("ok");
        assert!(
            matches!(upd, Some(Change::Upd(ref b, _)) if b.name == "b1" && b.status == BuildStatus::Stopped)
        );
        let del = parse_event(&ev("message", &format!(r#"{{"event":"del","build":{build}}}"#)))
            .expect("ok");
        assert!(matches!(del, Some(Change::Del(..))));
        assert_eq!(parse_event(&ev("resync", "{}")).expect("ok"), Some(Change::Resync));
        assert!(parse_event(&ev("message", "not json")).is_err());
        assert_eq!(parse_event(&ev("other", "x")).expect("ok"), None);
    }

    #[test]
    fn watch_lines_show_transitions() {
        let mut w = Widths::default();
        let style = Style { color: false };
        let line =
            watch_line("12:00:00", "b1", None, Some("initializing"), "stopped", style, &mut w);
        assert!(line.contains("b1") && line.ends_with("initializing -> stopped\n"), "{line}");
        // Columns stay aligned: a shorter name is padded to the longest seen.
        let l1 = watch_line("12:00:01", "b1234", None, None, "stopped", style, &mut w);
        let l2 = watch_line("12:00:02", "b1", None, None, "started", style, &mut w);
        assert_eq!(l1.find("stopped"), l2.find("started"), "{l1}{l2}");
    }
}
