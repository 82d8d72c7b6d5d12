//! `/api/v1` endpoints over the real controller on the simulated cluster.

use std::sync::atomic::Ordering;

use axum::http::{StatusCode, header};
use runboat_core::sim::SimMethod;
use runboat_core::{BuildStatus, ClusterError};
use runboat_github::PullRequestInfo;
use runboat_server::ServerOptions;

use crate::support::{Harness, admin, basic, get, req, sha};

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn status_counts_builds() {
    let h = Harness::new().await;
    h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    h.add("oca/web", "16.0", Some(3), &sha(2), BuildStatus::Stopped, 1).await;
    h.add("oca/web", "16.0", Some(4), &sha(3), BuildStatus::Failed, 2).await;
    h.add("oca/web", "16.0", Some(5), &sha(4), BuildStatus::Initializing, 3).await;
    h.add("oca/web", "16.0", Some(6), &sha(5), BuildStatus::Undeploying, 4).await;
    let a = h.send(get("/api/v1/status")).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["deployed"], 4);
    assert_eq!(v["started"], 1);
    assert_eq!(v["stopped"], 1);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["to_initialize"], 1);
    assert_eq!(v["initializing"], 0);
    assert_eq!(v["undeploying"], 1);
    assert_eq!((v["max_deployed"].as_u64(), v["max_started"].as_u64()), (Some(10), Some(6)));
    assert_eq!(v["max_initializing"], 2);
    assert_eq!((v["pinned"].as_u64(), v["max_pinned"].as_u64()), (Some(0), Some(5)));
    assert_eq!(v.as_object().expect("object").len(), 12);
}

#[tokio::test]
async fn repos_summary_counts_by_status_and_follows_changes() {
    let h = Harness::new().await;
    h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    h.add("oca/web", "16.0", Some(3), &sha(2), BuildStatus::Stopped, 10).await;
    h.add("oca/sale", "16.0", None, &sha(3), BuildStatus::Failed, 5).await;
    let a = h.send(get("/api/v1/repos/summary")).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    let names: Vec<&str> =
        v.as_array().expect("array").iter().map(|r| r["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["oca/web", "oca/sale"], "latest activity first");
    assert_eq!(v[0]["builds"], 2);
    assert_eq!(v[0]["counts"], serde_json::json!({"started": 1, "stopped": 1}));
    assert_eq!(v[0]["last_activity"], "2023-11-14T22:13:30Z");
    assert_eq!(v[1]["counts"], serde_json::json!({"failed": 1}));
    // Asked again after a change: the cached answer is not served stale.
    h.add("oca/sale", "16.0", Some(9), &sha(4), BuildStatus::Stopped, 20).await;
    let v = h.send(get("/api/v1/repos/summary")).await.json();
    assert_eq!(v[0]["name"], "oca/sale");
    assert_eq!(v[0]["counts"], serde_json::json!({"failed": 1, "stopped": 1}));
}

#[tokio::test]
async fn repos_lists_repos_with_links() {
    let h = Harness::new().await;
    h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    h.add("oca/server-tools", "16.0", None, &sha(2), BuildStatus::Started, 0).await;
    let a = h.send(get("/api/v1/repos")).await;
    // The same bytes as ever (fields in this order).
    assert_eq!(
        a.text(),
        r#"[{"link":"https://github.com/oca/server-tools","name":"oca/server-tools"},{"link":"https://github.com/oca/web","name":"oca/web"}]"#
    );
    let v = a.json();
    assert_eq!(
        v,
        serde_json::json!([
            {"name": "oca/server-tools", "link": "https://github.com/oca/server-tools"},
            {"name": "oca/web", "link": "https://github.com/oca/web"},
        ])
    );
}

#[tokio::test]
async fn builds_list_has_spec_fields_and_filters() {
    let h = Harness::new().await;
    let b1 = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    let b2 = h.add("oca/web", "16.0", Some(7), &sha(2), BuildStatus::Stopped, 10).await;
    let b3 = h.add("oca/web", "15.0", None, &sha(3), BuildStatus::Failed, 20).await;
    let b4 = h.add("oca/crm", "16.0", None, &sha(4), BuildStatus::Started, 30).await;

    let all = h.send(get("/api/v1/builds")).await;
    assert_eq!(all.status, StatusCode::OK);
    let all = all.json();
    assert_eq!(all.as_array().expect("array").len(), 4);
    let one =
        all.as_array().expect("array").iter().find(|b| b["name"] == b2.name.as_str()).expect("b2");
    let mut keys: Vec<&str> = one.as_object().expect("obj").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "commit_info",
            "created",
            "deploy_link",
            "deploy_link_mailhog",
            "last_scaled",
            "name",
            "repo_commit_link",
            "repo_pr_link",
            "repo_target_branch_link",
            "status",
            "webui_link"
        ]
    );
    assert_eq!(one["status"], "stopped");
    assert_eq!(one["commit_info"]["pr"], 7);
    assert_eq!(one["repo_pr_link"], "https://github.com/oca/web/pull/7");
    assert_eq!(
        one["webui_link"],
        format!("https://runboat.example.com/builds/{}", b2.name).as_str()
    );
    assert!(one["deploy_link"].as_str().expect("link").ends_with(".runboat.example.com"));

    let web = h.send(get("/api/v1/builds?repo=OCA/Web")).await.json();
    let mut got = names(&web);
    got.sort();
    let mut want = vec![b1.name.clone(), b2.name.clone(), b3.name.clone()];
    want.sort();
    assert_eq!(got, want);

    assert_eq!(
        names(&h.send(get("/api/v1/builds?repo=oca/web&branch=16.0")).await.json()),
        [b1.name.as_str()]
    );
    let mut tb = names(&h.send(get("/api/v1/builds?repo=oca/web&target_branch=16.0")).await.json());
    tb.sort();
    let mut want = vec![b1.name.clone(), b2.name.clone()];
    want.sort();
    assert_eq!(tb, want);
    assert_eq!(names(&h.send(get("/api/v1/builds?pr=7")).await.json()), [b2.name.as_str()]);
    let mut started = names(&h.send(get("/api/v1/builds?status=started")).await.json());
    started.sort();
    let mut want = vec![b1.name.clone(), b4.name.clone()];
    want.sort();
    assert_eq!(started, want);
    assert_eq!(names(&h.send(get("/api/v1/builds?repo=nobody/nothing")).await.json()).len(), 0);
    // Empty values mean "any", as the original's optional parameters.
    assert_eq!(names(&h.send(get("/api/v1/builds?repo=&status=")).await.json()).len(), 4);
}

#[tokio::test]
async fn builds_list_rejects_bad_parameters() {
    let h = Harness::new().await;
    let a = h.send(get("/api/v1/builds?status=running")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.detail().contains("unknown status \"running\""), "{}", a.detail());
    assert!(a.detail().contains("initializing"), "lists the known statuses");
    let a = h.send(get("/api/v1/builds?pr=abc")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.detail().contains("invalid pr \"abc\""), "{}", a.detail());
    assert!(a.content_type().starts_with("application/json"));
    let a = h.send(get("/api/v1/builds?pr=0")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn one_build_and_unknown_build() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    let a = h.send(get(&format!("/api/v1/builds/{}", b.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["name"], b.name.as_str());
    assert_eq!(a.json()["repo_pr_link"], serde_json::Value::Null);
    let a = h.send(get("/api/v1/builds/bnope")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.detail(), "build \"bnope\" not found");
}

#[tokio::test]
async fn start_stop_reset_follow_the_build_state() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let url = |verb: &str| format!("/api/v1/builds/{}/{verb}", b.name);

    let a = h.send(req("POST", &url("start"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.detail(), "start requested");
    h.wait_status(&b.name, Some(BuildStatus::Starting)).await;

    // Starting again: the action does not apply, and is ignored with a 200
    // as the original answers (scripts use `curl -f`).
    let a = h.send(req("POST", &url("start"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.detail(), "start ignored: build is starting");
    assert_eq!(a.json()["ignored"], true);

    let a = h.send(req("POST", &url("stop"))).await;
    assert_eq!(a.status, StatusCode::OK, "stop only from started");
    assert_eq!(a.json()["ignored"], true);
    let started = h.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Started, 1).await;
    let a = h.send(req("POST", &format!("/api/v1/builds/{}/stop", started.name))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    h.wait_status(&started.name, Some(BuildStatus::Stopping)).await;

    let a = h.send(req("POST", &url("reset"))).await;
    assert_eq!(a.status, StatusCode::OK);
    h.wait_status(&b.name, Some(BuildStatus::Initializing)).await;

    for verb in ["start", "stop", "reset"] {
        let a = h.send(req("POST", &format!("/api/v1/builds/bnope/{verb}"))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{verb}");
    }
    // The original leaves them open: no credentials needed by default.
    assert!(h.sim.calls().iter().any(|c| c.build_name == b.name));
}

#[tokio::test]
async fn actions_can_require_admin() {
    let h = Harness::with_options(ServerOptions { admin_for_actions: true, ..Default::default() })
        .await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    for verb in ["start", "stop", "reset"] {
        let a = h.send(req("POST", &format!("/api/v1/builds/{}/{verb}", b.name))).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{verb}");
    }
    assert!(h.sim.calls().is_empty(), "nothing reached the cluster");
    let a = h.send(admin("POST", &format!("/api/v1/builds/{}/start", b.name))).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_endpoints_require_credentials() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let endpoints = [
        ("DELETE", format!("/api/v1/builds/{}", b.name)),
        ("DELETE", "/api/v1/builds?repo=oca/web".to_owned()),
        ("POST", "/api/v1/builds/trigger/branch?repo=oca/web&branch=16.0".to_owned()),
        ("POST", "/api/v1/builds/trigger/pr?repo=oca/web&pr=1".to_owned()),
        ("POST", format!("/api/v1/builds/{}/pin", b.name)),
        ("POST", format!("/api/v1/builds/{}/unpin", b.name)),
    ];
    for (method, uri) in &endpoints {
        for auth in [None, Some(basic("admin", "wrong")), Some(basic("root", "hunter2"))] {
            let mut r = req(method, uri);
            if let Some(auth) = &auth {
                r.headers_mut().insert(header::AUTHORIZATION, auth.parse().expect("header"));
            }
            let a = h.send(r).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {uri} {auth:?}");
            assert_eq!(
                a.headers.get(header::WWW_AUTHENTICATE).expect("challenge"),
                r#"Basic realm="runboat""#
            );
            assert_eq!(a.detail(), "admin credentials required");
        }
    }
    assert!(h.sim.calls().is_empty(), "nothing reached the cluster");
}

#[tokio::test]
async fn undeploy_one_build() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let a = h.send(admin("DELETE", &format!("/api/v1/builds/{}", b.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.detail(), "undeploy requested");
    h.wait_status(&b.name, Some(BuildStatus::Undeploying)).await;
    let a = h.send(admin("DELETE", &format!("/api/v1/builds/{}", b.name))).await;
    assert_eq!(a.status, StatusCode::OK, "already undeploying");
    assert_eq!(a.detail(), "undeploy ignored: build is undeploying");
    assert_eq!(a.json()["ignored"], true);
    let a = h.send(admin("DELETE", "/api/v1/builds/bnope")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn undeploy_matching_takes_precise_filters() {
    let h = Harness::new().await;
    let b1 = h.add("oca/web", "16.0", Some(1), &sha(1), BuildStatus::Stopped, 0).await;
    let b2 = h.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Stopped, 0).await;
    let a = h.send(req("DELETE", "/api/v1/builds")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "admin only");
    let a = h.send(admin("DELETE", "/api/v1/builds?repo=")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "empty filters are no filters");
    let a = h.send(admin("DELETE", "/api/v1/builds?status=bogus")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // A misspelt filter does not widen the undeploy.
    let a = h.send(admin("DELETE", "/api/v1/builds?pr=2&repoo=oca/web")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.detail().contains("unknown field `repoo`"), "{}", a.detail());

    let a = h.send(admin("DELETE", "/api/v1/builds?repo=oca/web&pr=2")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text(), r#"{"count":1,"detail":"undeploying 1 build(s)"}"#);
    h.wait_status(&b2.name, Some(BuildStatus::Undeploying)).await;
    assert_eq!(h.handle.get(&b1.name).expect("b1").status, BuildStatus::Stopped);
}

/// Without a filter, every build, as the original does (admin only).
#[tokio::test]
async fn undeploy_without_a_filter_undeploys_everything_as_the_original() {
    let h = Harness::new().await;
    let b1 = h.add("oca/web", "16.0", Some(1), &sha(1), BuildStatus::Stopped, 0).await;
    let b2 = h.add("oca/crm", "17.0", None, &sha(2), BuildStatus::Failed, 0).await;
    let a = h.send(admin("DELETE", "/api/v1/builds")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["count"], 2);
    h.wait_status(&b1.name, Some(BuildStatus::Undeploying)).await;
    h.wait_status(&b2.name, Some(BuildStatus::Undeploying)).await;
}

/// The original's answers: `GET /builds` leaves out what is null;
/// `GET /builds/{name}` keeps it.
#[tokio::test]
async fn the_list_omits_nulls_and_the_single_build_keeps_them() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    let list = h.send(req("GET", "/api/v1/builds")).await;
    let listed = &list.json()[0];
    assert_eq!(listed["name"], b.name.as_str());
    assert!(listed["commit_info"].get("pr").is_none(), "{listed}");
    assert!(listed.get("repo_pr_link").is_none(), "{listed}");
    assert!(!list.text().contains("null"), "{}", list.text());
    let one = h.send(req("GET", &format!("/api/v1/builds/{}", b.name))).await;
    assert_eq!(one.json()["commit_info"]["pr"], serde_json::Value::Null);
    assert!(one.text().contains(r#""repo_pr_link":null"#), "{}", one.text());
}

/// The original's URLs (bookmarks, old commit statuses) redirect.
#[tokio::test]
async fn the_original_webui_urls_redirect() {
    let h = Harness::new().await;
    for (from, to) in [
        (
            "/webui/builds.html?repo=oca/web&target_branch=16.0",
            "/builds?repo=oca/web&target_branch=16.0",
        ),
        ("/webui/builds.html", "/builds"),
        ("/webui/build.html?name=b1a2b3", "/builds/b1a2b3"),
        ("/webui/build.html?live&name=b1a2b3", "/builds/b1a2b3?live"),
        ("/webui/", "/"),
        ("/webui/index.html", "/"),
    ] {
        let a = h.send(req("GET", from)).await;
        assert_eq!(a.status, StatusCode::PERMANENT_REDIRECT, "{from}");
        assert_eq!(a.headers["location"], to, "{from}");
    }
    for bad in ["/webui/build.html", "/webui/build.html?name=", "/webui/build.html?name=..%2Fx"] {
        let a = h.send(req("GET", bad)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn trigger_branch_looks_the_head_up() {
    let h = Harness::new().await;
    h.github.branches.lock().expect("lock").insert(("oca/web".into(), "16.0".into()), sha(9));
    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=OCA/web&branch=16.0")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let name = a.json()["name"].as_str().expect("name").to_owned();
    let b = h.wait_status(&name, None).await;
    assert_eq!(b.commit_info.git_commit(), sha(9));
    assert_eq!(b.commit_info.pr(), None);

    // Same commit again: nothing new, says so.
    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=oca/web&branch=16.0")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.detail().contains("already deployed"), "{}", a.detail());

    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=oca/web&branch=17.0")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.detail().contains("not found on GitHub"), "{}", a.detail());

    // The controller, the one place that checks the settings, refuses it.
    h.github.branches.lock().expect("lock").insert(("oca/web".into(), "main".into()), sha(10));
    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=oca/web&branch=main")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.detail(), "repo oca/web branch main is not supported by the settings");

    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=oca/web")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.detail(), "missing parameter branch");

    h.github.down.store(true, Ordering::SeqCst);
    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=oca/web&branch=16.0")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(a.detail().starts_with("GitHub lookup failed"), "{}", a.detail());
}

#[tokio::test]
async fn trigger_pr_looks_the_head_up() {
    let h = Harness::new().await;
    h.github.prs.lock().expect("lock").insert(
        ("oca/web".into(), 42),
        PullRequestInfo { base_branch: "16.0".into(), head_sha: sha(8), open: true },
    );
    h.github.prs.lock().expect("lock").insert(
        ("oca/web".into(), 43),
        PullRequestInfo { base_branch: "master".into(), head_sha: sha(7), open: true },
    );
    let a = h.send(admin("POST", "/api/v1/builds/trigger/pr?repo=oca/web&pr=42")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let name = a.json()["name"].as_str().expect("name").to_owned();
    let b = h.wait_status(&name, None).await;
    assert_eq!(b.commit_info.pr(), Some(42));
    assert_eq!(b.commit_info.target_branch(), "16.0");

    let a = h.send(admin("POST", "/api/v1/builds/trigger/pr?repo=oca/web&pr=43")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "base branch not supported");
    let a = h.send(admin("POST", "/api/v1/builds/trigger/pr?repo=oca/web&pr=44")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.send(admin("POST", "/api/v1/builds/trigger/pr?repo=oca/web&pr=x")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    h.github.down.store(true, Ordering::SeqCst);
    let a = h.send(admin("POST", "/api/v1/builds/trigger/pr?repo=oca/web&pr=42")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(start_paused = true)]
async fn logs_render_ansi_or_plain_text() {
    // Initialization runs here: the init job's log is what the sim writes
    // (`\x1b[32mINFO\x1b[0m initializing <name>`).
    let h = Harness::moving().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Initializing, 0).await;
    let has_init_job = |h: &runboat_core::ControllerHandle| {
        h.with_index(|i| i.get(&b.name).map(|b| b.init_status))
            .filter(|s| *s == runboat_core::InitStatus::Started)
    };
    h.wait_for(has_init_job).await.expect("init job started");
    let a = h.send(get(&format!("/api/v1/builds/{}/init-log", b.name))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.content_type().starts_with("text/html"));
    let html = a.text();
    assert!(html.contains(">INFO</span> initializing"), "{html}");
    assert!(!html.contains('\u{1b}'));

    let mut r = get(&format!("/api/v1/builds/{}/init-log", b.name));
    r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
    let a = h.send(r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type().starts_with("text/plain"));
    assert_eq!(a.text(), format!("INFO initializing {}\n", b.name));

    // A terminal client asks to keep the colours.
    let mut r = get(&format!("/api/v1/builds/{}/init-log?ansi=1", b.name));
    r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
    let a = h.send(r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text(), format!("\u{1b}[32mINFO\u{1b}[0m initializing {}\n", b.name));
    let mut r = get(&format!("/api/v1/builds/{}/init-log?ansi=0", b.name));
    r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
    assert_eq!(h.send(r).await.text(), format!("INFO initializing {}\n", b.name));

    // No running log: the build does not run.
    let a = h.send(get(&format!("/api/v1/builds/{}/log", b.name))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.detail(), format!("no log for build {:?}", b.name));
    let started = h.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Started, 1).await;
    let a = h.send(get(&format!("/api/v1/builds/{}/log", started.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains(&format!("odoo serving {}", started.name)));

    let a = h.send(get("/api/v1/builds/bnope/log")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.detail(), "build \"bnope\" not found");
}

#[tokio::test]
async fn controller_failures_are_generic_500s() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Stopped, 0).await;
    // The cluster refuses what is applied (not retried).
    let refused = ClusterError::Invalid("admission webhook: connection refused".into());
    h.sim.fail_next(SimMethod::ApplyKubefiles, 100, refused);
    let a = h.send(req("POST", &format!("/api/v1/builds/{}/start", b.name))).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.detail(), "internal server error");
    assert!(!a.text().contains("connection refused"), "the cause is logged, not shown");
}

#[tokio::test]
async fn unknown_paths_are_json_404s() {
    let h = Harness::new().await;
    let a = h.send(get("/api/v1/nothing")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.detail(), "not found");
}

#[tokio::test]
async fn health_ready_metrics_openapi() {
    let h = Harness::new().await;
    h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    assert_eq!(h.send(get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(h.send(get("/readyz")).await.status, StatusCode::OK);

    let app = h.app();
    crate::support::send(app.clone(), get("/api/v1/status")).await;
    let m = crate::support::send(app, get("/metrics")).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.text();
    assert!(text.contains("runboat_builds{status=\"started\"} 1"), "{text}");
    assert!(text.contains("runboat_init_queue_length 0"));
    assert!(text.contains("runboat_ready 1"));
    assert!(text.contains(
        "runboat_http_requests_total{method=\"GET\",route=\"/api/v1/status\",status=\"200\"} 1"
    ));
    assert!(text.contains("# TYPE runboat_controller_batches_total counter\n"), "{text}");
    assert!(text.contains("runboat_cleanup_failures 0\n"), "{text}");

    let doc = h.send(get("/api/v1/openapi.json")).await.json();
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    for path in [
        "/api/v1/status",
        "/api/v1/repos",
        "/api/v1/builds",
        "/api/v1/builds/trigger/branch",
        "/api/v1/builds/trigger/pr",
        "/api/v1/builds/{name}",
        "/api/v1/builds/{name}/init-log",
        "/api/v1/builds/{name}/log",
        "/api/v1/builds/{name}/start",
        "/api/v1/builds/{name}/stop",
        "/api/v1/builds/{name}/reset",
        "/api/v1/build-events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test(start_paused = true)]
async fn follow_streams_the_log_until_the_build_stops() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let h = Harness::moving().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    let mut r = get(&format!("/api/v1/builds/{}/log?follow", b.name));
    r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
    let resp = h.app().oneshot(r).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut next = async || {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(60), body.frame())
            .await
            .expect("a chunk within 60 s");
        frame.map(|f| {
            String::from_utf8(f.expect("ok").into_data().expect("data").to_vec()).expect("utf-8")
        })
    };
    assert_eq!(next().await, Some(format!("odoo serving {}\n", b.name)));
    let a = h.send(req("POST", &format!("/api/v1/builds/{}/stop", b.name))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(next().await.as_deref(), Some("\n--- build is stopped ---\n"));
    assert_eq!(next().await, None);
}

#[tokio::test(start_paused = true)]
async fn follow_in_html_ends_when_the_build_goes() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    // Init jobs stay pending; an undeployed build goes at once (no cleanup
    // job).
    let settings = crate::support::settings_with("no_cleanup_job = true");
    let sim = crate::support::still();
    let h = Harness::build(settings, sim, ServerOptions::default()).await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Initializing, 0).await;
    let resp = h
        .app()
        .oneshot(get(&format!("/api/v1/builds/{}/init-log?follow=1", b.name)))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK, "no log yet is fine when following");
    let a = h.send(admin("DELETE", &format!("/api/v1/builds/{}", b.name))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let body = tokio::time::timeout(std::time::Duration::from_secs(60), resp.into_body().collect())
        .await
        .expect("ends within 60 s")
        .expect("body")
        .to_bytes();
    let html = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("--- build undeployed ---"), "{html}");
    assert!(html.trim_end().ends_with("</html>"), "{html}");
}

/// The simulated cluster, except that the Deployment watch never delivers
/// its first listing: the controller never gets ready.
struct NeverListed(runboat_core::sim::SimCluster);

#[async_trait::async_trait]
impl runboat_core::Cluster for NeverListed {
    fn deployment_events(
        &self,
    ) -> futures::stream::BoxStream<
        'static,
        runboat_core::ClusterEvent<runboat_core::DeploymentFacts>,
    > {
        Box::pin(futures::stream::pending())
    }

    fn job_events(
        &self,
    ) -> futures::stream::BoxStream<'static, runboat_core::ClusterEvent<runboat_core::JobFacts>>
    {
        self.0.job_events()
    }

    async fn apply_kubefiles(
        &self,
        build_name: &str,
        commit: &runboat_core::CommitInfo,
        mode: runboat_core::KubefilesMode,
    ) -> runboat_core::ClusterResult<()> {
        self.0.apply_kubefiles(build_name, commit, mode).await
    }

    async fn scale(&self, build_name: &str, replicas: i32) -> runboat_core::ClusterResult<()> {
        self.0.scale(build_name, replicas).await
    }

    async fn set_init_status(
        &self,
        build_name: &str,
        status: runboat_core::InitStatus,
    ) -> runboat_core::ClusterResult<()> {
        self.0.set_init_status(build_name, status).await
    }

    async fn delete_deployment(&self, build_name: &str) -> runboat_core::ClusterResult<()> {
        self.0.delete_deployment(build_name).await
    }

    async fn remove_finalizer(&self, build_name: &str) -> runboat_core::ClusterResult<()> {
        self.0.remove_finalizer(build_name).await
    }

    async fn kill_jobs(
        &self,
        build_name: &str,
        kind: runboat_core::JobKind,
    ) -> runboat_core::ClusterResult<()> {
        self.0.kill_jobs(build_name, kind).await
    }

    async fn delete_build_resources(&self, build_name: &str) -> runboat_core::ClusterResult<()> {
        self.0.delete_build_resources(build_name).await
    }

    async fn init_log(&self, build_name: &str) -> runboat_core::ClusterResult<Option<String>> {
        self.0.init_log(build_name).await
    }

    async fn log(&self, build_name: &str) -> runboat_core::ClusterResult<Option<String>> {
        self.0.log(build_name).await
    }

    async fn get_deployment(
        &self,
        build_name: &str,
    ) -> runboat_core::ClusterResult<Option<runboat_core::DeploymentFacts>> {
        self.0.get_deployment(build_name).await
    }
}

#[tokio::test]
async fn not_ready_before_the_first_cluster_listing() {
    use std::sync::Arc;

    let sim = runboat_core::sim::SimCluster::new(runboat_core::sim::SimConfig::default());
    let cluster: Arc<dyn runboat_core::Cluster> = Arc::new(NeverListed(sim));
    let handle = runboat_core::Controller::spawn(
        cluster,
        Arc::new(runboat_core::forge::NoForge),
        crate::support::settings(),
        runboat_core::ControllerConfig::default(),
    );
    let state = runboat_server::AppState::new(handle.clone(), None, ServerOptions::default());
    let app = runboat_server::app(state);
    let a = crate::support::send(app.clone(), get("/readyz")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.text(), "waiting for the first cluster listing");
    // Reads say "not ready" rather than an empty list.
    for uri in [
        "/api/v1/builds",
        "/api/v1/status",
        "/api/v1/repos",
        "/api/v1/builds/x",
        "/api/v1/build-events",
    ] {
        let a = crate::support::send(app.clone(), get(uri)).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(a.detail().starts_with("not ready"), "{uri}: {}", a.detail());
        assert_eq!(a.headers[header::RETRY_AFTER], "1", "{uri}");
    }
    let m = crate::support::send(app, get("/metrics")).await.text();
    assert!(m.contains("runboat_ready 0\n"), "{m}");
    handle.shutdown().await;
}

#[tokio::test]
async fn triggers_without_a_github_client_say_what_is_missing() {
    let h = Harness::new().await;
    let state = runboat_server::AppState::new(h.handle.clone(), None, ServerOptions::default());
    for uri in [
        "/api/v1/builds/trigger/branch?repo=oca/web&branch=16.0",
        "/api/v1/builds/trigger/pr?repo=oca/web&pr=1",
    ] {
        let a = crate::support::send(runboat_server::app(state.clone()), admin("POST", uri)).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(a.detail().contains("no GitHub client"), "{}", a.detail());
    }
}

#[tokio::test(start_paused = true)]
async fn followers_of_a_log_share_one_poll_loop() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let h = Harness::moving().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    let uri = format!("/api/v1/builds/{}/log?follow", b.name);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let mut r = get(&uri);
        r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
        let resp = h.app().oneshot(r).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        bodies.push(resp.into_body());
    }
    assert_eq!(h.state.log_feeds().running(), 1);
    for body in &mut bodies {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(60), body.frame())
            .await
            .expect("a chunk within 60 s")
            .expect("a frame")
            .expect("ok");
        let text = String::from_utf8(frame.into_data().expect("data").to_vec()).expect("utf-8");
        assert_eq!(text, format!("odoo serving {}\n", b.name));
    }
    // The last follower gone, the loop ends at its next poll.
    drop(bodies);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.state.log_feeds().running() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the poll loop never ended");
        tokio::time::sleep(runboat_server::logs::FOLLOW_REOPEN).await;
    }
}

#[tokio::test]
async fn a_log_answer_is_bounded_and_more_can_be_asked() {
    let h = Harness::new().await;
    let b = h.add("oca/web", "16.0", None, &sha(1), BuildStatus::Started, 0).await;
    let mut r = get(&format!("/api/v1/builds/{}/log?tail_bytes=4", b.name));
    r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
    let a = h.send(r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().starts_with("--- "), "{}", a.text());
    assert!(a.text().contains("earlier lines left out"), "{}", a.text());
    let mut r = get(&format!("/api/v1/builds/{}/log?tail_bytes=100000", b.name));
    r.headers_mut().insert(header::ACCEPT, "text/plain".parse().expect("header"));
    let a = h.send(r).await;
    assert_eq!(a.text(), format!("odoo serving {}\n", b.name));
    for bad in ["x", "", "0", "16777217"] {
        let a =
            h.send(get(&format!("/api/v1/builds/{}/log?follow=1&tail_bytes={bad}", b.name))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_waits_too_long_answers_503() {
    let h = Harness::new().await;
    h.github.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let a = h.send(admin("POST", "/api/v1/builds/trigger/branch?repo=oca/web&branch=16.0")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    // The paused clock jumped to the timeout, not beyond.
    let waited = started.elapsed();
    let timeout = runboat_server::limits::Limits::default().request_timeout;
    assert!(waited >= timeout && waited < timeout * 2, "{waited:?}");
}

#[tokio::test]
async fn pin_and_unpin_within_max_pinned() {
    let settings = crate::support::settings_with("max_pinned = 1");
    let h = Harness::build(settings, crate::support::still(), ServerOptions::default()).await;
    let b1 = h.add("oca/web", "16.0", Some(1), &sha(1), BuildStatus::Stopped, 0).await;
    let b2 = h.add("oca/web", "16.0", Some(2), &sha(2), BuildStatus::Started, 1).await;
    let pinned = |name: &str| {
        let name = name.to_owned();
        move |c: &runboat_core::ControllerHandle| c.get(&name).filter(|b| b.pinned)
    };

    let a = h.send(admin("POST", &format!("/api/v1/builds/{}/pin", b1.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.detail(), "pin requested");
    h.wait_for(pinned(&b1.name)).await.expect("b1 pinned");
    assert_eq!(
        h.sim.deployment(&b1.name).and_then(|d| d.annotations.get("runboat/pinned").cloned()),
        Some("true".to_owned()),
        "stored in the cluster"
    );
    let got = h.send(get(&format!("/api/v1/builds/{}", b1.name))).await.json();
    assert_eq!(got["pinned"], true);
    let listed = h.send(get("/api/v1/builds")).await.json();
    let listed = listed.as_array().expect("array");
    let of = |name: &str| listed.iter().find(|b| b["name"] == name).expect("listed");
    assert_eq!(of(&b1.name)["pinned"], true);
    assert!(of(&b2.name).get("pinned").is_none(), "omitted when false");
    let v = h.send(get("/api/v1/status")).await.json();
    assert_eq!((v["pinned"].as_u64(), v["max_pinned"].as_u64()), (Some(1), Some(1)));
    let metrics = h.send(get("/metrics")).await.text();
    assert!(metrics.contains("\nrunboat_pinned_builds 1\n"), "{metrics}");
    assert!(metrics.contains("\nrunboat_idle_stops_total 0\n"), "{metrics}");

    // Again: done at once. Another: over max_pinned, 409 with the limit.
    let a = h.send(admin("POST", &format!("/api/v1/builds/{}/pin", b1.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h.send(admin("POST", &format!("/api/v1/builds/{}/pin", b2.name))).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(
        a.detail().contains("max_pinned = 1") && a.detail().contains("unpin one"),
        "{}",
        a.detail()
    );
    let a = h.send(admin("POST", "/api/v1/builds/bnope/pin")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.send(req("GET", &format!("/api/v1/builds/{}/pin", b1.name))).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);

    // Unpinned, the other one can be pinned.
    let a = h.send(admin("POST", &format!("/api/v1/builds/{}/unpin", b1.name))).await;
    assert_eq!((a.status, a.detail()), (StatusCode::OK, "unpin requested".to_owned()));
    h.wait_for(|c| c.get(&b1.name).filter(|b| !b.pinned)).await.expect("b1 unpinned");
    assert!(
        h.sim.deployment(&b1.name).is_some_and(|d| !d.annotations.contains_key("runboat/pinned"))
    );
    let a = h.send(admin("POST", &format!("/api/v1/builds/{}/pin", b2.name))).await;
    assert_eq!(a.status, StatusCode::OK);
    h.wait_for(pinned(&b2.name)).await.expect("b2 pinned");
}
