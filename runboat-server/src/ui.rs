//! The web UI: one HTML shell, one stylesheet and one script, all compiled
//! into the binary (no CDN, works offline). The pages fill themselves from
//! the REST API and the event stream.
//!
//! - `/` lists the repositories having builds, with counters and a filter;
//! - `/builds?repo=…[&target_branch=…|&branch=…]` is the live board: one
//!   row per branch or pull request, newest first, a card per build;
//! - `/builds/{name}` is one build; with `?live` it redirects to the
//!   instance when the build is started (and the page does so as soon as it
//!   becomes started);
//! - the original's URLs, in users' bookmarks and in old commit statuses,
//!   redirect (308) to these: `/webui/builds.html?…` → `/builds?…`,
//!   `/webui/build.html?name=X&…` → `/builds/X?…`, `/webui/` → `/`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use runboat_core::BuildStatus;
use serde::Deserialize;

use crate::AppState;
use crate::api::html_escape;

const PAGE_HTML: &str = include_str!("../assets/page.html");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const APP_JS: &str = include_str!("../assets/app.js");

fn page(state: &AppState, kind: &str, title: &str, build: &str) -> String {
    let footer = &state.settings().additional_footer_html;
    // The footer is trusted HTML from the settings (as in the original);
    // everything else is escaped.
    let footer = if footer.is_empty() { String::new() } else { format!("<br>{footer}") };
    PAGE_HTML
        .replace("{{TITLE}}", &html_escape(title))
        .replace("{{PAGE}}", kind)
        .replace("{{BUILD}}", &html_escape(build))
        .replace("{{FOOTER}}", &footer)
}

/// `GET /webui/builds.html?repo=…`: the original's board URL, to the board
/// with the same query.
pub(crate) async fn legacy_builds(RawQuery(query): RawQuery) -> Redirect {
    Redirect::permanent(&match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("/builds?{q}"),
        None => "/builds".to_owned(),
    })
}

/// `GET /webui/build.html?name=X[&live]`: the original's build page URL, to
/// `/builds/X` with the other parameters (`live` among them).
pub(crate) async fn legacy_build(RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let mut name = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("name", value)) if name.is_none() => name = Some(value),
            _ => rest.push(pair),
        }
    }
    // A build name is a DNS label: anything else (an encoded slash, say)
    // is no build, and must not shape the redirect.
    let Some(name) = name.filter(|n| {
        !n.is_empty() && n.len() <= 63 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }) else {
        let detail = "/webui/build.html needs ?name=<build name>";
        return (StatusCode::BAD_REQUEST, Json(runboat_api::Detail { detail: detail.into() }))
            .into_response();
    };
    let target = if rest.is_empty() {
        format!("/builds/{name}")
    } else {
        format!("/builds/{name}?{}", rest.join("&"))
    };
    Redirect::permanent(&target).into_response()
}

/// `GET /webui/` and `/webui/index.html`: the original's home page.
pub(crate) async fn legacy_index() -> Redirect {
    Redirect::permanent("/")
}

/// `GET /`.
pub(crate) async fn index(State(state): State<AppState>) -> Html<String> {
    Html(page(&state, "repos", "Repositories", ""))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BoardParams {
    repo: Option<String>,
    target_branch: Option<String>,
    branch: Option<String>,
}

/// `GET /builds`.
pub(crate) async fn builds_page(
    State(state): State<AppState>,
    params: Result<Query<BoardParams>, QueryRejection>,
) -> Html<String> {
    let p = params.map(|Query(p)| p).unwrap_or_default();
    let mut title = p.repo.filter(|r| !r.is_empty()).unwrap_or_else(|| "All builds".to_owned());
    if let Some(b) = p.branch.filter(|b| !b.is_empty()) {
        title = format!("{title} · branch {b}");
    } else if let Some(b) = p.target_branch.filter(|b| !b.is_empty()) {
        title = format!("{title} · {b}");
    }
    Html(page(&state, "board", &title, ""))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BuildParams {
    live: Option<String>,
}

/// `GET /builds/{name}`.
pub(crate) async fn build_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<BuildParams>, QueryRejection>,
) -> Response {
    let live = params.is_ok_and(|Query(p)| p.live.is_some());
    let Some(build) = state.controller().get(&name) else {
        let mut html = page(&state, "build", "Build not found", &name);
        html = html.replace(
            "<p class=\"empty\">Loading…</p>",
            "<p class=\"empty\">This build does not exist (any more).</p>",
        );
        return (StatusCode::NOT_FOUND, Html(html)).into_response();
    };
    if live && build.status == BuildStatus::Started {
        return Redirect::temporary(&build.deploy_link(&state.settings().build_domain))
            .into_response();
    }
    Html(page(&state, "build", &build.to_string(), &build.name)).into_response()
}

/// `GET /static/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}
