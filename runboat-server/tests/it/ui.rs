//! Web UI pages and assets.

use axum::http::{StatusCode, header};
use runboat_core::BuildStatus;

use crate::support::{Harness, get, sha};

#[tokio::test]
async fn pages_and_assets_are_served_from_the_binary() {
    let h = Harness::new().await;
    for uri in ["/", "/builds?repo=oca/web", "/builds?repo=oca/web&branch=16.0", "/builds"] {
        let a = h.send(get(uri)).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert!(a.content_type().starts_with("text/html"), "{uri}");
        let html = a.text();
        assert!(html.contains("/static/app.js") && html.contains("/static/style.css"));
        assert!(html.contains("<b>footer-marker</b>"), "additional footer html");
        assert!(!html.contains("http://") && !html.contains("https://"), "no CDN: {uri}");
    }
    let a = h.send(get("/builds?repo=%3Cscript%3E")).await;
    assert!(!a.text().contains("<script>"), "titles are escaped");
    let js = h.send(get("/static/app.js")).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.content_type().starts_with("text/javascript"));
    assert!(js.text().contains("EventSource"));
    let css = h.send(get("/static/style.css")).await;
    assert!(css.content_type().starts_with("text/css"));
    assert!(css.text().contains(".status-started"));
    assert_eq!(h.send(get("/static/other.js")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn build_page_and_live_redirect() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let a = h.send(get(&format!("/builds/{}", b.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains(&format!("data-build=\"{}\"", b.name)));

    // Not started: ?live shows the page (which waits for the start).
    let a = h.send(get(&format!("/builds/{}?live", b.name))).await;
    assert_eq!(a.status, StatusCode::OK);

    let b = h.add("oca/web", "16.0", None, &sha(11), BuildStatus::Started, 1).await;
    let a = h.send(get(&format!("/builds/{}?live", b.name))).await;
    assert_eq!(a.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        a.headers.get(header::LOCATION).expect("location"),
        format!("http://oca-web-16-0-{}.runboat.example.com", &sha(11)[..12]).as_str()
    );
    // Without ?live, no redirect.
    assert_eq!(h.send(get(&format!("/builds/{}", b.name))).await.status, StatusCode::OK);

    let a = h.send(get("/builds/bnope?live")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.text().contains("does not exist"));
}
