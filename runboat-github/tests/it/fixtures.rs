//! Real-shaped GitHub payloads (tests/fixtures/) and the action each maps
//! to; malformed bodies and their typed errors.

use proptest::prelude::*;
use runboat_core::CommitInfo;
use runboat_github::PayloadError;
use runboat_github::webhook::{MAX_BODY_BYTES, WebhookAction, parse};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn deploy(target_branch: &str, pr: Option<u64>, git_commit: &str) -> WebhookAction {
    let commit = CommitInfo::new("oca/server-tools", target_branch, pr, git_commit);
    WebhookAction::Deploy(commit.expect("valid commit"))
}

fn reason_of(action: WebhookAction) -> String {
    match action {
        WebhookAction::Ignored { reason } => reason,
        other => panic!("expected Ignored, got {other:?}"),
    }
}

#[test]
fn push_to_a_supported_branch_deploys_the_pushed_commit() {
    let action = parse("push", &fixture("push.json")).expect("valid");
    assert_eq!(action, deploy("16.0", None, "b2a4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9"));
}

#[test]
fn push_creating_a_branch_deploys_its_head() {
    // Whether the branch is supported is the controller's call, not the
    // parser's.
    let body = fixture("push_branch_created.json");
    let action = parse("push", &body).expect("valid");
    assert_eq!(
        action,
        deploy("17.0-mig-base_technical_user", None, "c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1")
    );
}

#[test]
fn branch_delete_undeploys_the_branch() {
    let action = parse("push", &fixture("push_branch_deleted.json")).expect("valid");
    assert_eq!(
        action,
        WebhookAction::UndeployBranch {
            repo: "oca/server-tools".into(),
            branch: "16.0-fix-recursion".into()
        }
    );
}

#[test]
fn tag_push_is_ignored_because_it_is_a_tag() {
    let reason = reason_of(parse("push", &fixture("push_tag.json")).expect("valid"));
    assert!(reason.contains("tag refs/tags/16.0.1.0.0"), "{reason}");
}

#[test]
fn all_zero_sha_without_delete_is_ignored() {
    let mut push: serde_json::Value =
        serde_json::from_slice(&fixture("push.json")).expect("fixture is JSON");
    push["after"] = "0".repeat(40).into();
    let reason = reason_of(parse("push", push.to_string().as_bytes()).expect("valid"));
    assert!(reason.contains("all-zero sha"), "{reason}");
}

#[test]
fn pull_request_opened_synchronize_reopened_deploy_the_head_on_the_base_branch() {
    for (name, sha) in [
        ("pull_request_opened.json", "d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2"),
        ("pull_request_synchronize.json", "f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e"),
        ("pull_request_reopened.json", "f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e"),
    ] {
        let action = parse("pull_request", &fixture(name)).expect(name);
        // The target branch is the base (17.0), not the head branch.
        assert_eq!(action, deploy("17.0", Some(2891), sha), "{name}");
    }
}

#[test]
fn pull_request_closed_merged_or_not_undeploys_the_pr() {
    for name in ["pull_request_closed_merged.json", "pull_request_closed_unmerged.json"] {
        let action = parse("pull_request", &fixture(name)).expect(name);
        assert_eq!(
            action,
            WebhookAction::UndeployPr { repo: "oca/server-tools".into(), pr: 2891 },
            "{name}"
        );
    }
}

#[test]
fn pull_request_labeled_is_ignored_because_it_changes_no_build() {
    let reason =
        reason_of(parse("pull_request", &fixture("pull_request_labeled.json")).expect("valid"));
    assert!(reason.contains("action `labeled`"), "{reason}");
}

#[test]
fn ping_is_acknowledged() {
    assert_eq!(parse("ping", &fixture("ping.json")).expect("valid"), WebhookAction::Ping);
}

#[test]
fn other_events_are_ignored_because_not_handled() {
    let reason = reason_of(parse("issue_comment", &fixture("issue_comment.json")).expect("ok"));
    assert_eq!(reason, "event `issue_comment` is not handled");
}

#[test]
fn wrong_types_are_shape_errors() {
    let push: serde_json::Value =
        serde_json::from_slice(&fixture("push.json")).expect("fixture is JSON");
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("after", serde_json::json!(12345)),
        ("deleted", serde_json::json!("yes")),
        ("ref", serde_json::Value::Null),
        ("repository", serde_json::json!("OCA/server-tools")),
    ];
    for (field, value) in cases {
        let mut body = push.clone();
        body[field] = value;
        let error = parse("push", body.to_string().as_bytes()).expect_err("wrong type must fail");
        assert!(matches!(error, PayloadError::Shape { .. }), "{field}: {error:?}");
        let text = runboat_github::error_chain(&error);
        assert!(text.contains("invalid type"), "{field}: {text}");
    }
    let mut pr: serde_json::Value =
        serde_json::from_slice(&fixture("pull_request_opened.json")).expect("fixture is JSON");
    pr["number"] = "2891".into();
    let error = parse("pull_request", pr.to_string().as_bytes()).expect_err("string");
    assert!(matches!(error, PayloadError::Shape { .. }), "{error:?}");
}

#[test]
fn missing_fields_are_shape_errors_naming_the_field() {
    for (name, event, field) in [
        ("push.json", "push", "ref"),
        ("push.json", "push", "after"),
        ("push.json", "push", "repository"),
        ("pull_request_opened.json", "pull_request", "action"),
        ("pull_request_opened.json", "pull_request", "pull_request"),
    ] {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture(name)).expect("fixture is JSON");
        body.as_object_mut().expect("object").remove(field);
        let error = parse(event, body.to_string().as_bytes()).expect_err(field);
        assert!(matches!(error, PayloadError::Shape { .. }), "{field}: {error:?}");
        let text = runboat_github::error_chain(&error);
        assert!(text.contains(&format!("missing field `{field}`")), "{text}");
    }
}

#[test]
fn not_json_is_a_syntax_error() {
    for body in [&b"<html>"[..], b"{\"ref\": refs}", b"", b"\xff\xfe"] {
        let error = parse("push", body).expect_err("not JSON");
        assert!(
            matches!(error, PayloadError::Syntax { .. } | PayloadError::Truncated { .. }),
            "{error:?}"
        );
    }
    let error = parse("ping", b"}{").expect_err("not JSON");
    assert!(matches!(error, PayloadError::Syntax { .. }), "{error:?}");
}

#[test]
fn ten_megabyte_bodies_are_refused() {
    let mut body = fixture("push.json");
    body.resize(10 * 1024 * 1024, b' ');
    for event in ["push", "pull_request", "ping", "issues"] {
        let error = parse(event, &body).expect_err("too large");
        assert!(
            matches!(error, PayloadError::TooLarge { size, limit } if size == body.len() && limit == MAX_BODY_BYTES),
            "{error:?}"
        );
    }
}

const FIXTURES: &[(&str, &str)] = &[
    ("push.json", "push"),
    ("push_branch_created.json", "push"),
    ("push_branch_deleted.json", "push"),
    ("push_tag.json", "push"),
    ("pull_request_opened.json", "pull_request"),
    ("pull_request_synchronize.json", "pull_request"),
    ("pull_request_reopened.json", "pull_request"),
    ("pull_request_closed_merged.json", "pull_request"),
    ("pull_request_closed_unmerged.json", "pull_request"),
    ("pull_request_labeled.json", "pull_request"),
    ("ping.json", "ping"),
    ("issue_comment.json", "issue_comment"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_truncation_of_a_fixture_is_a_truncated_error(
        index in 0..FIXTURES.len(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (name, event) = FIXTURES[index];
        let body = fixture(name);
        let trimmed = body.trim_ascii_end();
        let cut = cut.index(trimmed.len());
        let error = parse(event, &trimmed[..cut]).expect_err("truncated");
        prop_assert!(matches!(error, PayloadError::Truncated { .. }), "{}: {:?}", name, error);
    }

    #[test]
    fn corrupting_a_fixture_never_panics(
        index in 0..FIXTURES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (name, event) = FIXTURES[index];
        let mut body = fixture(name);
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let _ = parse(event, &body);
    }
}
