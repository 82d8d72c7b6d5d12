//! Prometheus metrics, hand-written text exposition (format 0.0.4).
//!
//! The server's own: `runboat_builds{status}`, `runboat_init_queue_length`,
//! `runboat_initializing`, `runboat_pinned_builds`, `runboat_ready`, `runboat_http_requests_total` and
//! the `runboat_http_request_duration_seconds` histogram by method, matched
//! route and status. And the controller's, from its counters
//! ([`ControllerHandle::stats`], [`ControllerHandle::action_counts`],
//! [`ControllerHandle::cleanup_failures`]). With leader election on:
//! `runboat_leader`, `runboat_leader_transitions_total` and
//! `runboat_lease_renew_failures_total`.
//!
//! The HTTP series are bounded by construction: the method label is one of
//! the nine standard methods or `other`, the route label a route template
//! of the router (or `unmatched`), the status a number the server itself
//! answers. Whatever a client sends, there are at most [`MAX_HTTP_SERIES`]
//! (method, route, status) series; a request that would make one more is
//! counted under `method="other",route="overflow",status="0"`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use runboat_core::{BuildStatus, ControllerHandle, InitStatus};

use crate::AppState;

/// Upper bounds of the duration histogram buckets, in seconds.
pub const BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The most (method, route, status) series kept: the routes (about 25)
/// times the methods each answers, times the statuses they give, is far
/// below; the cap only guards against a future unbounded label.
pub const MAX_HTTP_SERIES: usize = 1024;

/// The method label: a standard method, else `other` (a client may send
/// any token of any length as a method).
pub fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [(http::Method, &str); 9] = [
        (http::Method::GET, "GET"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::PATCH, "PATCH"),
        (http::Method::OPTIONS, "OPTIONS"),
        (http::Method::CONNECT, "CONNECT"),
        (http::Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map_or("other", |(_, label)| label)
}

type SeriesKey = (&'static str, String, u16);

/// HTTP request durations by (method, route, status).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    histograms: Mutex<BTreeMap<SeriesKey, Histogram>>,
}

impl HttpMetrics {
    /// Records one request. `method` is a [`method_label`], `route` a
    /// route template.
    pub fn observe(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let mut map = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        // No allocation for a known series (the common case).
        if let Some(h) = map.get_mut(&(method, route.to_owned(), status)) {
            h.observe(seconds);
            return;
        }
        let key = if map.len() < MAX_HTTP_SERIES - 1 {
            (method, route.to_owned(), status)
        } else {
            ("other", "overflow".to_owned(), 0)
        };
        map.entry(key).or_default().observe(seconds);
    }

    /// Number of series.
    pub fn series(&self) -> usize {
        self.histograms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn write(&self, out: &mut String) {
        let map = self.histograms.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.push_str("# HELP runboat_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE runboat_http_requests_total counter\n");
        for ((method, route, status), h) in &map {
            let _ = writeln!(
                out,
                "runboat_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape_label(route),
                h.count
            );
        }
        out.push_str(
            "# HELP runboat_http_request_duration_seconds Time to answer (to the response head for streams).\n",
        );
        out.push_str("# TYPE runboat_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in &map {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",status=\"{status}\"",
                escape_label(route)
            );
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "runboat_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "runboat_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ =
                writeln!(out, "runboat_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(
                out,
                "runboat_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Middleware recording every request's duration under its matched route
/// (never the raw path, so build names do not explode the label set).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.http_metrics().observe(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The whole exposition.
pub fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(4096);
    state.read(|index| {
        out.push_str("# HELP runboat_builds Builds by status.\n# TYPE runboat_builds gauge\n");
        for status in BuildStatus::ALL {
            let _ = writeln!(
                out,
                "runboat_builds{{status=\"{status}\"}} {}",
                index.count_by_status(status)
            );
        }
        out.push_str(
            "# HELP runboat_init_queue_length Builds waiting for an initialization job.\n\
             # TYPE runboat_init_queue_length gauge\n",
        );
        let _ =
            writeln!(out, "runboat_init_queue_length {}", index.to_initialize(usize::MAX).len());
        out.push_str(
            "# HELP runboat_initializing Initialization jobs running.\n\
             # TYPE runboat_initializing gauge\n",
        );
        let _ = writeln!(
            out,
            "runboat_initializing {}",
            index.count_by_init_status(InitStatus::Started)
        );
        out.push_str(
            "# HELP runboat_pinned_builds Builds an admin pinned.\n\
             # TYPE runboat_pinned_builds gauge\n",
        );
        let _ = writeln!(out, "runboat_pinned_builds {}", index.count_pinned());
    });
    out.push_str("# HELP runboat_ready Whether the first cluster listing is in.\n# TYPE runboat_ready gauge\n");
    let _ = writeln!(out, "runboat_ready {}", u8::from(state.controller().is_ready()));
    out.push_str(
        "# HELP runboat_event_streams Open build event streams.\n# TYPE runboat_event_streams gauge\n",
    );
    let _ = writeln!(out, "runboat_event_streams {}", state.open_event_streams());
    state.http_metrics().write(&mut out);
    write_controller(state.controller(), &mut out);
    if let Some(leadership) = state.leadership() {
        write_leadership(leadership, &mut out);
    }
    state.wake().write_metrics(&mut out);
    out
}

/// The leader election's series (only when it is on).
fn write_leadership(leadership: &runboat_k8s::Leadership, out: &mut String) {
    let stats = leadership.stats();
    out.push_str(
        "# HELP runboat_leader Whether this replica leads (makes the scheduling decisions).\n\
         # TYPE runboat_leader gauge\n",
    );
    let _ = writeln!(out, "runboat_leader {}", u8::from(leadership.is_leader()));
    out.push_str(
        "# HELP runboat_leader_transitions_total Leadership gained or lost by this replica.\n\
         # TYPE runboat_leader_transitions_total counter\n",
    );
    let _ = writeln!(out, "runboat_leader_transitions_total {}", stats.transitions);
    out.push_str(
        "# HELP runboat_lease_renew_failures_total Failed lease reads or writes while leading.\n\
         # TYPE runboat_lease_renew_failures_total counter\n",
    );
    let _ = writeln!(out, "runboat_lease_renew_failures_total {}", stats.renew_failures);
}

/// The controller's counters.
fn write_controller(controller: &ControllerHandle, out: &mut String) {
    let stats = controller.stats();
    let counters = [
        ("runboat_controller_batches_total", "Reconcile batches.", stats.batches),
        ("runboat_controller_events_total", "Deployment and Job events received.", stats.events),
        ("runboat_controller_actions_total", "Cluster actions started.", stats.actions_started),
        (
            "runboat_controller_action_errors_total",
            "Cluster actions that ended in an error.",
            stats.actions_failed,
        ),
        (
            "runboat_controller_action_panics_total",
            "Cluster actions that panicked.",
            stats.actions_panicked,
        ),
        (
            "runboat_controller_watch_restarts_total",
            "Full relistings after a watch restarted.",
            stats.watch_restarts,
        ),
        (
            "runboat_idle_stops_total",
            "Started builds stopped because their idle session ran out.",
            stats.idle_stops,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP runboat_controller_actions_ended_total Cluster actions ended, by kind and \
         outcome (ok or the error kind).\n# TYPE runboat_controller_actions_ended_total counter"
    );
    for c in controller.action_counts() {
        let _ = writeln!(
            out,
            "runboat_controller_actions_ended_total{{kind=\"{}\",outcome=\"{}\"}} {}",
            c.kind, c.outcome, c.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP runboat_cleanup_failures Undeploying builds whose cleanup job failed.\n\
         # TYPE runboat_cleanup_failures gauge\nrunboat_cleanup_failures {}",
        controller.cleanup_failures().len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = HttpMetrics::default();
        m.observe("GET", "/api/v1/status", 200, 0.003);
        m.observe("GET", "/api/v1/status", 200, 2.0);
        let mut out = String::new();
        m.write(&mut out);
        assert!(out.contains(
            "runboat_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/status\",status=\"200\",le=\"0.005\"} 1"
        ), "{out}");
        assert!(out.contains(
            "runboat_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/status\",status=\"200\",le=\"+Inf\"} 2"
        ));
        assert!(out.contains(
            "runboat_http_requests_total{method=\"GET\",route=\"/api/v1/status\",status=\"200\"} 2"
        ));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let long = http::Method::from_bytes(&[b'X'; 30_000]).expect("a token");
        assert_eq!(method_label(&long), "other");
        assert_eq!(method_label(&http::Method::from_bytes(b"PURGE").expect("a token")), "other");
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(method_label(&http::Method::DELETE), "DELETE");
    }

    #[test]
    fn series_are_capped() {
        let m = HttpMetrics::default();
        for i in 0..(MAX_HTTP_SERIES as u16 + 500) {
            m.observe("GET", "/r", i, 0.001);
        }
        assert_eq!(m.series(), MAX_HTTP_SERIES);
        let mut out = String::new();
        m.write(&mut out);
        assert!(
            out.contains(
                "runboat_http_requests_total{method=\"other\",route=\"overflow\",status=\"0\"} 501"
            ),
            "{out}"
        );
    }
}
