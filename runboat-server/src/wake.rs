//! Wake on request: what runboat-server answers for a build's own host.
//!
//! With `wake_service` set, the controller points a build's Ingress at a
//! Service reaching this server while the build is not started and ready
//! (see ARCHITECTURE.md). A request whose `Host` is a build host
//! (`<slug>.<build_domain>` or `<slug>.mail.<build_domain>`) then reaches
//! [`by_host`], which answers with a waiting page instead of the routes:
//!
//! - a stopped build is started (with the start button's rate limits, or
//!   not at all when actions need the admin credentials) and the page says
//!   it starts;
//! - an initializing build says how many builds are queued before it;
//! - a started build (the Ingress not switched yet) reloads at once;
//! - a failed build shows its status and init log link, and is not
//!   started (no restart loop);
//! - an unknown or undeploying build gets a 404 page.
//!
//! The page reloads the same URL (a script, or `<meta http-equiv="refresh">`
//! without scripts; path, query and fragment kept) every few seconds; once the Ingress points at the build,
//! the reload reaches it. The estimate is the controller's (`eta_seconds`:
//! learnt from the cluster's recent initializations and starts of the
//! repository and branch) when it has one, else the median of this repo's
//! last wake-to-ready times, else "unknown".

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runboat_core::{Build, BuildStatus, CommandOutcome, InitStatus};

use crate::AppState;
use crate::api::html_escape;
use crate::limits::{PeerAddr, client_ip, rate_key};

/// Seconds between reloads of the waiting page.
const REFRESH_SECS: u64 = 3;
/// Builds ahead in the initialization queue counted at most (the page
/// bounds its work per request).
const MAX_AHEAD: usize = 10_000;

/// Wake-to-ready times kept per repo (for the estimate).
const KEPT_PER_REPO: usize = 20;
/// Repos whose times are kept (the oldest-inserted goes beyond).
const MAX_REPOS: usize = 500;
/// Woken builds watched for readiness at once (beyond, the time is not
/// measured).
const MAX_WATCHED: usize = 1000;
/// How long a woken build is watched before its time is given up.
const WATCH_FOR: Duration = Duration::from_secs(30 * 60);
/// Buckets of the wake-to-ready histogram, in seconds.
pub const WAKE_BUCKETS: [f64; 10] =
    [5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0];

/// The wake counters, estimate history and watched builds.
#[derive(Default)]
pub struct WakeState {
    wakes: AtomicU64,
    views: AtomicU64,
    inner: Mutex<WakeInner>,
}

#[derive(Default)]
struct WakeInner {
    /// Recent wake-to-ready seconds by repo, and the repos in insertion
    /// order (to bound them).
    recent: HashMap<String, VecDeque<f64>>,
    repos: VecDeque<String>,
    watched: HashSet<String>,
    buckets: [u64; WAKE_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl WakeState {
    fn lock(&self) -> std::sync::MutexGuard<'_, WakeInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one wake-to-ready time of `repo`.
    pub fn record(&self, repo: &str, secs: f64) {
        let mut w = self.lock();
        for (bound, count) in WAKE_BUCKETS.iter().zip(w.buckets.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        w.count += 1;
        w.sum += secs;
        if !w.recent.contains_key(repo) {
            if w.repos.len() >= MAX_REPOS
                && let Some(old) = w.repos.pop_front()
            {
                w.recent.remove(&old);
            }
            w.repos.push_back(repo.to_owned());
        }
        let times = w.recent.entry(repo.to_owned()).or_default();
        if times.len() >= KEPT_PER_REPO {
            times.pop_front();
        }
        times.push_back(secs);
    }

    /// The median of `repo`'s recent wake-to-ready times.
    pub fn estimate(&self, repo: &str) -> Option<Duration> {
        let w = self.lock();
        let mut times: Vec<f64> = w.recent.get(repo)?.iter().copied().collect();
        if times.is_empty() {
            return None;
        }
        times.sort_by(f64::total_cmp);
        Some(Duration::from_secs_f64(times[times.len() / 2]))
    }

    /// The metrics: wakes, page views, the wake-to-ready histogram.
    pub fn write_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP runboat_wakes_total Builds started by a request to their host.\n\
             # TYPE runboat_wakes_total counter\nrunboat_wakes_total {}",
            self.wakes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP runboat_wake_page_views_total Waiting pages served for build hosts.\n\
             # TYPE runboat_wake_page_views_total counter\nrunboat_wake_page_views_total {}",
            self.views.load(Ordering::Relaxed)
        );
        let w = self.lock();
        out.push_str(
            "# HELP runboat_wake_to_ready_seconds Time from a wake to the build started.\n\
             # TYPE runboat_wake_to_ready_seconds histogram\n",
        );
        for (bound, count) in WAKE_BUCKETS.iter().zip(w.buckets.iter()) {
            let _ = writeln!(out, "runboat_wake_to_ready_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "runboat_wake_to_ready_seconds_bucket{{le=\"+Inf\"}} {}", w.count);
        let _ = writeln!(out, "runboat_wake_to_ready_seconds_sum {}", w.sum);
        let _ = writeln!(out, "runboat_wake_to_ready_seconds_count {}", w.count);
    }
}

/// The host of a request, lower-cased, without port.
fn request_host(req: &Request) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().host().map(str::to_owned))?;
    let host = host.trim().trim_end_matches('.');
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    Some(host.to_ascii_lowercase())
}

/// The slug of a build host under `build_domain` (`None`: not a build host).
pub fn slug_of(host: &str, build_domain: &str) -> Option<String> {
    let domain = build_domain.trim_end_matches('.').to_ascii_lowercase();
    let front = host.strip_suffix(&domain)?.strip_suffix('.')?;
    let slug = front.strip_suffix(".mail").unwrap_or(front);
    let valid = !slug.is_empty()
        && slug.len() <= 253
        && !slug.contains('.')
        && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then(|| slug.to_owned())
}

fn base_host(base_url: &str) -> Option<String> {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    Some(host.to_ascii_lowercase())
}

/// The middleware: requests for a build host get the wake answer; every
/// other request goes on to the routes. Off without `wake_service`.
pub async fn by_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let settings = state.settings();
    if settings.wake_service.is_none() {
        return next.run(req).await;
    }
    let Some(host) = request_host(&req) else { return next.run(req).await };
    if base_host(&settings.base_url).as_deref() == Some(host.as_str()) {
        return next.run(req).await;
    }
    let Some(slug) = slug_of(&host, &settings.build_domain) else {
        return next.run(req).await;
    };
    let peer = req.extensions().get::<PeerAddr>().cloned();
    let headers = req.headers().clone();
    answer(&state, &slug, &headers, peer.as_ref()).await
}

/// What the waiting page says is happening.
enum Phase {
    Queued(usize),
    Initializing,
    Starting,
    Stopping,
    Ready,
    /// Could not start: why.
    NotStarted(String),
}

async fn answer(
    state: &AppState,
    slug: &str,
    headers: &HeaderMap,
    peer: Option<&PeerAddr>,
) -> Response {
    let settings = state.settings();
    let board = settings.base_url.trim_end_matches('/').to_owned();
    if !state.controller().is_ready() {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Starting up",
            Some(REFRESH_SECS),
            &format!(
                "<p>runboat is starting up; this page reloads by itself.</p><p><a href=\"{}\">The builds</a></p>",
                html_escape(&board)
            ),
        );
    }
    let found = state.read(|index| {
        index.get_by_slug(slug).cloned().map(|b| {
            // Counted in the index's ordered set of builds to initialize,
            // without listing them: any visitor can ask this page.
            let queued = (b.status == BuildStatus::Initializing
                && b.init_status == InitStatus::Todo)
                .then(|| index.todo_ahead(&b, MAX_AHEAD));
            (b, queued)
        })
    });
    let Some((build, queued)) = found.filter(|(b, _)| b.status != BuildStatus::Undeploying) else {
        return page(
            StatusCode::NOT_FOUND,
            "No build here",
            None,
            &format!(
                "<p>No build is deployed at this address: it may have been undeployed, or never \
                 existed.</p><p><a href=\"{}\">See the builds</a></p>",
                html_escape(&board)
            ),
        );
    };
    state.wake().views.fetch_add(1, Ordering::Relaxed);
    let phase = match build.status {
        BuildStatus::Failed => return failed_page(&build, &board),
        BuildStatus::Started => Phase::Ready,
        BuildStatus::Starting => Phase::Starting,
        BuildStatus::Stopping => Phase::Stopping,
        BuildStatus::Initializing => queued.map_or(Phase::Initializing, Phase::Queued),
        BuildStatus::Stopped => wake(state, &build, headers, peer).await,
        BuildStatus::Undeploying => Phase::NotStarted("it is being undeployed".to_owned()),
    };
    waiting_page(state, &build, &board, &phase)
}

/// Starts a stopped build, as the start button does.
async fn wake(
    state: &AppState,
    build: &Build,
    headers: &HeaderMap,
    peer: Option<&PeerAddr>,
) -> Phase {
    let name = &build.name;
    if state.admin().check(headers).is_err() {
        if state.options().admin_for_actions {
            return Phase::NotStarted(
                "starting a build needs the admin credentials on this server: start it from the \
                 board"
                    .to_owned(),
            );
        }
        let client = client_ip(&state.options().limits, headers, peer);
        let key = client.map_or_else(|| "local".to_owned(), |ip| rate_key(ip).to_string());
        if state.actions_by_client().hit(&key).is_err()
            || state.actions_by_build().hit(name).is_err()
        {
            return Phase::NotStarted("too many start requests: trying again shortly".to_owned());
        }
    }
    match state.controller().start(name).await {
        Ok(CommandOutcome::Done) => {
            state.wake().wakes.fetch_add(1, Ordering::Relaxed);
            watch_until_ready(state, build);
            tracing::info!(build = name.as_str(), "woken by a request to its host");
            Phase::Starting
        }
        Ok(_) => Phase::Starting,
        Err(e) => Phase::NotStarted(format!("the controller could not start it ({e})")),
    }
}

/// Measures the woken build's time to started, for the histogram and the
/// estimate (bounded: at most [`MAX_WATCHED`] builds, each for
/// [`WATCH_FOR`]).
fn watch_until_ready(state: &AppState, build: &Build) {
    {
        let mut w = state.wake().lock();
        if w.watched.len() >= MAX_WATCHED || !w.watched.insert(build.name.clone()) {
            return;
        }
    }
    let state = state.clone();
    let name = build.name.clone();
    let repo = build.commit_info.repo().to_owned();
    let woken = Instant::now();
    tokio::spawn(async move {
        let mut changes = state.controller().subscribe();
        let deadline = tokio::time::Instant::now() + WATCH_FOR;
        loop {
            match state.controller().get(&name).map(|b| b.status) {
                Some(BuildStatus::Started) => {
                    state.wake().record(&repo, woken.elapsed().as_secs_f64());
                    break;
                }
                Some(BuildStatus::Starting) => {}
                _ => break,
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                Ok(_) => {}
            }
        }
        state.wake().lock().watched.remove(&name);
    });
}

fn describe(build: &Build) -> String {
    let c = &build.commit_info;
    let mut rows = vec![
        ("build", build.name.clone()),
        ("repository", c.repo().to_owned()),
        ("branch", c.target_branch().to_owned()),
    ];
    if let Some(pr) = c.pr() {
        rows.push(("pull request", format!("#{pr}")));
    }
    rows.push(("commit", c.git_commit().chars().take(12).collect()));
    let mut out = String::from("<dl>");
    for (k, v) in rows {
        let _ = write!(out, "<dt>{k}</dt><dd>{}</dd>", html_escape(&v));
    }
    out.push_str("</dl>");
    out
}

/// `about 40 s`, `about 4 min`.
fn about(seconds: u64) -> String {
    if seconds < 90 {
        format!("about {} s", seconds.max(1))
    } else {
        format!("about {} min", seconds.div_ceil(60))
    }
}

fn waiting_page(state: &AppState, build: &Build, board: &str, phase: &Phase) -> Response {
    let (now, refresh) = match phase {
        Phase::Queued(0) => ("Initializing: next in line.".to_owned(), REFRESH_SECS),
        Phase::Queued(n) => (format!("Initializing: queued behind {n} build(s)."), REFRESH_SECS),
        Phase::Initializing => ("Initializing.".to_owned(), REFRESH_SECS),
        Phase::Starting => ("Starting.".to_owned(), REFRESH_SECS),
        Phase::Stopping => ("Stopping; it starts again once stopped.".to_owned(), REFRESH_SECS),
        Phase::Ready => ("Ready: opening it.".to_owned(), 1),
        Phase::NotStarted(why) => (format!("Not started: {why}."), 10),
    };
    // The controller's estimate (learnt from this repository and branch's
    // initializations and starts in the cluster) for a queued,
    // initializing or starting build; else the recent wakes of the repo.
    let current = state.controller().get(&build.name).unwrap_or_else(|| build.clone());
    let eta = state.build_view(&current).eta_seconds;
    let estimate = match (eta, state.wake().estimate(build.commit_info.repo())) {
        (Some(s), _) => format!("{} (recent builds of this repository and branch)", about(s)),
        (None, Some(d)) => format!("{} (recent starts of this repository)", about(d.as_secs())),
        (None, None) => "unknown".to_owned(),
    };
    let body = format!(
        "<p class=\"now\" id=\"now\">{}</p><progress></progress>{}<p>Estimated time until ready: {}.</p>\
         <p>This page reloads by itself and opens the build once it is ready.</p>\
         <p><a href=\"{}/builds/{}\">This build on the board</a> · <a href=\"{}\">All builds</a></p>",
        html_escape(&now),
        describe(build),
        html_escape(&estimate),
        html_escape(board),
        html_escape(&build.name),
        html_escape(board),
    );
    let mut response =
        page(StatusCode::SERVICE_UNAVAILABLE, "Waking the build up", Some(refresh), &body);
    if let Ok(v) = HeaderValue::from_str(&refresh.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn failed_page(build: &Build, board: &str) -> Response {
    let body = format!(
        "<p class=\"now\" id=\"now\">This build failed to initialize: it cannot start.</p>{}\
         <p><a href=\"{board}/api/v1/builds/{name}/init-log\">Its initialization log</a> · \
         <a href=\"{board}/builds/{name}\">This build on the board</a> (an admin can reset it)</p>",
        describe(build),
        board = html_escape(board),
        name = html_escape(&build.name),
    );
    page(StatusCode::SERVICE_UNAVAILABLE, "Build failed", None, &body)
}

fn page(status: StatusCode, title: &str, refresh: Option<u64>, body: &str) -> Response {
    // A script reloads (a meta refresh to a URL with a fragment would only
    // scroll); the meta refresh is for browsers without scripts.
    let refresh = refresh.map_or(String::new(), |s| {
        format!(
            "<noscript><meta http-equiv=\"refresh\" content=\"{s}\"></noscript>\
             <script>setTimeout(function(){{location.reload()}},{ms})</script>",
            ms = s * 1000
        )
    });
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · runboat</title><style>body{{font-family:system-ui,sans-serif;\
         max-width:40em;margin:3em auto;padding:0 1em;color:#222}}dt{{font-weight:bold;\
         float:left;width:9em}}dd{{margin-left:9em}}progress{{width:100%}}.now{{font-size:1.3em}}\
         </style></head><body><h1>{title}</h1>{body}</body></html>",
        title = html_escape(title),
    );
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn build_hosts_give_their_slug() {
        let d = "runboat.example.com";
        assert_eq!(
            slug_of("oca-web-16-0-abc.runboat.example.com", d).as_deref(),
            Some("oca-web-16-0-abc")
        );
        assert_eq!(
            slug_of("oca-web-16-0-abc.mail.runboat.example.com", d).as_deref(),
            Some("oca-web-16-0-abc")
        );
        assert_eq!(slug_of("runboat.example.com", d), None);
        assert_eq!(slug_of("a.b.runboat.example.com", d), None);
        assert_eq!(slug_of("xrunboat.example.com", d), None);
        assert_eq!(slug_of("a.other.com", d), None);
        assert_eq!(
            base_host("https://runboat.example.com:8443/x").as_deref(),
            Some("runboat.example.com")
        );
    }

    #[test]
    fn the_estimate_is_the_median_of_recent_times_and_bounded() {
        let w = WakeState::default();
        assert_eq!(w.estimate("oca/web"), None);
        for s in [10.0, 30.0, 20.0] {
            w.record("oca/web", s);
        }
        assert_eq!(w.estimate("oca/web"), Some(Duration::from_secs(20)));
        for i in 0..100 {
            w.record("oca/web", f64::from(i));
        }
        assert_eq!(w.lock().recent["oca/web"].len(), KEPT_PER_REPO);
        for i in 0..(MAX_REPOS + 10) {
            w.record(&format!("r/{i}"), 1.0);
        }
        assert!(w.lock().recent.len() <= MAX_REPOS);
        let mut out = String::new();
        w.write_metrics(&mut out);
        assert!(out.contains("runboat_wake_to_ready_seconds_count 613"), "{out}");
    }

    proptest! {
        #[test]
        fn any_host_is_handled_without_panic(h in "\\PC{0,40}") {
            let _ = slug_of(&h, "runboat.example.com");
            let _ = base_host(&h);
        }
    }
}
