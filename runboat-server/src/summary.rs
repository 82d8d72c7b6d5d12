//! `GET /api/v1/repos/summary`: per repository, how many builds it has in
//! each status and when one last changed, newest activity first.
//!
//! The web UI's home page shows this for every repository at once (OCA:
//! about 150 repositories, a few thousand builds). Fetching every build to
//! count them in the browser would send megabytes for a few kilobytes of
//! answer, so the server counts: one pass over the index under its read
//! guard, O(builds), no cluster call, and only once per index version (the
//! answer is cached like `GET /builds`'s). The wire type lives here, not in
//! runboat-api, because only this server's UI reads it.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::response::Response;
use jiff::Timestamp;
use runboat_api::Detail;
use runboat_core::Build;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::{json_response, ready};
use crate::error::ApiError;

/// One repository's builds, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoSummary {
    /// `owner/name`, lower case.
    #[schema(example = "oca/web")]
    pub name: String,
    /// The repository on GitHub.
    #[schema(example = "https://github.com/oca/web")]
    pub link: String,
    /// How many builds the repository has.
    pub builds: u64,
    /// Builds by status (statuses without builds are left out).
    #[schema(example = json!({"started": 2, "stopped": 7, "failed": 1}))]
    pub counts: BTreeMap<String, u64>,
    /// The latest creation or start/stop of one of its builds.
    #[schema(example = "2024-05-01T12:34:56Z")]
    pub last_activity: String,
}

/// When `build` last changed in a way a person notices: created, or
/// started/stopped.
fn activity(build: &Build) -> Timestamp {
    build.last_scaled.map_or(build.created, |s| s.max(build.created))
}

/// The summaries of `builds`, newest activity first (then by name).
pub fn summarize<'a>(builds: impl IntoIterator<Item = &'a Build>) -> Vec<RepoSummary> {
    let mut repos: HashMap<&str, (u64, BTreeMap<&'static str, u64>, Timestamp)> = HashMap::new();
    for b in builds {
        let entry =
            repos.entry(b.commit_info.repo()).or_insert((0, BTreeMap::new(), Timestamp::MIN));
        entry.0 += 1;
        *entry.1.entry(b.status.as_str()).or_default() += 1;
        entry.2 = entry.2.max(activity(b));
    }
    let mut list: Vec<(Timestamp, RepoSummary)> = repos
        .into_iter()
        .map(|(name, (builds, counts, last))| {
            let summary = RepoSummary {
                name: name.to_owned(),
                link: format!("https://github.com/{name}"),
                builds,
                counts: counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                last_activity: last.to_string(),
            };
            (last, summary)
        })
        .collect();
    list.sort_by(|(ta, a), (tb, b)| tb.cmp(ta).then_with(|| a.name.cmp(&b.name)));
    list.into_iter().map(|(_, s)| s).collect()
}

#[utoipa::path(get, path = "/api/v1/repos/summary", tag = "builds",
    description = "Per repository having builds: its number of builds by status and its latest \
        activity (a build created, started or stopped), latest activity first.",
    responses((status = 200, description = "the repositories, latest activity first", body = Vec<RepoSummary>),
        (status = 503, description = "not ready: waiting for the first cluster listing (see `Retry-After`)", body = Detail)))]
/// The handler. The answer is kept in the list-answer cache while the index
/// version holds (a page polling it while nothing changed is one lookup).
pub(crate) async fn repos_summary(State(state): State<AppState>) -> Result<Response, ApiError> {
    ready(&state)?;
    let body = state.read(|index| {
        state.inner.list_views.answer(index, CACHE_KEY, || {
            // Strings and integers only: serialising cannot fail.
            serde_json::to_vec(&summarize(index.iter())).unwrap_or_default().into()
        })
    });
    Ok(json_response(body))
}

/// The summary's key in the list-answer cache, which `GET /builds` keys by
/// its filters' `Debug` text (`SearchFilters { … }`): no collision.
const CACHE_KEY: &str = "repos-summary";

#[cfg(test)]
mod tests {
    use runboat_core::{BuildStatus, CommitInfo, InitStatus};

    use super::*;

    fn build(repo: &str, n: u8, status: BuildStatus, created: i64, scaled: Option<i64>) -> Build {
        let sha = format!("{n:040x}");
        let commit = CommitInfo::new(repo, "16.0", None, &sha).expect("commit");
        let ts = |s: i64| Timestamp::from_second(1_700_000_000 + s).expect("ts");
        Build {
            name: commit.build_name(),
            deployment_name: commit.build_name(),
            commit_info: commit,
            status,
            init_status: InitStatus::Succeeded,
            desired_replicas: 0,
            created: ts(created),
            last_scaled: scaled.map(ts),
            pinned: false,
            route: None,
        }
    }

    #[test]
    fn counts_by_status_and_sorts_by_latest_activity() {
        let builds = [
            build("oca/web", 1, BuildStatus::Started, 10, Some(500)),
            build("oca/web", 2, BuildStatus::Stopped, 20, None),
            build("oca/web", 3, BuildStatus::Stopped, 30, None),
            build("oca/sale", 4, BuildStatus::Failed, 100, None),
            build("oca/account", 5, BuildStatus::Initializing, 900, None),
        ];
        let list = summarize(&builds);
        let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["oca/account", "oca/web", "oca/sale"], "a start counts as activity");
        let web = &list[1];
        assert_eq!(web.builds, 3);
        assert_eq!(web.counts.get("started"), Some(&1));
        assert_eq!(web.counts.get("stopped"), Some(&2));
        assert_eq!(web.counts.get("failed"), None, "no zero counts");
        assert_eq!(web.last_activity, "2023-11-14T22:21:40Z");
        assert_eq!(web.link, "https://github.com/oca/web");
        assert!(summarize(&[]).is_empty());
    }

    #[test]
    fn ties_are_sorted_by_name() {
        let builds = [
            build("oca/b", 1, BuildStatus::Stopped, 5, None),
            build("oca/a", 2, BuildStatus::Stopped, 5, None),
        ];
        let names: Vec<String> = summarize(&builds).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["oca/a", "oca/b"]);
    }
}
