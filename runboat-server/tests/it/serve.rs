//! A real socket: graceful shutdown ends open event streams at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::Harness;

#[tokio::test]
async fn shutdown_closes_event_streams_and_returns_promptly() {
    let h = Harness::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runboat_server::run::serve_until(listener, h.state.clone(), async {
        let _ = stopped.await;
    }));

    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(
            b"GET /api/v1/build-events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut head))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    assert_eq!(h.state.open_event_streams(), 1);

    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops within 5 s")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    // The stream ended: the client reads the end of the chunked body, then EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("EOF within 5 s")
        .expect("read");
    assert_eq!(h.state.open_event_streams(), 0);
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn run_with_cluster_serves_the_controller_and_stops() {
    use std::sync::Arc;

    use runboat_core::Cluster;
    use runboat_core::sim::{SimCluster, SimConfig};

    let sim = SimCluster::new(SimConfig::default());
    let cluster: Arc<dyn Cluster> = Arc::new(sim);
    let settings = (*crate::support::settings()).clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runboat_server::run::run_with_cluster(
        settings,
        cluster,
        runboat_server::ServerOptions::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    // Ready once the controller has the first listing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http_get(addr, "/readyz").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "not ready within 10 s");
        tokio::task::yield_now().await;
    }
    let answer = http_get(addr, "/api/v1/status").await;
    assert!(answer.contains("\"max_deployed\":10"), "{answer}");
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops within 10 s")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_dead_controller_loop_is_noticed() {
    let h = Harness::new().await;
    assert_eq!(h.send(crate::support::get("/readyz")).await.status, http::StatusCode::OK);
    let handle = h.handle.clone();
    let ended = tokio::spawn(async move { runboat_server::run::controller_ended(&handle).await });
    assert!(!ended.is_finished());
    h.handle.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("noticed within 5 s")
        .expect("join");
    let answer = h.send(crate::support::get("/readyz")).await;
    assert_eq!(answer.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.text().contains("controller loop is not running"), "{}", answer.text());
}
