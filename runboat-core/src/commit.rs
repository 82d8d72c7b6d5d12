//! What a build is a build *of*: a commit of a branch or pull request of a
//! repository, plus the names derived from it (build name and slug).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The commit identity of a build: repository, target branch, optional pull
/// request and commit sha. All fields are validated on construction, so a
/// `CommitInfo` can be put in annotations, URLs and kubefiles as is.
///
/// Serialises as SPEC's `{"repo", "target_branch", "pr", "git_commit"}` with
/// `pr` null for branch builds; deserialising validates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawCommitInfo")]
pub struct CommitInfo {
    repo: String,
    target_branch: String,
    pr: Option<u64>,
    git_commit: String,
}

#[derive(Deserialize)]
struct RawCommitInfo {
    repo: String,
    target_branch: String,
    pr: Option<u64>,
    git_commit: String,
}

impl TryFrom<RawCommitInfo> for CommitInfo {
    type Error = Error;

    fn try_from(raw: RawCommitInfo) -> Result<Self> {
        CommitInfo::new(&raw.repo, &raw.target_branch, raw.pr, &raw.git_commit)
    }
}

impl CommitInfo {
    /// Validates and builds a commit identity.
    ///
    /// - `repo` must be `owner/name` with ASCII letters, digits, `-`, `_`, `.`;
    ///   it is stored lower-cased (GitHub names are case-insensitive).
    /// - `target_branch` must be a plausible git branch name (see
    ///   [`validate_branch`]).
    /// - `pr`, when present, must be positive.
    /// - `git_commit` must be 40 hex characters; it is stored lower-cased.
    pub fn new(repo: &str, target_branch: &str, pr: Option<u64>, git_commit: &str) -> Result<Self> {
        let repo = normalize_repo(repo)?;
        validate_branch(target_branch)?;
        if pr == Some(0) {
            return Err(Error::InvalidPr { value: "0".to_owned() });
        }
        let git_commit = normalize_commit(git_commit)?;
        Ok(CommitInfo { repo, target_branch: target_branch.to_owned(), pr, git_commit })
    }

    /// Like [`CommitInfo::new`], with the pull request as the `runboat/pr`
    /// annotation writes it: a decimal number, or empty for a branch build.
    pub fn from_annotation_pr(
        repo: &str,
        target_branch: &str,
        pr: &str,
        git_commit: &str,
    ) -> Result<Self> {
        CommitInfo::new(repo, target_branch, parse_pr(pr)?, git_commit)
    }

    /// `owner/name`, lower case.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The branch the build targets (the pull request's base branch for a PR).
    pub fn target_branch(&self) -> &str {
        &self.target_branch
    }

    /// The pull request number, `None` for a branch build.
    pub fn pr(&self) -> Option<u64> {
        self.pr
    }

    /// The full 40-hex commit sha, lower case.
    pub fn git_commit(&self) -> &str {
        &self.git_commit
    }

    /// True for a branch build (no pull request).
    pub fn is_branch(&self) -> bool {
        self.pr.is_none()
    }

    /// The `runboat/pr` annotation value: the number, or empty.
    pub fn pr_annotation(&self) -> String {
        self.pr.map(|pr| pr.to_string()).unwrap_or_default()
    }

    /// The deterministic build name of this commit identity.
    ///
    /// `b` followed by the first 32 hex characters (128 bits) of
    /// SHA-256 over `runboat-build-v1 NUL repo NUL target_branch NUL pr NUL
    /// git_commit` (pr in decimal, empty for a branch build). NUL cannot occur
    /// in any field, so the encoding is unambiguous. The result is 33
    /// characters like the original's `b` + UUID hex, a DNS-1123 label
    /// starting with a letter, leaving 30 characters for kubefile suffixes
    /// such as `-initialize`. Identical webhooks therefore always name the
    /// same build, so a burst of them can never create two builds.
    pub fn build_name(&self) -> String {
        let digest = self.identity_digest();
        let mut name = String::with_capacity(33);
        name.push('b');
        for byte in digest {
            name.push(hex_digit(byte >> 4));
            name.push(hex_digit(byte & 0x0f));
        }
        name
    }

    /// The first 128 bits of the identity hash behind [`CommitInfo::build_name`].
    fn identity_digest(&self) -> [u8; 16] {
        let mut hasher = Sha256::new();
        hasher.update(b"runboat-build-v1\0");
        hasher.update(self.repo.as_bytes());
        hasher.update(b"\0");
        hasher.update(self.target_branch.as_bytes());
        hasher.update(b"\0");
        if let Some(pr) = self.pr {
            hasher.update(pr.to_string().as_bytes());
        }
        hasher.update(b"\0");
        hasher.update(self.git_commit.as_bytes());
        let full = hasher.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The build slug, the first DNS label of the build's host names.
    ///
    /// As the original computes it,
    /// `slugify(repo)-slugify(target_branch)[-pr<N>]-<first 12 chars of sha>`,
    /// whenever that is a valid DNS label (at most 63 characters, no
    /// leading `-`): every slug the original could serve stays identical.
    /// Otherwise (a long repo or branch name, which the original turned into
    /// a host name the API server refuses), the front part is cut to fit
    /// and a short hash of the whole original slug keeps it unique:
    /// `<front>-<6 hex of sha256>-<first 12 chars of sha>`, never starting or
    /// ending with `-`.
    pub fn slug(&self) -> String {
        let mut front = slugify(&self.repo);
        front.push('-');
        front.push_str(&slugify(&self.target_branch));
        if let Some(pr) = self.pr {
            front.push_str("-pr");
            front.push_str(&pr.to_string());
        }
        let sha = &self.git_commit[..12];
        let full = format!("{front}-{sha}");
        if full.len() <= MAX_LABEL && !full.starts_with('-') {
            return full;
        }
        let digest = Sha256::digest(full.as_bytes());
        let hash: String =
            digest.iter().take(3).flat_map(|b| [hex_digit(b >> 4), hex_digit(b & 0x0f)]).collect();
        // Room for the front: the label less "-" + hash + "-" + sha.
        let room = MAX_LABEL - 1 - hash.len() - 1 - sha.len();
        let front = front.trim_start_matches('-');
        let front = front[..front.len().min(room)].trim_end_matches('-');
        if front.is_empty() { format!("{hash}-{sha}") } else { format!("{front}-{hash}-{sha}") }
    }
}

impl fmt::Display for CommitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pr {
            Some(pr) => write!(
                f,
                "{}#{} ({}) @{}",
                self.repo,
                pr,
                self.target_branch,
                &self.git_commit[..12]
            ),
            None => write!(f, "{}@{} @{}", self.repo, self.target_branch, &self.git_commit[..12]),
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// The longest DNS label (RFC 1123), and so the longest slug.
const MAX_LABEL: usize = 63;

/// Lower-cases and turns every character outside `[a-z0-9]` into `-`, as the
/// original's `slugify` does (one `-` per character, no collapsing).
pub fn slugify(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect()
}

/// Validates `owner/name` and returns it lower-cased.
pub fn normalize_repo(repo: &str) -> Result<String> {
    let bad = |reason| Err(Error::InvalidRepo { repo: repo.to_owned(), reason });
    let Some((owner, name)) = repo.split_once('/') else {
        return bad("expected owner/name");
    };
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        return bad("expected owner/name");
    }
    if repo.len() > 200 {
        return bad("too long");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !owner.chars().all(allowed) || !name.chars().all(allowed) {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if matches!(owner, "." | "..") || matches!(name, "." | "..") {
        return bad("'.' and '..' are not names");
    }
    Ok(repo.to_ascii_lowercase())
}

/// Checks that `branch` is a plausible git branch name: non-empty, at most
/// 255 bytes, no whitespace or control characters, none of `~^:?*[\`, no
/// `..`, `@{` or `//`, not starting or ending with `/` or `.`, not ending with
/// `.lock`, not `@`, no component starting with `.` (git's
/// `check-ref-format` rules).
pub fn validate_branch(branch: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidBranch { branch: branch.to_owned(), reason });
    if branch.is_empty() {
        return bad("empty");
    }
    if branch.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if branch.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains whitespace or control characters");
    }
    if branch.chars().any(|c| matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')) {
        return bad("contains one of ~ ^ : ? * [ \\");
    }
    if branch.contains("..") || branch.contains("@{") || branch.contains("//") {
        return bad("contains '..', '@{' or '//'");
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.ends_with('.') {
        return bad("starts or ends with '/' or ends with '.'");
    }
    if branch.ends_with(".lock") || branch == "@" {
        return bad("not a valid git ref name");
    }
    if branch.split('/').any(|part| part.starts_with('.')) {
        return bad("a component starts with '.'");
    }
    Ok(())
}

/// Parses the `runboat/pr` annotation: empty means no pull request.
pub fn parse_pr(value: &str) -> Result<Option<u64>> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<u64>() {
        Ok(0) | Err(_) => Err(Error::InvalidPr { value: value.to_owned() }),
        Ok(pr) => Ok(Some(pr)),
    }
}

/// Validates a 40-hex commit sha and returns it lower-cased.
pub fn normalize_commit(sha: &str) -> Result<String> {
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(Error::InvalidCommit { sha: sha.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn ci(repo: &str, branch: &str, pr: Option<u64>) -> CommitInfo {
        CommitInfo::new(repo, branch, pr, SHA).expect("valid commit info")
    }

    #[test]
    fn repo_is_lower_cased_and_sha_too() {
        let c =
            CommitInfo::new("OCA/Server-Tools", "16.0", None, &SHA.to_uppercase()).expect("valid");
        assert_eq!(c.repo(), "oca/server-tools");
        assert_eq!(c.git_commit(), SHA);
    }

    #[test]
    fn bad_inputs_are_named_in_errors() {
        for repo in ["", "oca", "oca/", "/x", "a/b/c", "oca/ x", "../x", "oca/é"] {
            let err = CommitInfo::new(repo, "16.0", None, SHA).expect_err(repo);
            assert!(matches!(&err, Error::InvalidRepo { repo: r, .. } if r == repo), "{err}");
            assert!(err.to_string().contains(&format!("{repo:?}")));
        }
        for branch in
            ["", "a b", "a\nb", "a..b", "a:b", "/a", "a/", "a.lock", "a.", "@", ".a", "a//b"]
        {
            let err = CommitInfo::new("oca/x", branch, None, SHA).expect_err(branch);
            assert!(matches!(&err, Error::InvalidBranch { branch: b, .. } if b == branch));
        }
        for sha in ["", "abc", &SHA[..39], &format!("{}g", &SHA[..39]), &format!("{SHA}0")] {
            let err = CommitInfo::new("oca/x", "16.0", None, sha).expect_err(sha);
            assert!(matches!(&err, Error::InvalidCommit { sha: s } if s == sha));
        }
        let err = CommitInfo::new("oca/x", "16.0", Some(0), SHA).expect_err("pr 0");
        assert!(matches!(err, Error::InvalidPr { .. }));
    }

    #[test]
    fn plausible_branches_are_accepted() {
        for branch in ["16.0", "16.0-mig-foo", "feature/x_y", "main", "v1.2.3", "a@b", "ü"] {
            validate_branch(branch).expect(branch);
        }
    }

    #[test]
    fn pr_annotation_round_trips() {
        assert_eq!(parse_pr("").expect("empty"), None);
        assert_eq!(parse_pr("42").expect("42"), Some(42));
        for bad in ["0", "-1", "x", " 4", "4.0"] {
            assert!(matches!(parse_pr(bad), Err(Error::InvalidPr { value }) if value == bad));
        }
        assert_eq!(ci("oca/x", "16.0", Some(7)).pr_annotation(), "7");
        assert_eq!(ci("oca/x", "16.0", None).pr_annotation(), "");
    }

    #[test]
    fn long_slugs_are_cut_to_a_dns_label_and_stay_unique() {
        let long_repo = format!("oca/{}", "r".repeat(190));
        let a = ci(&long_repo, "16.0", Some(7)).slug();
        let b = ci(&long_repo, "16.0", Some(8)).slug();
        let c = ci(&long_repo, "17.0", Some(7)).slug();
        for s in [&a, &b, &c] {
            assert_eq!(s.len(), 63, "{s}");
            assert!(s.starts_with("oca-rrrr") && s.ends_with("-0123456789ab"), "{s}");
        }
        assert!(a != b && a != c && b != c, "{a} {b} {c}");
        assert_eq!(a, ci(&long_repo, "16.0", Some(7)).slug(), "stable");
        // Exactly 63 characters: as the original.
        let repo = format!("oca/{}", "x".repeat(63 - "oca--16-0-0123456789ab".len()));
        let exact = ci(&repo, "16.0", None).slug();
        assert_eq!(exact.len(), 63);
        assert_eq!(exact, format!("{}-16-0-0123456789ab", slugify(&repo)));
        // A cut never leaves a '-' at either end, nor a front of dashes.
        let dashes = ci("-_-/._.", &"-".repeat(100), None).slug();
        assert!(!dashes.starts_with('-') && !dashes.ends_with('-'), "{dashes}");
        assert!(dashes.len() <= 63, "{dashes}");
    }

    #[test]
    fn slug_matches_the_original() {
        assert_eq!(ci("OCA/mis-builder", "16.0", None).slug(), "oca-mis-builder-16-0-0123456789ab");
        assert_eq!(
            ci("oca/server_tools", "feature/X.y", Some(123)).slug(),
            "oca-server-tools-feature-x-y-pr123-0123456789ab"
        );
        // One dash per replaced character, as Python's re.sub does.
        assert_eq!(slugify("a..b"), "a--b");
    }

    #[test]
    fn build_name_is_deterministic_and_a_dns_label() {
        let a = ci("oca/x", "16.0", None);
        let name = a.build_name();
        assert_eq!(name, ci("OCA/X", "16.0", None).build_name());
        assert_eq!(name.len(), 33);
        assert!(name.starts_with('b'));
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        // Every field takes part.
        assert_ne!(name, ci("oca/y", "16.0", None).build_name());
        assert_ne!(name, ci("oca/x", "17.0", None).build_name());
        assert_ne!(name, ci("oca/x", "16.0", Some(1)).build_name());
        let other_sha = CommitInfo::new("oca/x", "16.0", None, &"1".repeat(40)).expect("valid");
        assert_ne!(name, other_sha.build_name());
        // Room for the longest kubefile suffix within a 63-char label.
        assert!(name.len() + "-initialize".len() <= 63);
    }

    #[test]
    fn serialises_as_spec_json() {
        let v = serde_json::to_value(ci("oca/x", "16.0", None)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"repo": "oca/x", "target_branch": "16.0", "pr": null, "git_commit": SHA})
        );
        let v = serde_json::to_value(ci("oca/x", "16.0", Some(5))).expect("json");
        assert_eq!(v["pr"], 5);
        let back: CommitInfo = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, ci("oca/x", "16.0", Some(5)));
        let bad = serde_json::json!({"repo": "x", "target_branch": "16.0", "pr": null, "git_commit": SHA});
        assert!(serde_json::from_value::<CommitInfo>(bad).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn constructors_never_panic(repo in ".{0,40}", branch in ".{0,40}", pr in proptest::option::of(any::<u64>()), sha in "[0-9a-fA-FxX]{0,42}") {
                if let Ok(c) = CommitInfo::new(&repo, &branch, pr, &sha) {
                    let name = c.build_name();
                    prop_assert_eq!(name.len(), 33);
                    let slug = c.slug();
                    prop_assert!(slug.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'));
                    prop_assert!(slug.len() <= 63, "{slug}");
                    prop_assert!(!slug.starts_with('-') && !slug.ends_with('-'), "{slug}");
                    prop_assert!(slug.ends_with(&c.git_commit()[..12]));
                    prop_assert_eq!(c.repo(), repo.to_ascii_lowercase());
                }
            }

            #[test]
            fn parse_pr_accepts_exactly_positive_decimals(s in "[0-9a-z-]{0,6}") {
                let r = parse_pr(&s);
                match s.parse::<u64>() {
                    _ if s.is_empty() => prop_assert_eq!(r.ok(), Some(None)),
                    Ok(n) if n > 0 => prop_assert_eq!(r.ok(), Some(Some(n))),
                    _ => prop_assert!(r.is_err()),
                }
            }
        }
    }
}
