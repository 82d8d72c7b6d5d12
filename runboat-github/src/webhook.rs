//! Webhook parsing: a GitHub event name (`X-GitHub-Event`) and its JSON
//! body become one typed [`WebhookAction`].
//!
//! Rules:
//! - `push` to `refs/heads/<branch>` deploys the pushed commit (`after`);
//!   with `deleted: true` it undeploys the branch's builds; tag pushes,
//!   other refs and the all-zero sha are ignored.
//! - `pull_request` `opened`, `synchronize`, `reopened` deploys the head
//!   commit for that PR on its *base* branch; `closed` (merged or not)
//!   undeploys the PR's builds; other actions are ignored.
//! - `ping` is acknowledged; any other event is ignored.
//!
//! Whether the repo/branch is supported by the settings is not decided
//! here: the controller checks it, in one place, when it handles the deploy
//! (and answers `Unsupported`). Undeploys are never gated by it: a repo or
//! branch that was supported when its builds were made may have been
//! removed from the settings since, and its builds must still go away when
//! their branch or PR does. Undeploying what does not exist is a no-op.
//!
//! Repository names are lower-cased here, once, so every later comparison
//! is case-insensitive. A [`WebhookAction::Deploy`] carries a validated
//! [`CommitInfo`] (core's rules, `runboat_core::commit`). This module checks
//! bodies strictly (size, JSON, fields, values) and never panics on any
//! input.

use runboat_core::CommitInfo;
use runboat_core::commit::{normalize_repo, validate_branch};
use serde::Deserialize;

use crate::error::{Error, PayloadError};
use crate::signature::WebhookSecret;

/// Bodies over this size are refused before parsing. GitHub's own payloads
/// stay far below it (a push lists at most 20 commits); the server should
/// use the same limit for its request body.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// The header GitHub puts the event name in.
pub const EVENT_HEADER: &str = "X-GitHub-Event";

/// What a webhook asks of the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAction {
    /// Deploy a commit of a branch (the pushed branch) or of a pull request
    /// (on its base branch), if the settings support it.
    Deploy(CommitInfo),
    /// The branch was deleted: undeploy its (non-PR) builds.
    UndeployBranch { repo: String, branch: String },
    /// The pull request was closed: undeploy its builds.
    UndeployPr { repo: String, pr: u64 },
    /// GitHub's `ping` on webhook creation.
    Ping,
    /// Acknowledged, nothing to do.
    Ignored { reason: String },
}

/// Check and parse one delivery, as the server's webhook endpoint does:
/// the size limit first (so nobody makes us hash a huge body), then the
/// signature when a secret is configured ([`crate::Error::Signature`]: answer
/// 401), then the body ([`crate::Error::Payload`]: answer 400, or 413 for
/// [`PayloadError::TooLarge`]). With no secret, any delivery is accepted;
/// the server warns about that at startup.
pub fn receive(
    secret: Option<&WebhookSecret>,
    event: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<WebhookAction, Error> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PayloadError::TooLarge { size: body.len(), limit: MAX_BODY_BYTES }.into());
    }
    if let Some(secret) = secret {
        secret.verify(signature, body)?;
    }
    Ok(parse(event, body)?)
}

/// Turn one webhook delivery into an action. `body` is the raw body (the
/// one whose signature was verified).
pub fn parse(event: &str, body: &[u8]) -> Result<WebhookAction, PayloadError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PayloadError::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    if body.starts_with(b"payload=") {
        return Err(PayloadError::FormEncoded { event: event.to_owned() });
    }
    match event {
        "push" => parse_push(from_json(event, body)?),
        "pull_request" => parse_pull_request(from_json(event, body)?),
        "ping" => {
            from_json::<serde::de::IgnoredAny>(event, body)?;
            Ok(WebhookAction::Ping)
        }
        _ => {
            from_json::<serde::de::IgnoredAny>(event, body)?;
            Ok(ignored(format!("event `{}` is not handled", truncate(event, 64))))
        }
    }
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    pull_request: PullRequest,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequest {
    head: Head,
    base: Base,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct Base {
    #[serde(rename = "ref")]
    git_ref: String,
}

fn from_json<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|source| {
        let event = event.to_owned();
        match source.classify() {
            serde_json::error::Category::Eof => PayloadError::Truncated { event, source },
            serde_json::error::Category::Data => PayloadError::Shape { event, source },
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                PayloadError::Syntax { event, source }
            }
        }
    })
}

fn ignored(reason: String) -> WebhookAction {
    WebhookAction::Ignored { reason }
}

fn parse_push(push: PushEvent) -> Result<WebhookAction, PayloadError> {
    let full_name = &push.repository.full_name;
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        let repo = repo_name("push", full_name)?;
        return Ok(if push.git_ref.starts_with("refs/tags/") {
            ignored(format!("push of tag {} of {repo}", truncate(&push.git_ref, 200)))
        } else {
            ignored(format!("push of {} of {repo} is not a branch", truncate(&push.git_ref, 200)))
        });
    };
    if push.deleted {
        let repo = repo_name("push", full_name)?;
        let branch = branch_name("push", "ref", branch)?;
        return Ok(WebhookAction::UndeployBranch { repo, branch });
    }
    if push.after.len() == 40 && push.after.bytes().all(|b| b == b'0') {
        let repo = repo_name("push", full_name)?;
        let branch = branch_name("push", "ref", branch)?;
        return Ok(ignored(format!("push to {repo} {branch} has no head commit (all-zero sha)")));
    }
    deploy("push", ["ref", "after"], full_name, branch, None, &push.after)
}

fn parse_pull_request(event: PullRequestEvent) -> Result<WebhookAction, PayloadError> {
    let full_name = &event.repository.full_name;
    let repo = || repo_name("pull_request", full_name);
    let pr = event.number;
    if pr == 0 {
        return Err(PayloadError::Value {
            event: "pull_request".to_owned(),
            field: "number",
            reason: "expected a positive integer: 0".to_owned(),
        });
    }
    match event.action.as_str() {
        "opened" | "synchronize" | "reopened" => deploy(
            "pull_request",
            ["pull_request.base.ref", "pull_request.head.sha"],
            full_name,
            &event.pull_request.base.git_ref,
            Some(pr),
            &event.pull_request.head.sha,
        ),
        "closed" => Ok(WebhookAction::UndeployPr { repo: repo()?, pr }),
        other => Ok(ignored(format!(
            "pull_request action `{}` of {} PR #{pr} does not change builds",
            truncate(other, 64),
            repo()?
        ))),
    }
}

/// The deploy of a commit: its parts are validated once, by
/// `CommitInfo::new`; an error names the field (`[branch, sha]` are the
/// payload's names of those two) and quotes the value, truncated.
fn deploy(
    event: &str,
    [branch_field, sha_field]: [&'static str; 2],
    full_name: &str,
    branch: &str,
    pr: Option<u64>,
    sha: &str,
) -> Result<WebhookAction, PayloadError> {
    CommitInfo::new(full_name, branch, pr, sha).map(WebhookAction::Deploy).map_err(|e| {
        let (field, value, max) = match &e {
            runboat_core::Error::InvalidBranch { .. } => (branch_field, branch, 200),
            runboat_core::Error::InvalidCommit { .. } => (sha_field, sha, 80),
            _ => ("repository.full_name", full_name, 200),
        };
        PayloadError::Value {
            event: event.to_owned(),
            field,
            reason: format!("{}: {:?}", core_reason(&e), truncate(value, max)),
        }
    })
}

/// The reason of a core validation error, without the (possibly huge)
/// rejected input, which the caller quotes truncated.
fn core_reason(error: &runboat_core::Error) -> &'static str {
    match error {
        runboat_core::Error::InvalidRepo { reason, .. }
        | runboat_core::Error::InvalidBranch { reason, .. } => reason,
        runboat_core::Error::InvalidCommit { .. } => "expected 40 hexadecimal characters",
        runboat_core::Error::InvalidPr { .. } => "expected a positive integer",
        _ => "invalid value",
    }
}

/// `owner/name` with core's rules ([`runboat_core::commit::normalize_repo`]),
/// lower-cased.
fn repo_name(event: &str, full_name: &str) -> Result<String, PayloadError> {
    normalize_repo(full_name).map_err(|e| PayloadError::Value {
        event: event.to_owned(),
        field: "repository.full_name",
        reason: format!("{}: {:?}", core_reason(&e), truncate(full_name, 200)),
    })
}

/// A branch name with core's (git's) rules, so that a deploy always makes
/// a valid `CommitInfo`.
fn branch_name(event: &str, field: &'static str, branch: &str) -> Result<String, PayloadError> {
    validate_branch(branch).map_err(|e| PayloadError::Value {
        event: event.to_owned(),
        field,
        reason: format!("{}: {:?}", core_reason(&e), truncate(branch, 200)),
    })?;
    Ok(branch.to_owned())
}

/// At most `max` bytes of `s`, cut on a char boundary: outside strings go
/// into messages, and must not make them huge.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn deploy_of(repo: &str, branch: &str, pr: Option<u64>, sha: &str) -> WebhookAction {
        WebhookAction::Deploy(CommitInfo::new(repo, branch, pr, sha).expect("valid commit"))
    }

    fn push_body(full_name: &str, git_ref: &str, after: &str, deleted: bool) -> String {
        serde_json::json!({
            "ref": git_ref,
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "deleted": deleted,
            "repository": {"full_name": full_name},
        })
        .to_string()
    }

    const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

    #[test]
    fn repo_is_lower_cased() {
        let body = push_body("OCA/Server-Tools", "refs/heads/16.0", SHA, false);
        let action = parse("push", body.as_bytes()).expect("valid");
        assert_eq!(action, deploy_of("oca/server-tools", "16.0", None, SHA));
    }

    #[test]
    fn branch_with_slashes_is_kept_whole() {
        let body = push_body("oca/web", "refs/heads/feature/x-y", SHA, false);
        let action = parse("push", body.as_bytes()).expect("valid");
        assert!(matches!(action, WebhookAction::Deploy(c) if c.target_branch() == "feature/x-y"));
    }

    #[test]
    fn upper_case_sha_is_lower_cased() {
        let body = push_body("oca/web", "refs/heads/16.0", &SHA.to_uppercase(), false);
        let action = parse("push", body.as_bytes()).expect("valid");
        assert!(matches!(action, WebhookAction::Deploy(c) if c.git_commit() == SHA));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        for (body, field) in [
            (push_body("oca", "refs/heads/16.0", SHA, false), "repository.full_name"),
            (push_body("oca/../x", "refs/heads/16.0", SHA, false), "repository.full_name"),
            (push_body("oca/web", "refs/heads/16.0", "abc", false), "after"),
            (push_body("oca/web", "refs/heads/16.0", &"g".repeat(40), false), "after"),
            (push_body("oca/web", "refs/heads/", SHA, false), "ref"),
            (push_body("oca/web", "refs/heads/a\nb", SHA, false), "ref"),
        ] {
            match parse("push", body.as_bytes()) {
                Err(PayloadError::Value { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn receive_checks_the_signature_only_when_a_secret_is_configured() {
        let body = push_body("oca/web", "refs/heads/16.0", SHA, false);
        let secret = WebhookSecret::new("s3cret");
        let good = secret.sign(body.as_bytes());
        let deploy = receive(Some(&secret), "push", Some(&good), body.as_bytes());
        assert!(matches!(deploy, Ok(WebhookAction::Deploy(_))), "{deploy:?}");
        let missing = receive(Some(&secret), "push", None, body.as_bytes());
        assert!(
            matches!(missing, Err(Error::Signature(crate::SignatureError::Missing))),
            "{missing:?}"
        );
        let forged = WebhookSecret::new("guess").sign(body.as_bytes());
        let forged = receive(Some(&secret), "push", Some(&forged), body.as_bytes());
        assert!(
            matches!(forged, Err(Error::Signature(crate::SignatureError::Mismatch))),
            "{forged:?}"
        );
        let unsigned = receive(None, "push", None, body.as_bytes());
        assert!(matches!(unsigned, Ok(WebhookAction::Deploy(_))), "{unsigned:?}");
        // A bad body with a good signature is a payload error.
        let good = secret.sign(b"{");
        let bad = receive(Some(&secret), "push", Some(&good), b"{");
        assert!(matches!(bad, Err(Error::Payload(PayloadError::Truncated { .. }))), "{bad:?}");
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let huge = receive(Some(&secret), "push", None, &huge);
        assert!(matches!(huge, Err(Error::Payload(PayloadError::TooLarge { .. }))), "{huge:?}");
    }

    #[test]
    fn too_large_body_is_refused_before_parsing() {
        let body = vec![b' '; 10 * 1024 * 1024];
        assert!(matches!(
            parse("push", &body),
            Err(PayloadError::TooLarge { size, limit: MAX_BODY_BYTES }) if size == body.len()
        ));
    }

    #[test]
    fn form_encoded_body_is_explained() {
        let body = b"payload=%7B%22zen%22%3A%22x%22%7D";
        assert!(matches!(parse("ping", body), Err(PayloadError::FormEncoded { .. })));
    }

    #[test]
    fn long_outside_strings_are_truncated_in_messages() {
        let event = "x".repeat(10_000);
        let action = parse(&event, b"{}").expect("ignored");
        let WebhookAction::Ignored { reason } = action else { panic!("{action:?}") };
        assert!(reason.len() < 200, "{reason}");
        assert_eq!(truncate("héllo", 2), "h");
    }

    fn branch_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec("[A-Za-z0-9_-]{1,10}(\\.[A-Za-z0-9_-]{1,5})?", 1..4)
            .prop_map(|parts| parts.join("/"))
            .prop_filter("git refuses .lock", |b| !b.ends_with(".lock"))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            event in prop::sample::select(vec!["push", "pull_request", "ping", "issues", ""]),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let _ = parse(event, &body);
        }

        #[test]
        fn arbitrary_json_never_panics(
            event in prop::sample::select(vec!["push", "pull_request"]),
            json in arb_json(),
        ) {
            let _ = parse(event, json.to_string().as_bytes());
        }

        #[test]
        fn every_deploy_carries_a_valid_commit_info(
            full_name in prop_oneof!["[A-Za-z0-9._-]{1,6}/[A-Za-z0-9._-]{1,6}", "[A-Za-z0-9./_-]{0,12}"],
            branch in "\\PC{0,24}",
            sha in prop_oneof!["[0-9a-fA-F]{40}", "[0-9a-fA-Fg]{38,41}"],
            pr in proptest::option::of(0u64..5),
        ) {
            let body = match pr {
                None => push_body(&full_name, &format!("refs/heads/{branch}"), &sha, false),
                Some(number) => serde_json::json!({
                    "action": "opened",
                    "number": number,
                    "pull_request": {"head": {"sha": sha}, "base": {"ref": branch}},
                    "repository": {"full_name": full_name},
                }).to_string(),
            };
            let event = if pr.is_some() { "pull_request" } else { "push" };
            // A deploy's commit is what core itself would build from it.
            if let Ok(WebhookAction::Deploy(c)) = parse(event, body.as_bytes()) {
                let again = CommitInfo::new(c.repo(), c.target_branch(), c.pr(), c.git_commit());
                prop_assert_eq!(again.ok(), Some(c));
            }
        }

        #[test]
        fn valid_pushes_deploy_exactly_what_was_pushed(
            owner in "[A-Za-z0-9-]{1,20}",
            name in "[A-Za-z0-9._-]{1,20}",
            branch in branch_strategy(),
            sha in "[0-9a-f]{40}",
        ) {
            prop_assume!(name != "." && name != "..");
            prop_assume!(!sha.bytes().all(|b| b == b'0'));
            let full = format!("{owner}/{name}");
            let body = push_body(&full, &format!("refs/heads/{branch}"), &sha, false);
            let action = parse("push", body.as_bytes()).expect("valid push");
            prop_assert_eq!(action, deploy_of(&full.to_lowercase(), &branch, None, &sha));
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[a-z/0-9.]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            let key = prop::sample::select(vec![
                "ref",
                "after",
                "deleted",
                "repository",
                "full_name",
                "action",
                "number",
                "pull_request",
                "head",
                "base",
                "sha",
                "x",
            ]);
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(key.prop_map(str::to_owned), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
