//! The abuse suite: the real binary (on kubesim) under the cheap attacks of
//! issue 15, each bounded in time and count. Each test also records a row
//! (requests tried, 5xx seen, peak RSS, descriptors, still answering); with
//! `RUNBOAT_ABUSE_REPORT=1` the rows are printed as a Markdown table on
//! stderr (`cargo xtask abuse` runs the suite that way; RELIABILITY.md
//! shows its output).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use runboat_github::WebhookSecret;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::e2e::{Env, SECRET, STEP, Server, env, run_to_end, settings_toml};

/// A loopback address other than 127.0.0.1: another "client".
fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().expect("server address")
}

/// A connection to `server` from the loopback address `from`.
async fn connect(server: &Server, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind the client address");
    socket.connect(addr(server)).await.expect("connect")
}

/// Reads until EOF (or `within`): what the server sent.
async fn read_all(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let ended = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

/// One request on its own connection from `from`: the raw answer.
async fn raw(server: &Server, from: IpAddr, request: &str) -> String {
    let mut stream = connect(server, from).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    read_all(&mut stream, STEP).await.0
}

/// `GET path` with `Connection: close` from `from`.
async fn get_from(server: &Server, from: IpAddr, path: &str) -> String {
    raw(server, from, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")).await
}

fn pid(server: &Server) -> u32 {
    server.child.id().expect("the server runs")
}

/// Resident memory of the server process, in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid(server)))
        .expect("read /proc/pid/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open descriptors of the server process.
fn fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", pid(server))).map_or(0, Iterator::count)
}

/// One row of the report.
struct Row {
    attack: &'static str,
    tried: usize,
    errors_5xx: usize,
    peak_rss_mib: f64,
    fds: usize,
    answering: bool,
}

fn report(row: &Row) {
    if std::env::var_os("RUNBOAT_ABUSE_REPORT").is_some() {
        eprintln!(
            "ABUSE-ROW | {} | {} | {} | {:.1} | {} | {} |",
            row.attack,
            row.tried,
            row.errors_5xx,
            row.peak_rss_mib,
            row.fds,
            if row.answering { "yes" } else { "NO" }
        );
    }
}

async fn healthz_ok(server: &Server, from: IpAddr) -> bool {
    get_from(server, from, "/healthz").await.starts_with("HTTP/1.1 200")
}

async fn start(env: &Env, extra: &[&str]) -> Server {
    let settings = env.settings("");
    let server = Server::start_with(env.dir.path(), &env.kubeconfig, &settings, extra).await;
    server.wait_ready().await;
    server
}

#[tokio::test]
async fn a_method_name_flood_keeps_metrics_small_and_memory_flat() {
    let env = env().await;
    let server = start(&env, &[]).await;
    let before = rss_kib(&server);
    let mut peak = before;
    let tried = 300;
    let mut errors = 0;
    for i in 0..tried {
        // A distinct 30 KB method each time, on one keep-alive connection
        // per 50 requests.
        let method = format!("{}{i}", "X".repeat(30_000));
        let answer = raw(
            &server,
            client(1),
            &format!("{method} /api/v1/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{}", &answer[..answer.len().min(200)]);
        if answer.starts_with("HTTP/1.1 5") {
            errors += 1;
        }
        if i % 50 == 0 {
            peak = peak.max(rss_kib(&server));
        }
    }
    peak = peak.max(rss_kib(&server));
    let metrics = get_from(&server, client(1), "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.len() < 64 * 1024, "/metrics is {} bytes", metrics.len());
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    assert!(!metrics.contains("XXXXXXXX"));
    // 300 × 30 KB = 9 MB went through: the process keeps none of it.
    let grown = peak.saturating_sub(before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB ({before} → {peak})");
    report(&Row {
        attack: "300 requests, 30 KB distinct method names",
        tried,
        errors_5xx: errors,
        peak_rss_mib: peak as f64 / 1024.0,
        fds: fds(&server),
        answering: healthz_ok(&server, client(1)).await,
    });
}

#[tokio::test]
async fn half_sent_headers_are_closed_after_the_header_timeout() {
    let env = env().await;
    let server = start(&env, &["--header-read-timeout", "1"]).await;
    let tried = 100;
    let mut conns = Vec::new();
    for _ in 0..tried {
        let mut c = connect(&server, client(1)).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ").await.expect("write");
        conns.push(c);
    }
    let fds_open = fds(&server);
    let started = Instant::now();
    for c in &mut conns {
        // The timeout firing is the subject: each read ends (EOF, or a 408)
        // well within 10 s of a 1 s header timeout.
        let (answer, ended) = read_all(c, Duration::from_secs(10)).await;
        assert!(ended, "a slowloris connection is still open");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    report(&Row {
        attack: "100 slowloris connections (1 s header timeout)",
        tried,
        errors_5xx: 0,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds_open,
        answering: healthz_ok(&server, client(1)).await,
    });
}

#[tokio::test]
async fn connection_caps_answer_429_and_503_while_healthz_answers() {
    let env = env().await;
    let server =
        start(&env, &["--max-connections", "12", "--max-connections-per-client", "4"]).await;
    // Client 2 holds its 4 connections (idle: nothing sent).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&server, client(2)).await);
    }
    let mut errors = 0;
    let answer = get_from(&server, client(2), "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("Retry-After: 5"), "{answer}");
    // Another client is served.
    assert!(healthz_ok(&server, client(3)).await);
    // Clients 3 and 4 fill the rest: the global cap answers 503.
    for n in [3, 4] {
        for _ in 0..4 {
            held.push(connect(&server, client(n)).await);
        }
    }
    let answer = get_from(&server, client(5), "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    errors += 1;
    // Connections closed, room again.
    drop(held);
    let deadline = Instant::now() + STEP;
    while !healthz_ok(&server, client(5)).await {
        assert!(Instant::now() < deadline, "never answered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report(&Row {
        attack: "connections over the caps (12 global, 4 per client)",
        tried: 14,
        errors_5xx: errors,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: true,
    });
}

#[tokio::test]
async fn event_stream_caps_answer_429_and_503_while_healthz_answers() {
    let env = env().await;
    let server =
        start(&env, &["--max-event-streams", "4", "--max-event-streams-per-client", "2"]).await;
    let open = "GET /api/v1/build-events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n";
    let close = open.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let mut streams = Vec::new();
    for n in [2, 3] {
        for _ in 0..2 {
            let mut s = connect(&server, client(n)).await;
            s.write_all(open.as_bytes()).await.expect("write");
            let mut head = [0u8; 64];
            let read =
                tokio::time::timeout(STEP, s.read(&mut head)).await.expect("head").expect("read");
            assert!(head[..read].starts_with(b"HTTP/1.1 200"));
            streams.push(s);
        }
        if n == 2 {
            // Client 2 is at its cap, the server is not.
            let answer = raw(&server, client(2), &close).await;
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("retry-after: 5"), "{answer}");
        }
    }
    let answer = raw(&server, client(4), &close).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(healthz_ok(&server, client(4)).await);
    let (_, metrics) = server.get("/api/v1/status").await;
    assert!(metrics.is_object());
    report(&Row {
        attack: "event streams over the caps (4 global, 2 per client)",
        tried: 6,
        errors_5xx: 1,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: true,
    });
}

fn signed(event: &str, delivery: &str, body: &serde_json::Value) -> Request<Full<Bytes>> {
    let body = body.to_string().into_bytes();
    let signature = WebhookSecret::new(SECRET).sign(&body);
    Request::post("/webhooks/github")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

fn at(server: &Server, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let uri = format!("{}{}", server.base, req.uri());
    *req.uri_mut() = uri.parse().expect("uri");
    req
}

#[tokio::test]
async fn a_replayed_delivery_is_a_no_op() {
    let env = env().await;
    let server = start(&env, &[]).await;
    let closed = json!({
        "action": "closed",
        "number": 7,
        "pull_request": {"number": 7, "head": {"sha": "a".repeat(40)}, "base": {"ref": "16.0"}},
        "repository": {"full_name": "oca/e2e-addons"},
    });
    let (status, body) = server.request(at(&server, signed("pull_request", "d-1", &closed))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = server.request(at(&server, signed("pull_request", "d-1", &closed))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("already processed")), "{body}");
    // Another delivery of the same event is processed.
    let (status, _) = server.request(at(&server, signed("pull_request", "d-2", &closed))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    report(&Row {
        attack: "a replayed signed `closed` delivery",
        tried: 3,
        errors_5xx: 0,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: healthz_ok(&server, client(1)).await,
    });
}

#[tokio::test]
async fn anonymous_actions_are_rate_limited() {
    let env = env().await;
    let server = start(&env, &["--actions-per-client-per-minute", "3"]).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (status, _) = server.send(http::Method::POST, "/api/v1/builds/nope/start", false).await;
        seen.push(status);
    }
    assert_eq!(seen[..3], [StatusCode::NOT_FOUND; 3], "{seen:?}");
    assert_eq!(seen[3..], [StatusCode::TOO_MANY_REQUESTS; 2], "{seen:?}");
    let answer = raw(&server, client(1), "POST /api/v1/builds/nope/stop HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after:"), "{answer}");
    // The admin is not limited.
    let (status, _) = server.send(http::Method::POST, "/api/v1/builds/nope/start", true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another client is not either.
    let answer = raw(&server, client(9), "POST /api/v1/builds/nope/stop HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    report(&Row {
        attack: "anonymous actions over the rate limit (3 per client per minute)",
        tried: 8,
        errors_5xx: 0,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: healthz_ok(&server, client(1)).await,
    });
}

#[tokio::test]
async fn with_the_api_server_down_webhooks_answer_503_within_the_budget() {
    let env = env().await;
    // A kubeconfig to a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let kubeconfig = env.dir.path().join("dead-kubeconfig");
    let text = std::fs::read_to_string(&env.kubeconfig).expect("kubeconfig");
    let live = env.sim.kubeconfig("default");
    assert_eq!(text, live);
    let server_line = live
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .expect("a server line")
        .to_owned();
    let dead_line = format!("    server: http://127.0.0.1:{port}");
    std::fs::write(&kubeconfig, live.replace(&server_line, &dead_line)).expect("write");
    let settings = env.settings("");
    let server = Server::start_with(env.dir.path(), &kubeconfig, &settings, &[]).await;
    let push = json!({
        "ref": "refs/heads/16.0",
        "after": "b".repeat(40),
        "repository": {"full_name": "oca/e2e-addons"},
    });
    let started = Instant::now();
    let response =
        server.http.request(at(&server, signed("push", "d-3", &push))).await.expect("answer");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", server.log());
    assert!(response.headers().contains_key("retry-after"));
    assert!(elapsed < Duration::from_secs(9), "answered after {elapsed:?}");
    // Reads say "not ready" rather than an empty list.
    let (status, body) = server.get("/api/v1/builds").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(healthz_ok(&server, client(1)).await);
    report(&Row {
        attack: "a webhook with the API server down (answered 503 within the budget)",
        tried: 3,
        errors_5xx: 3,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: true,
    });
}

#[tokio::test]
async fn without_a_webhook_secret_the_server_refuses_to_start() {
    let env = env().await;
    let text: String = settings_toml("")
        .lines()
        .filter(|l| !l.starts_with("github_webhook_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = env.dir.path().join("unsigned.toml");
    std::fs::write(&path, text).expect("write settings");
    let args = ["--config", path.to_str().expect("utf-8"), "--listen", "127.0.0.1:0"];
    let (ok, err) = run_to_end(env.dir.path(), &env.kubeconfig, &args, None).await;
    assert!(!ok);
    assert!(err.contains("no webhook secret"), "{err}");
    assert!(err.contains("--allow-unsigned-webhooks"), "{err}");
    // An empty secret is no secret.
    let empty = settings_toml("").replace(&format!("\"{SECRET}\""), "\"\"");
    let empty_path = env.dir.path().join("empty-secret.toml");
    std::fs::write(&empty_path, empty).expect("write settings");
    let args = ["--config", empty_path.to_str().expect("utf-8"), "--listen", "127.0.0.1:0"];
    let (ok, err) = run_to_end(env.dir.path(), &env.kubeconfig, &args, None).await;
    assert!(!ok);
    assert!(err.contains("no webhook secret"), "{err}");
    // Explicitly allowed: it starts, and says loudly that it is insecure.
    let server =
        Server::start_with(env.dir.path(), &env.kubeconfig, &path, &["--allow-unsigned-webhooks"])
            .await;
    server.wait_ready().await;
    assert!(server.log().contains("INSECURE"), "{}", server.log());
}

#[tokio::test]
async fn a_body_that_never_comes_is_not_waited_for() {
    let env = env().await;
    let server = start(&env, &["--body-timeout", "1"]).await;
    let tried = 20;
    let mut conns = Vec::new();
    for i in 0..tried {
        let mut c = connect(&server, client(1)).await;
        // 100 MiB announced (over the webhook's limit: refused at once),
        // or 1 MB (under it: the body deadline ends it); 10 bytes sent.
        let length = if i % 2 == 0 { 104_857_600 } else { 1_000_000 };
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nX-GitHub-Event: push\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"ref\": 1"
        );
        c.write_all(head.as_bytes()).await.expect("write");
        conns.push(c);
    }
    let mut errors = 0;
    for c in &mut conns {
        // The deadline firing is the subject: answered (or closed) within
        // 10 s of a 1 s body timeout.
        let (answer, ended) = read_all(c, Duration::from_secs(10)).await;
        assert!(ended, "a connection with a missing body is still open");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
        if answer.starts_with("HTTP/1.1 5") {
            errors += 1;
        }
    }
    report(&Row {
        attack: "webhooks announcing 100 MiB or 1 MB and sending 10 bytes (1 s body timeout)",
        tried,
        errors_5xx: errors,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: healthz_ok(&server, client(1)).await,
    });
}

#[tokio::test]
async fn a_slow_webhook_body_is_answered_within_the_budget() {
    let env = env().await;
    // The general body timeout is long; the webhook's budget is 1 s.
    let server = start(&env, &["--body-timeout", "60", "--webhook-budget", "1"]).await;
    let mut c = connect(&server, client(1)).await;
    c.write_all(
        b"POST /webhooks/github HTTP/1.1\r\nHost: t\r\nX-GitHub-Event: push\r\n\
          Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"ref\": 1",
    )
    .await
    .expect("write");
    let started = Instant::now();
    // The budget firing is the subject: an answer well within 10 s.
    let (answer, _) = read_all(&mut c, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn with_the_api_server_slow_a_full_request_queue_answers_503_within_the_budget() {
    let env = env().await;
    let server = start(&env, &["--webhook-budget", "1", "--max-queued-requests", "2"]).await;
    // Every API call now takes 5 s: the controller's 32 action slots fill
    // with deploys, two more deploys wait in its queue, the rest are refused.
    env.sim.set_latency(Duration::from_secs(5));
    let tried = 40;
    let started = Instant::now();
    let answers = futures::future::join_all((0..tried).map(|i| {
        let push = json!({
            "ref": "refs/heads/16.0",
            "after": format!("{:040x}", i + 1),
            "repository": {"full_name": format!("oca/queue-{i}")},
        });
        server.http.request(at(&server, signed("push", &format!("q-{i}"), &push)))
    }))
    .await;
    let elapsed = started.elapsed();
    let mut accepted = 0;
    let mut refused = 0;
    for answer in answers {
        let answer = answer.expect("answer");
        match answer.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(answer.headers().contains_key("retry-after"));
                refused += 1;
            }
            other => {
                use http_body_util::BodyExt;
                let body = answer.into_body().collect().await.expect("body").to_bytes();
                panic!("unexpected {other}: {}", String::from_utf8_lossy(&body))
            }
        }
    }
    // 32 running and 2 queued at most were taken; the others were told to
    // come back, within the budget (GitHub waits 10 s).
    assert!(accepted <= 34, "{accepted} accepted");
    assert!(refused >= tried - 34, "{refused} refused");
    assert!(elapsed < Duration::from_secs(9), "answered after {elapsed:?}");
    assert!(server.log().contains("request queue full"), "{}", server.log());
    env.sim.set_latency(Duration::ZERO);
    assert!(healthz_ok(&server, client(1)).await);
    report(&Row {
        attack: "40 webhooks with the API server 5 s slow (queue of 2: refused 503 within the budget)",
        tried,
        errors_5xx: refused,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: true,
    });
}

/// Reads from `stream` until what it sent contains `needle` (within `STEP`).
async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let found = tokio::time::timeout(STEP, async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        true
    })
    .await;
    assert_eq!(found, Ok(true), "{needle:?} never came; got {seen:?}");
}

/// Polls the build API until the build of `repo` has `status`: its name.
async fn wait_build(server: &Server, repo: &str, status: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let (_, builds) = server.get(&format!("/api/v1/builds?repo={repo}")).await;
        if let Some(b) = builds.as_array().and_then(|bs| bs.iter().find(|b| b["status"] == status))
        {
            return b["name"].as_str().expect("a name").to_owned();
        }
        assert!(Instant::now() < deadline, "no {status} build of {repo}:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn followers_of_a_log_share_one_upstream_follow() {
    let env = env().await;
    let server = start(&env, &[]).await;
    let push = json!({
        "ref": "refs/heads/16.0",
        "after": "c".repeat(40),
        "repository": {"full_name": "oca/e2e-addons"},
    });
    assert_eq!(server.webhook("push", &push).await, StatusCode::ACCEPTED);
    let name = wait_build(&server, "oca/e2e-addons", "stopped").await;
    let (status, body) =
        server.send(http::Method::POST, &format!("/api/v1/builds/{name}/start"), true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_build(&server, "oca/e2e-addons", "started").await;
    let h = env.sim.handle();
    let pods = h.list("pods", Some("runboat-e2e")).expect("pods");
    let pod = pods
        .iter()
        .find(|p| {
            p.pointer("/metadata/labels/runboat~1build").and_then(serde_json::Value::as_str)
                == Some(name.as_str())
                && p.pointer("/metadata/labels/runboat~1job-kind").is_none()
        })
        .expect("the build's pod");
    let pod_name = pod.pointer("/metadata/name").and_then(serde_json::Value::as_str).expect("name");
    let container = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(serde_json::Value::as_str)
        .expect("a default container");
    h.set_pod_log("runboat-e2e", pod_name, container, "odoo: hello\n");
    let (reads, follows) = h.log_requests();
    // 30 followers, from three clients (16 streams each at most).
    let tried = 30;
    let mut followers = Vec::new();
    for i in 0..tried {
        let mut c = connect(&server, client(20 + (i % 3) as u8)).await;
        let head = format!(
            "GET /api/v1/builds/{name}/log?follow=1 HTTP/1.1\r\nHost: t\r\nAccept: text/plain\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.expect("write");
        let mut seen = String::new();
        read_until(&mut c, &mut seen, "odoo: hello\n").await;
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        followers.push((c, seen));
    }
    // What the log gains reaches every follower.
    h.set_pod_log("runboat-e2e", pod_name, container, "odoo: hello\nodoo: world\n");
    for (c, seen) in &mut followers {
        read_until(c, seen, "odoo: world\n").await;
        assert_eq!(seen.matches("odoo: hello").count(), 1, "{seen}");
    }
    // One follow of the API server for all of them, and no polling.
    let (reads_now, follows_now) = h.log_requests();
    assert_eq!(follows_now - follows, 1);
    assert_eq!(reads_now, reads);
    report(&Row {
        attack: "30 followers of one log (1 upstream follow, 0 reads of the API server)",
        tried,
        errors_5xx: 0,
        peak_rss_mib: rss_kib(&server) as f64 / 1024.0,
        fds: fds(&server),
        answering: healthz_ok(&server, client(1)).await,
    });
}

#[tokio::test]
async fn a_200_character_repo_name_builds_with_valid_host_names() {
    let env = env().await;
    let server = start(&env, &[]).await;
    let repo = format!("oca/{}", "r".repeat(196));
    assert_eq!(repo.len(), 200);
    let push = json!({
        "ref": "refs/heads/16.0",
        "after": "d".repeat(40),
        "repository": {"full_name": repo},
    });
    assert_eq!(server.webhook("push", &push).await, StatusCode::ACCEPTED);
    let name = wait_build(&server, &repo, "stopped").await;
    let ingresses: Vec<_> = env
        .sim
        .handle()
        .list("ingresses", Some("runboat-e2e"))
        .expect("ingresses")
        .into_iter()
        .filter(|i| {
            i.pointer("/metadata/labels/runboat~1build").and_then(serde_json::Value::as_str)
                == Some(name.as_str())
        })
        .collect();
    assert!(!ingresses.is_empty());
    for ingress in &ingresses {
        let rules = ingress.pointer("/spec/rules").and_then(|r| r.as_array()).expect("rules");
        for rule in rules {
            let host = rule["host"].as_str().expect("a host");
            assert!(
                host.split('.').all(|l| !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')),
                "{host}"
            );
        }
    }
    // The build's own page links to that host.
    let (_, build) = server.get(&format!("/api/v1/builds/{name}")).await;
    let link = build["deploy_link"].as_str().expect("a link");
    let host = link.split("://").nth(1).and_then(|r| r.split('/').next()).expect("a host");
    assert!(host.split('.').next().is_some_and(|l| l.len() <= 63), "{link}");
}
