//! `POST /webhooks/github` with signed bodies.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runboat_core::BuildStatus;
use runboat_github::WebhookSecret;
use serde_json::json;

use crate::support::{Answer, Harness, sha};

fn delivery(event: &str, body: &[u8], signature: Option<String>) -> Request<Body> {
    let mut r = Request::post("/webhooks/github")
        .header("X-GitHub-Event", event)
        .header("content-type", "application/json");
    if let Some(sig) = signature {
        r = r.header("X-Hub-Signature-256", sig);
    }
    r.body(Body::from(body.to_vec())).expect("request")
}

async fn signed(h: &Harness, event: &str, payload: serde_json::Value) -> Answer {
    let body = serde_json::to_vec(&payload).expect("json");
    let sig = WebhookSecret::new("whsecret").sign(&body);
    h.send(delivery(event, &body, Some(sig))).await
}

fn push(repo: &str, branch: &str, after: &str, deleted: bool) -> serde_json::Value {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "after": after,
        "deleted": deleted,
        "repository": {"full_name": repo},
    })
}

fn pull_request(
    action: &str,
    repo: &str,
    number: u64,
    base: &str,
    head: &str,
) -> serde_json::Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "base": {"ref": base},
            "head": {"sha": head},
        },
        "repository": {"full_name": repo},
    })
}

#[tokio::test]
async fn push_deploys_the_commit() {
    let h = Harness::new().await;
    let a = signed(&h, "push", push("OCA/web", "16.0", &sha(5), false)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert!(a.detail().starts_with("deploying build "), "{}", a.detail());
    let name = a.detail().trim_start_matches("deploying build ").to_owned();
    h.wait_status(&name, None).await;
    let builds: Vec<runboat_core::Build> =
        h.handle.with_index(|index| index.iter().cloned().collect());
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].commit_info.repo(), "oca/web");
    assert_eq!(builds[0].commit_info.git_commit(), sha(5));
    // A redelivery: accepted as a no-op.
    let a = signed(&h, "push", push("OCA/web", "16.0", &sha(5), false)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.detail().contains("already deployed"), "{}", a.detail());
}

#[tokio::test]
async fn pull_request_opened_and_closed() {
    let h = Harness::new().await;
    let a =
        signed(&h, "pull_request", pull_request("opened", "oca/web", 12, "16.0", &sha(6))).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let name = a.detail().trim_start_matches("deploying build ").to_owned();
    h.wait_status(&name, None).await;
    let a =
        signed(&h, "pull_request", pull_request("closed", "oca/web", 12, "16.0", &sha(6))).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert!(a.detail().contains("undeploying 1 build(s) of oca/web PR 12"), "{}", a.detail());
    h.wait_status(&name, Some(BuildStatus::Undeploying)).await;
}

#[tokio::test]
async fn branch_deletion_undeploys_its_builds() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let pr = h.add("oca/web", "16.0", Some(3), &sha(2), BuildStatus::Stopped, 0).await;
    let a = signed(&h, "push", push("oca/web", "16.0", &"0".repeat(40), true)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    h.wait_status(&b.name, Some(BuildStatus::Undeploying)).await;
    let pr = h.handle.get(&pr.name).expect("pr");
    assert_eq!(pr.status, BuildStatus::Stopped, "PRs are kept");
}

#[tokio::test]
async fn ping_and_ignored_events_are_200() {
    let h = Harness::new().await;
    let a = signed(&h, "ping", json!({"zen": "Keep it logically awesome."})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.detail(), "pong");
    let a = signed(&h, "issues", json!({"action": "opened"})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.detail().starts_with("ignored"), "{}", a.detail());
    // Unsupported branch (the controller says so): ignored, not deployed.
    let a = signed(&h, "push", push("oca/web", "main", &sha(1), false)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.detail(), "ignored: repo oca/web branch main is not supported by the settings");
    assert!(h.sim.calls().is_empty(), "nothing reached the cluster");
    assert_eq!(h.handle.with_index(|index| index.len()), 0);
}

#[tokio::test]
async fn bad_signatures_are_401() {
    let h = Harness::new().await;
    let body = serde_json::to_vec(&push("oca/web", "16.0", &sha(1), false)).expect("json");
    let a = h.send(delivery("push", &body, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.detail().contains("missing X-Hub-Signature-256"), "{}", a.detail());
    assert!(a.headers.get("www-authenticate").is_none(), "no Basic challenge for webhooks");
    let wrong = WebhookSecret::new("other").sign(&body);
    let a = h.send(delivery("push", &body, Some(wrong))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = h.send(delivery("push", &body, Some("sha256=zz".into()))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Signed, then tampered with.
    let sig = WebhookSecret::new("whsecret").sign(&body);
    let mut tampered = body.clone();
    tampered[5] ^= 1;
    let a = h.send(delivery("push", &tampered, Some(sig))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(h.sim.calls().is_empty());
}

#[tokio::test]
async fn malformed_and_oversized_deliveries() {
    let h = Harness::new().await;
    let body = b"{not json";
    let sig = WebhookSecret::new("whsecret").sign(body);
    let a = h.send(delivery("push", body, Some(sig))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.detail().contains("not valid JSON") || a.detail().contains("truncated"),
        "{}",
        a.detail()
    );

    let body = br#"{"ref": "refs/heads/16.0"}"#;
    let sig = WebhookSecret::new("whsecret").sign(body);
    let a = h.send(delivery("push", body, Some(sig))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let r = Request::post("/webhooks/github").body(Body::from("{}")).expect("request");
    let a = h.send(r).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.detail(), "missing X-GitHub-Event header");

    let big = vec![b' '; runboat_github::webhook::MAX_BODY_BYTES + 10];
    let a = h.send(delivery("push", &big, Some("sha256=00".into()))).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.detail().contains("limit"), "{}", a.detail());
}
