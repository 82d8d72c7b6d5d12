//! What the commands print: builds as the API gives them, tables, colours,
//! relative times, and the board order.

use std::io::Write;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

pub use runboat_api::Build;

/// Reads a build from the API's JSON (runboat-api's [`Build`], the type the
/// server answers with).
pub fn build_from_json(value: &Value) -> Result<Build> {
    Build::deserialize(value)
        .map_err(|e| Error::InvalidAnswer(format!("not a build ({e}): {value}")))
}

/// `16.0` for a branch build, `16.0 #12` for a pull request.
pub fn branch_or_pr(b: &Build) -> String {
    match b.commit_info.pr {
        Some(pr) => format!("{} #{pr}", b.commit_info.target_branch),
        None => b.commit_info.target_branch.clone(),
    }
}

/// The first 8 characters of the commit.
pub fn short_sha(b: &Build) -> &str {
    let sha = &b.commit_info.git_commit;
    sha.get(..8).unwrap_or(sha)
}

/// Whether to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// `s` in the colour of `status`.
    pub fn status(&self, status: &str, s: &str) -> String {
        if !self.color {
            return s.to_owned();
        }
        let code = match status {
            "started" => "32",
            "starting" | "stopping" | "initializing" => "33",
            "failed" => "31",
            "undeploying" => "35",
            "stopped" => "34",
            _ => return s.to_owned(),
        };
        format!("\u{1b}[{code}m{s}\u{1b}[0m")
    }

    /// `s` in bold (table headers).
    pub fn bold(&self, s: &str) -> String {
        if self.color { format!("\u{1b}[1m{s}\u{1b}[0m") } else { s.to_owned() }
    }
}

/// Parses an API timestamp (RFC 3339; a naive one is taken as UTC, as the
/// original's API sometimes gives).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// A compact age: `42s`, `5m`, `3h`, `12d` (`-` when unknown).
pub fn ago(now: Timestamp, then: Option<Timestamp>) -> String {
    let Some(then) = then else {
        return "-".to_owned();
    };
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Sorts builds as the web board shows them: one row per branch or pull
/// request of a repo, rows by their newest build first, builds in a row
/// newest first (ties by name, descending).
pub fn board_order(builds: &mut [Build]) {
    let row_key = |b: &Build| match b.commit_info.pr {
        Some(pr) => format!("{}#{pr}", b.commit_info.repo),
        None => format!("{}@{}", b.commit_info.repo, b.commit_info.target_branch),
    };
    let mut newest: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for b in builds.iter() {
        let entry = newest.entry(row_key(b)).or_default();
        if b.created > *entry {
            entry.clone_from(&b.created);
        }
    }
    let within = |a: &Build, b: &Build| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name));
    builds.sort_by(|a, b| {
        let (ka, kb) = (row_key(a), row_key(b));
        if ka == kb {
            return within(a, b);
        }
        let (na, nb) = (&newest[&ka], &newest[&kb]);
        nb.cmp(na).then_with(|| ka.cmp(&kb))
    });
}

/// A table: a header and rows of cells, plain text; `status_col` is
/// coloured by its value.
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub status_col: Option<usize>,
}

impl Table {
    /// Renders with two spaces between columns, no trailing spaces.
    pub fn render(&self, style: Style) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<String>, plain: &[String], out: &mut String| {
            let mut l = String::new();
            for (i, (cell, plain)) in cells.iter().zip(plain).enumerate() {
                l.push_str(cell);
                if i + 1 < n {
                    let pad = widths[i] - plain.chars().count() + 2;
                    l.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        line(header.iter().map(|h| style.bold(h)).collect(), &header, &mut out);
        for row in &self.rows {
            let cells = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    // Coloured by the status word ("started (pinned)").
                    let status = c.split(' ').next().unwrap_or(c);
                    if Some(i) == self.status_col { style.status(status, c) } else { c.clone() }
                })
                .collect();
            line(cells, row, &mut out);
        }
        out
    }
}

/// The builds table of `runboat builds`.
pub fn builds_table(builds: &[Build], wide: bool, now: Timestamp) -> Table {
    let mut header = vec!["NAME", "REPO", "BRANCH/PR", "COMMIT", "STATUS", "AGE", "LAST SCALED"];
    if wide {
        header.extend(["LINK", "MAIL", "PAGE"]);
    }
    let rows = builds
        .iter()
        .map(|b| {
            let mut row = vec![
                b.name.clone(),
                b.commit_info.repo.clone(),
                branch_or_pr(b),
                short_sha(b).to_owned(),
                if b.pinned { format!("{} (pinned)", b.status) } else { b.status.to_string() },
                ago(now, parse_time(&b.created)),
                ago(now, parse_time(&b.last_scaled)),
            ];
            if wide {
                row.extend([
                    b.deploy_link.clone(),
                    b.deploy_link_mailhog.clone(),
                    b.webui_link.clone(),
                ]);
            }
            row
        })
        .collect();
    Table { header, rows, status_col: Some(4) }
}

/// One build in detail (`runboat show`).
pub fn build_detail(b: &Build, now: Timestamp, style: Style) -> String {
    let created = parse_time(&b.created);
    let scaled = parse_time(&b.last_scaled);
    let when = |t: Option<Timestamp>, raw: &str| match t {
        Some(t) => format!("{t} ({} ago)", ago(now, Some(t))),
        None => raw.to_owned(),
    };
    let mut fields = vec![
        ("name", b.name.clone()),
        ("status", style.status(b.status.as_str(), b.status.as_str())),
    ];
    if b.pinned {
        fields.push(("pinned", "yes (the limits and idle stop never stop or undeploy it)".into()));
    }
    fields.extend([
        ("repo", b.commit_info.repo.clone()),
        ("target branch", b.commit_info.target_branch.clone()),
    ]);
    if let Some(pr) = b.commit_info.pr {
        fields.push(("pull request", format!("#{pr}")));
    }
    fields.extend([
        ("commit", b.commit_info.git_commit.clone()),
        ("created", when(created, &b.created)),
        ("last scaled", when(scaled, &b.last_scaled)),
        ("instance", b.deploy_link.clone()),
        ("mail", b.deploy_link_mailhog.clone()),
        ("page", b.webui_link.clone()),
        ("branch", b.repo_target_branch_link.clone()),
    ]);
    if let Some(pr) = &b.repo_pr_link {
        fields.push(("pull request link", pr.clone()));
    }
    fields.push(("commit link", b.repo_commit_link.clone()));
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in fields {
        out.push_str(&format!("{:width$}  {v}\n", format!("{k}:")));
    }
    out
}

/// `runboat status`: the counters as a compact table.
pub fn status_table(status: &Value) -> String {
    let n =
        |k: &str| status.get(k).and_then(Value::as_u64).map_or("-".to_owned(), |v| v.to_string());
    let rows = [
        ("deployed", n("deployed"), Some(n("max_deployed"))),
        ("started", n("started"), Some(n("max_started"))),
        ("initializing", n("initializing"), Some(n("max_initializing"))),
        ("to initialize", n("to_initialize"), None),
        ("stopped", n("stopped"), None),
        ("failed", n("failed"), None),
        ("undeploying", n("undeploying"), None),
        ("pinned", n("pinned"), Some(n("max_pinned"))),
    ];
    let w = rows.iter().map(|r| r.1.len()).max().unwrap_or(1);
    let mut out = String::new();
    for (label, value, max) in rows {
        let line = match max {
            Some(max) => format!("{label:<14}{value:>w$} / {max}"),
            None => format!("{label:<14}{value:>w$}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Removes ANSI escape sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// Writes `text` to standard output; a closed pipe ends the command
/// quietly.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Error::BrokenPipe
        } else {
            Error::io("writing to standard output", e)
        }
    })
}

/// `emit` of pretty JSON.
pub fn emit_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    emit(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn build(name: &str, repo: &str, branch: &str, pr: Option<u64>, created: &str) -> Build {
        Build {
            name: name.into(),
            commit_info: runboat_api::CommitInfo {
                repo: repo.into(),
                target_branch: branch.into(),
                pr,
                git_commit: "0123456789abcdef".into(),
            },
            status: runboat_api::BuildStatus::Stopped,
            created: created.into(),
            last_scaled: created.into(),
            deploy_link: String::new(),
            deploy_link_mailhog: String::new(),
            repo_target_branch_link: String::new(),
            repo_pr_link: None,
            repo_commit_link: String::new(),
            webui_link: String::new(),
            pinned: false,
            eta_seconds: None,
            superseded_by: None,
            timeline: None,
        }
    }

    #[test]
    fn board_order_groups_rows_newest_first() {
        let mut builds = vec![
            build("a", "oca/web", "16.0", None, "2024-01-01T00:00:00Z"),
            build("b", "oca/web", "16.0", Some(3), "2024-01-02T00:00:00Z"),
            build("c", "oca/web", "16.0", None, "2024-01-03T00:00:00Z"),
            build("d", "oca/web", "17.0", None, "2024-01-02T12:00:00Z"),
        ];
        board_order(&mut builds);
        let names: Vec<&str> = builds.iter().map(|b| b.name.as_str()).collect();
        // Row 16.0 (newest c), then 17.0 (d), then PR 3 (b).
        assert_eq!(names, ["c", "a", "d", "b"]);
    }

    #[test]
    fn ages_are_compact() {
        let now: Timestamp = "2024-01-10T00:00:00Z".parse().expect("ts");
        let t = |s: &str| parse_time(s);
        assert_eq!(ago(now, t("2024-01-09T23:59:18Z")), "42s");
        assert_eq!(ago(now, t("2024-01-09T23:55:00Z")), "5m");
        assert_eq!(ago(now, t("2024-01-09T21:00:00")), "3h");
        assert_eq!(ago(now, t("2024-01-01T00:00:00Z")), "9d");
        assert_eq!(ago(now, None), "-");
        assert_eq!(ago(now, t("2024-01-11T00:00:00Z")), "0s");
    }

    #[test]
    fn table_aligns_and_colours_without_breaking_alignment() {
        let now: Timestamp = "2024-01-10T00:00:00Z".parse().expect("ts");
        let mut b = build("b-long-name", "oca/web", "16.0", Some(12), "2024-01-09T00:00:00Z");
        b.status = runboat_api::BuildStatus::Started;
        let t = builds_table(&[b], false, now);
        let plain = t.render(Style { color: false });
        let lines: Vec<&str> = plain.lines().collect();
        assert!(lines[0].starts_with("NAME         REPO"), "{plain}");
        assert!(lines[1].contains("16.0 #12") && lines[1].contains("01234567"), "{plain}");
        let coloured = t.render(Style { color: true });
        assert_eq!(strip_ansi(&coloured), plain);
        assert!(coloured.contains("\u{1b}[32mstarted"));
        let mut pinned = build("b1", "oca/web", "16.0", None, "2024-01-09T00:00:00Z");
        pinned.pinned = true;
        let t = builds_table(&[pinned], false, now);
        assert!(t.render(Style { color: false }).contains("stopped (pinned)"));
        assert!(t.render(Style { color: true }).contains("\u{1b}[34mstopped (pinned)"));
    }

    #[test]
    fn detail_values_are_aligned() {
        let now: Timestamp = "2024-01-10T00:00:00Z".parse().expect("ts");
        let b = build("b1", "oca/web", "16.0", None, "2024-01-09T00:00:00Z");
        let text = build_detail(&b, now, Style { color: false });
        let columns: std::collections::HashSet<usize> = text
            .lines()
            .map(|l| l.find(": ").map(|i| i + l[i + 1..].len() - l[i + 1..].trim_start().len()))
            .map(|c| c.expect("key: value"))
            .collect();
        assert_eq!(columns.len(), 1, "{text}");
        assert!(text.contains("2024-01-09T00:00:00Z (24h ago)"), "{text}");
    }

    #[test]
    fn status_table_shows_limits() {
        let v = serde_json::json!({"deployed": 3, "max_deployed": 10, "started": 1, "max_started": 6,
            "initializing": 0, "max_initializing": 2, "to_initialize": 0, "stopped": 2, "failed": 0, "undeploying": 0});
        let t = status_table(&v);
        assert!(t.contains("deployed      3 / 10"), "{t}");
        assert!(t.contains("failed        0\n"), "{t}");
        assert!(t.contains("pinned        - / -"), "an older server: {t}");
        let v = serde_json::json!({"pinned": 2, "max_pinned": 5});
        assert!(status_table(&v).contains("pinned        2 / 5"));
    }

    proptest! {
        #[test]
        fn strip_ansi_removes_every_escape(s in "(\\PC|\u{1b}\\[[0-9;]{0,6}m){0,40}") {
            prop_assert!(!strip_ansi(&s).contains(char::from(27)));
        }

        #[test]
        fn time_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_time(&s);
        }
    }
}
