//! runboat's settings (SPEC "Configuration"), from a TOML file and from
//! `RUNBOAT_*` environment variables, the environment overriding the file.
//!
//! # Formats
//!
//! - TOML keys are the setting names in lower case without the prefix
//!   (`max_started = 6`, `[[repos]]` tables). Unknown keys are errors.
//! - Environment variables are `RUNBOAT_<NAME>` (name matched
//!   case-insensitively, as pydantic-settings does), in the original's
//!   format: plain strings; integers; booleans as `true`/`false`/`1`/`0`
//!   (also `yes`/`no`/`on`/`off`); JSON for `REPOS` and the `BUILD_*ENV` /
//!   `BUILD_TEMPLATE_VARS` objects; `DEPLOYMENT_RESOURCE_TYPES` as a
//!   comma-separated list (or a JSON list). Unknown `RUNBOAT_*` variables
//!   are ignored (see [`unknown_env_keys`] to warn about them).
//!
//! # Repo rules
//!
//! A repo rule is `{repo, branch, builds: [one build]}` (a TOML rule may
//! also say `build = {…}`); the first rule whose repo pattern matches the
//! repository (case-insensitively) and whose branch pattern matches the
//! target branch wins. Patterns match **from the start of the name**, exactly
//! as the original's Python `re.match` does: they are compiled as
//! `^(?:pattern)`, so `16\.0` also matches `16.0-foo`, and a pattern that
//! must match the whole name ends with `$` (the usual style, `^16\.0$`).
//! Keeping `re.match` semantics means an existing configuration selects
//! exactly the same repositories and branches after a migration.
//!
//! # Secrets
//!
//! The admin password, the GitHub token, the webhook secret and every
//! `secret_env` value are [`Secret`]s: redacted in `Debug` and `Display`,
//! never in an error message.
//!
//! This module does no I/O: the caller reads the file and passes its text
//! and the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::error::{Error, Result};

/// The three capacity limits of SPEC. A limit of 0 pauses that activity
/// (no initialization, every started build stopped, every evictable build
/// undeployed), as in the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// At most this many initialization jobs at once.
    pub max_initializing: usize,
    /// Above this many started builds, stop the oldest-scaled ones.
    pub max_started: usize,
    /// Above this many deployed (not undeploying) builds, undeploy the
    /// oldest-scaled stopped/stopping/failed ones.
    pub max_deployed: usize,
    /// At most this many pinned builds (a pin beyond is refused).
    pub max_pinned: usize,
}

/// Default of [`Settings::max_pinned`].
pub const DEFAULT_MAX_PINNED: usize = 5;

impl Default for Limits {
    /// The original's defaults: 2 / 6 / 10 (and 5 pinned builds).
    fn default() -> Self {
        Limits {
            max_initializing: 2,
            max_started: 6,
            max_deployed: 10,
            max_pinned: DEFAULT_MAX_PINNED,
        }
    }
}

/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "RUNBOAT_";

/// Default of [`Settings::base_url`].
pub const DEFAULT_BASE_URL: &str = "http://localhost:8000";

/// Default of [`Settings::deployment_resource_types`].
pub const DEFAULT_DEPLOYMENT_RESOURCE_TYPES: [&str; 7] =
    ["deployment", "service", "ingress", "configmap", "secret", "pvc", "job"];

/// A secret string: redacted in `Debug` and `Display`; read it with
/// [`Secret::expose`] only where it is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ
    /// (for password checks).
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How to build the commits of the repos and branches a [`RepoRule`]
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRule {
    /// The container image, `name[:tag]`.
    pub image: String,
    /// `image` up to its tag.
    pub image_name: String,
    /// The tag of `image`, `latest` when it has none.
    pub image_tag: String,
    /// Environment variables added to (and overriding) `build_env`.
    pub env: BTreeMap<String, String>,
    /// Secret environment variables added to `build_secret_env`.
    pub secret_env: BTreeMap<String, Secret>,
    /// Template variables added to `build_template_vars`.
    pub template_vars: BTreeMap<String, String>,
    /// Kubefiles directory for these builds (else the default one).
    pub kubefiles_path: Option<PathBuf>,
}

/// Splits an image reference into name and tag: the tag is what follows the
/// last `:` after the last `/` (so a registry port is not a tag), `latest`
/// when there is none.
pub fn split_image(image: &str) -> (String, String) {
    let after_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[after_slash..].rfind(':') {
        Some(i) if after_slash + i + 1 < image.len() => {
            (image[..after_slash + i].to_owned(), image[after_slash + i + 1..].to_owned())
        }
        Some(i) => (image[..after_slash + i].to_owned(), "latest".to_owned()),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

impl BuildRule {
    /// A rule with this image and nothing else.
    pub fn new(image: &str) -> BuildRule {
        let (image_name, image_tag) = split_image(image);
        BuildRule {
            image: image.to_owned(),
            image_name,
            image_tag,
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            template_vars: BTreeMap::new(),
            kubefiles_path: None,
        }
    }
}

/// One entry of `repos`: which repositories and branches are supported and
/// how to build them.
#[derive(Debug, Clone)]
pub struct RepoRule {
    /// The repo pattern as written.
    pub repo_pattern: String,
    /// The branch pattern as written.
    pub branch_pattern: String,
    repo: Regex,
    branch: Regex,
    /// How to build.
    pub build: BuildRule,
}

impl RepoRule {
    /// Compiles the patterns (matched from the start like Python's
    /// `re.match`; repo case-insensitive).
    /// Errors name `repo` or `branch` as the key.
    pub fn new(repo_pattern: &str, branch_pattern: &str, build: BuildRule) -> Result<RepoRule> {
        Self::compile(repo_pattern, branch_pattern, build, "repo", "branch")
    }

    fn compile(
        repo_pattern: &str,
        branch_pattern: &str,
        build: BuildRule,
        repo_key: &str,
        branch_key: &str,
    ) -> Result<RepoRule> {
        let compile = |pattern: &str, ci: bool, key: &str| {
            RegexBuilder::new(&format!("^(?:{pattern})"))
                .case_insensitive(ci)
                .build()
                .map_err(|e| Error::SettingRegex { key: key.to_owned(), source: Box::new(e) })
        };
        Ok(RepoRule {
            repo: compile(repo_pattern, true, repo_key)?,
            branch: compile(branch_pattern, false, branch_key)?,
            repo_pattern: repo_pattern.to_owned(),
            branch_pattern: branch_pattern.to_owned(),
            build,
        })
    }

    /// True when this rule applies to `branch` of `repo`.
    pub fn matches(&self, repo: &str, branch: &str) -> bool {
        self.repo.is_match(repo) && self.branch.is_match(branch)
    }
}

/// All settings. Build them with [`Settings::load`] (or
/// [`Settings::from_toml_str`] in tests).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Supported repos and branches, first match wins.
    pub repos: Vec<RepoRule>,
    /// Admin user of the API (HTTP Basic).
    pub api_admin_user: String,
    /// Admin password of the API.
    pub api_admin_passwd: Secret,
    /// Concurrent initialization jobs (default 2; 0 pauses initialization).
    pub max_initializing: usize,
    /// Started builds (default 6; 0 stops every started build).
    pub max_started: usize,
    /// Deployed builds (default 10; 0 undeploys every stopped or failed
    /// build but the newest of each branch).
    pub max_deployed: usize,
    /// Namespace of the builds (required).
    pub build_namespace: String,
    /// Wildcard domain the builds are served under (required).
    pub build_domain: String,
    /// Environment of every build container and job.
    pub build_env: BTreeMap<String, String>,
    /// Secret environment of every build container and job.
    pub build_secret_env: BTreeMap<String, Secret>,
    /// Variables for the kubefiles templates.
    pub build_template_vars: BTreeMap<String, String>,
    /// Kubefiles directory used when a rule names none (else the embedded
    /// default kubefiles).
    pub build_default_kubefiles_path: Option<PathBuf>,
    /// Token for GitHub API calls.
    pub github_token: Option<Secret>,
    /// Secret verifying webhook signatures.
    pub github_webhook_secret: Option<Secret>,
    /// Public base URL of runboat, for back links (default
    /// `http://localhost:8000`, no trailing `/`).
    pub base_url: String,
    /// HTML fragment for the second footer of the web UI.
    pub additional_footer_html: String,
    /// Do not post commit statuses to GitHub.
    pub disable_commit_statuses: bool,
    /// Create a GitHub deployment per build, with statuses following the
    /// build (queued, in_progress, success with the build's URL,
    /// failure, inactive once undeployed or superseded), so GitHub shows
    /// "View deployment" in the pull request. Needs `github_token` (with
    /// the deployments permission). Default false.
    pub github_deployments: bool,
    /// Resource types deleted when undeploying (default
    /// `deployment,service,ingress,configmap,secret,pvc,job`). Any
    /// namespaced type the cluster serves works, as with the original's
    /// `kubectl delete`: a name that is not a common built-in type (plural,
    /// kind, or `plural.group` for a custom resource) is resolved through
    /// API discovery at the first undeploy.
    pub deployment_resource_types: Vec<String>,
    /// Undeploy by deleting resources, without a cleanup job.
    pub no_cleanup_job: bool,
    /// Start a build as soon as its initialization succeeded (default
    /// false: builds stay stopped until someone starts them).
    pub start_after_init: bool,
    /// Pinned builds, at most (default 5; 0 refuses every pin). Pinned
    /// builds count against `max_started` and `max_deployed`, but are never
    /// stopped or undeployed by them.
    pub max_pinned: usize,
    /// Stop a started build this long after it was last started or woken
    /// (`None`, the default: never; pinned builds are exempt).
    pub idle_stop_after: Option<std::time::Duration>,
    /// `name:port` of a Service in the build namespace that reaches
    /// runboat-server: runboat points a build's Ingress backends at it
    /// while the build is not started and ready, so requests to its host
    /// get the waiting page (`None`, the default: Ingresses are left as the
    /// kubefiles make them).
    pub wake_service: Option<WakeService>,
    /// Supersede: once a build of a pull request (or branch) has
    /// initialized successfully, undeploy the older builds of that pull
    /// request (or branch), keeping the newest `supersede_keep`
    /// successfully initialized ones. 0 (the default, the original's
    /// behaviour) never supersedes.
    pub supersede_keep: usize,
    /// Supersede also the builds of a pull request (or branch) beyond its
    /// newest `supersede_max_builds` deployed ones, never its newest
    /// successfully initialized build. 0 (the default): no cap.
    pub supersede_max_builds: usize,
}

/// The [`Settings::wake_service`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeService {
    /// The Service name (a DNS-1035 label).
    pub name: String,
    /// Its port.
    pub port: u16,
}

/// Parses `name:port` (a DNS-1035 label of at most 63 characters, a port
/// 1-65535); an empty value means off.
pub fn parse_wake_service(key: &str, text: &str) -> Result<Option<WakeService>> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || {
        err(
            key,
            format!(
                "expected a Service in the build namespace as \"name:port\", such as \"runboat-wake:80\"; got {t:?}"
            ),
        )
    };
    let (name, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let label_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if !label_ok || port == 0 {
        return Err(bad());
    }
    Ok(Some(WakeService { name: name.to_owned(), port }))
}

/// Setting names known to the loader (TOML keys; env names are these
/// upper-cased with [`ENV_PREFIX`]).
pub const SETTING_KEYS: [&str; 26] = [
    "repos",
    "api_admin_user",
    "api_admin_passwd",
    "max_initializing",
    "max_started",
    "max_deployed",
    "build_namespace",
    "build_domain",
    "build_env",
    "build_secret_env",
    "build_template_vars",
    "build_default_kubefiles_path",
    "github_token",
    "github_webhook_secret",
    "base_url",
    "additional_footer_html",
    "disable_commit_statuses",
    "github_deployments",
    "deployment_resource_types",
    "no_cleanup_job",
    "start_after_init",
    "max_pinned",
    "idle_stop_after",
    "wake_service",
    "supersede_keep",
    "supersede_max_builds",
];

/// The `RUNBOAT_*` variables of `env` that are no setting (to warn about
/// typos or settings of the original that runboat-rs does not use, such as
/// `RUNBOAT_LOG_CONFIG`).
pub fn unknown_env_keys<K: AsRef<str>, V>(env: impl IntoIterator<Item = (K, V)>) -> Vec<String> {
    env.into_iter()
        .filter_map(|(k, _)| {
            let k = k.as_ref();
            let upper = k.to_ascii_uppercase();
            let name = upper.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            (!SETTING_KEYS.contains(&name.as_str())).then(|| k.to_owned())
        })
        .collect()
}

/// Parses a session length such as `2h`, `90m`, `45s`, `1h30m` (units
/// `h`, `m`, `s`, at least one second, at most 30 days); `off`, `0` or an
/// empty string mean no idle stop (`None`).
pub fn parse_session(key: &str, text: &str) -> Result<Option<std::time::Duration>> {
    let t = text.trim();
    if t.is_empty() || t == "0" || t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || {
        err(
            key,
            format!(
                "expected a duration such as \"2h\", \"90m\" or \"1h30m\", or \"off\"; got {t:?}"
            ),
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for ch in t.chars() {
        if ch.is_ascii_digit() {
            if digits.len() >= 9 {
                return Err(bad());
            }
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = total.saturating_add(n.saturating_mul(unit));
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    if total == 0 || total > 30 * 24 * 3600 {
        return Err(err(key, format!("must be between 1s and 30 days, got {t:?}")));
    }
    Ok(Some(std::time::Duration::from_secs(total)))
}

/// A raw setting value and where it came from.
struct Raw {
    /// The key to name in errors: `max_started` or `RUNBOAT_MAX_STARTED`.
    key: String,
    value: RawValue,
}

enum RawValue {
    /// From TOML, converted to JSON.
    Json(Value),
    /// From the environment, not parsed yet.
    Env(String),
}

fn err(key: &str, message: impl Into<String>) -> Error {
    Error::Setting { key: key.to_owned(), message: message.into() }
}

/// Describes a JSON value for an error message, hiding secret ones.
fn describe(v: &Value, secret: bool) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    };
    match v {
        Value::Bool(_) | Value::Number(_) | Value::String(_) if !secret => {
            format!("{kind} ({v})")
        }
        _ => kind.to_owned(),
    }
}

impl Raw {
    /// The value as JSON: TOML values as they are, environment values
    /// parsed as JSON.
    fn json(self) -> Result<(String, Value)> {
        match self.value {
            RawValue::Json(v) => Ok((self.key, v)),
            RawValue::Env(s) => match serde_json::from_str(&s) {
                Ok(v) => Ok((self.key, v)),
                // serde_json syntax errors carry a position, never the input.
                Err(e) => Err(err(&self.key, format!("invalid JSON: {e}"))),
            },
        }
    }

    fn string(self, secret: bool) -> Result<String> {
        match self.value {
            RawValue::Env(s) => Ok(s),
            RawValue::Json(Value::String(s)) => Ok(s),
            RawValue::Json(v) => {
                Err(err(&self.key, format!("expected a string, got {}", describe(&v, secret))))
            }
        }
    }

    /// A count: a non-negative integer (0 is valid for the limits: it
    /// pauses that activity, as admins of the original do).
    fn count(self) -> Result<usize> {
        let bad =
            |got: String| err(&self.key, format!("expected a non-negative integer, got {got}"));
        match &self.value {
            RawValue::Env(s) => s.trim().parse::<usize>().map_err(|_| bad(format!("{s:?}"))),
            RawValue::Json(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(describe(v, false))),
        }
    }

    fn boolean(self) -> Result<bool> {
        match &self.value {
            RawValue::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(err(&self.key, format!("expected a boolean (true/false/1/0), got {s:?}"))),
            },
            RawValue::Json(Value::Bool(b)) => Ok(*b),
            RawValue::Json(v) => {
                Err(err(&self.key, format!("expected a boolean, got {}", describe(v, false))))
            }
        }
    }

    fn string_list(self) -> Result<Vec<String>> {
        let key = self.key.clone();
        let items: Vec<String> = match self.value {
            RawValue::Env(s) if !s.trim_start().starts_with('[') => {
                s.split(',').map(str::to_owned).collect()
            }
            RawValue::Json(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
            value => {
                let (key, v) = Raw { key: self.key, value }.json()?;
                let Value::Array(items) = v else {
                    return Err(err(
                        &key,
                        format!("expected a list of strings, got {}", describe(&v, false)),
                    ));
                };
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(s) => Ok(s),
                        other => Err(err(
                            &format!("{key}[{i}]"),
                            format!("expected a string, got {}", describe(&other, false)),
                        )),
                    })
                    .collect::<Result<_>>()?
            }
        };
        let items: Vec<String> =
            items.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        if items.is_empty() {
            return Err(err(&key, "expected at least one resource type"));
        }
        Ok(items)
    }

    fn string_map(self) -> Result<BTreeMap<String, String>> {
        let (key, v) = self.json()?;
        string_map(&key, v, false)
    }

    fn secret_map(self) -> Result<BTreeMap<String, Secret>> {
        let (key, v) = self.json()?;
        Ok(string_map(&key, v, true)?.into_iter().map(|(k, v)| (k, Secret(v))).collect())
    }
}

fn string_map(key: &str, v: Value, secret: bool) -> Result<BTreeMap<String, String>> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(err(
                    &format!("{key}.{k}"),
                    format!("expected a string, got {}", describe(&other, secret)),
                )),
            })
            .collect(),
        other => {
            Err(err(key, format!("expected a table of strings, got {}", describe(&other, secret))))
        }
    }
}

fn optional_path(key: &str, v: Value) -> Result<Option<PathBuf>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(PathBuf::from(s))),
        other => Err(err(key, format!("expected a path, got {}", describe(&other, false)))),
    }
}

fn take_object(key: &str, v: Value, known: &[&str]) -> Result<serde_json::Map<String, Value>> {
    let Value::Object(map) = v else {
        return Err(err(key, format!("expected a table, got {}", describe(&v, false))));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(err(
            &format!("{key}.{unknown}"),
            format!("unknown key (expected one of {})", known.join(", ")),
        ));
    }
    Ok(map)
}

fn required_string(
    map: &mut serde_json::Map<String, Value>,
    parent: &str,
    field: &str,
) -> Result<String> {
    let key = format!("{parent}.{field}");
    match map.remove(field) {
        None | Some(Value::Null) => Err(err(&key, "missing")),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(err(&key, format!("expected a string, got {}", describe(&v, false)))),
    }
}

fn parse_build(key: &str, v: Value) -> Result<BuildRule> {
    let mut map =
        take_object(key, v, &["image", "env", "secret_env", "template_vars", "kubefiles_path"])?;
    let image = required_string(&mut map, key, "image")?;
    if image.trim().is_empty() {
        return Err(err(&format!("{key}.image"), "must not be empty"));
    }
    let mut rule = BuildRule::new(&image);
    if let Some(v) = map.remove("env") {
        rule.env = string_map(&format!("{key}.env"), v, false)?;
    }
    if let Some(v) = map.remove("secret_env") {
        rule.secret_env = string_map(&format!("{key}.secret_env"), v, true)?
            .into_iter()
            .map(|(k, v)| (k, Secret(v)))
            .collect();
    }
    if let Some(v) = map.remove("template_vars") {
        rule.template_vars = string_map(&format!("{key}.template_vars"), v, false)?;
    }
    if let Some(v) = map.remove("kubefiles_path") {
        rule.kubefiles_path = optional_path(&format!("{key}.kubefiles_path"), v)?;
    }
    Ok(rule)
}

fn parse_repos(raw: Raw) -> Result<Vec<RepoRule>> {
    let (key, v) = raw.json()?;
    let Value::Array(items) = v else {
        return Err(err(
            &key,
            format!("expected a list of repo rules, got {}", describe(&v, false)),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let ikey = format!("{key}[{i}]");
            let mut map = take_object(&ikey, item, &["repo", "branch", "builds", "build"])?;
            let repo = required_string(&mut map, &ikey, "repo")?;
            let branch = required_string(&mut map, &ikey, "branch")?;
            let build = match (map.remove("builds"), map.remove("build")) {
                (Some(_), Some(_)) => {
                    return Err(err(&ikey, "give either builds or build, not both"));
                }
                (None, None) => return Err(err(&format!("{ikey}.builds"), "missing")),
                (None, Some(b)) => parse_build(&format!("{ikey}.build"), b)?,
                (Some(Value::Array(mut builds)), None) if builds.len() == 1 => {
                    parse_build(&format!("{ikey}.builds[0]"), builds.remove(0))?
                }
                (Some(_), None) => {
                    return Err(err(
                        &format!("{ikey}.builds"),
                        "expected a list of exactly one build",
                    ));
                }
            };
            RepoRule::compile(
                &repo,
                &branch,
                build,
                &format!("{ikey}.repo"),
                &format!("{ikey}.branch"),
            )
        })
        .collect()
}

fn toml_error(text: &str, e: &toml::de::Error) -> Error {
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Error::SettingsToml { line, column, message: e.message().trim().to_owned() }
}

impl Settings {
    /// Settings from a TOML document only.
    pub fn from_toml_str(toml: &str) -> Result<Settings> {
        Settings::load(Some(toml), std::iter::empty::<(String, String)>())
    }

    /// Settings from the environment only (`RUNBOAT_*` variables; other
    /// variables are ignored).
    pub fn from_env<K: AsRef<str>, V: Into<String>>(
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Settings> {
        Settings::load(None, env)
    }

    /// Settings from the optional TOML text of the settings file, then the
    /// environment (pass `std::env::vars()`), which overrides the file key
    /// by key.
    pub fn load<K: AsRef<str>, V: Into<String>>(
        toml: Option<&str>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Settings> {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        if let Some(text) = toml {
            let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
            for (k, v) in table {
                let Some(name) = SETTING_KEYS.iter().find(|n| **n == k) else {
                    return Err(err(
                        &k,
                        format!("unknown setting (known: {})", SETTING_KEYS.join(", ")),
                    ));
                };
                let value = serde_json::to_value(v)
                    .map_err(|e| err(&k, format!("unsupported TOML value: {e}")))?;
                raw.insert(name, Raw { key: k, value: RawValue::Json(value) });
            }
        }
        for (k, v) in env {
            let k = k.as_ref();
            let upper = k.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(ENV_PREFIX) else { continue };
            let lower = rest.to_ascii_lowercase();
            if let Some(name) = SETTING_KEYS.iter().find(|n| **n == lower) {
                raw.insert(name, Raw { key: k.to_owned(), value: RawValue::Env(v.into()) });
            }
        }
        Settings::from_raw(raw)
    }

    fn from_raw(mut raw: BTreeMap<&'static str, Raw>) -> Result<Settings> {
        let mut take = |name: &'static str| raw.remove(name);
        let missing = |name: &str| {
            err(
                name,
                format!(
                    "required setting missing (TOML key {name} or environment variable {ENV_PREFIX}{})",
                    name.to_ascii_uppercase()
                ),
            )
        };
        let non_empty = |r: Raw, secret: bool| -> Result<String> {
            let key = r.key.clone();
            let s = r.string(secret)?;
            if s.trim().is_empty() {
                return Err(err(&key, "must not be empty"));
            }
            Ok(s)
        };

        let repos = parse_repos(take("repos").ok_or_else(|| missing("repos"))?)?;
        let api_admin_user =
            non_empty(take("api_admin_user").ok_or_else(|| missing("api_admin_user"))?, false)?;
        let api_admin_passwd = Secret(non_empty(
            take("api_admin_passwd").ok_or_else(|| missing("api_admin_passwd"))?,
            true,
        )?);
        let count = |r: Option<Raw>, default: usize| r.map_or(Ok(default), Raw::count);
        let max_initializing = count(take("max_initializing"), 2)?;
        let max_started = count(take("max_started"), 6)?;
        let max_deployed = count(take("max_deployed"), 10)?;
        let build_namespace =
            non_empty(take("build_namespace").ok_or_else(|| missing("build_namespace"))?, false)?;
        let build_domain =
            non_empty(take("build_domain").ok_or_else(|| missing("build_domain"))?, false)?;
        let build_env = take("build_env").map_or(Ok(BTreeMap::new()), Raw::string_map)?;
        let build_secret_env =
            take("build_secret_env").map_or(Ok(BTreeMap::new()), Raw::secret_map)?;
        let build_template_vars =
            take("build_template_vars").map_or(Ok(BTreeMap::new()), Raw::string_map)?;
        let build_default_kubefiles_path = match take("build_default_kubefiles_path") {
            None => None,
            Some(r) => {
                let key = r.key.clone();
                optional_path(&key, Value::String(r.string(false)?))?
            }
        };
        let optional_secret = |r: Option<Raw>| -> Result<Option<Secret>> {
            Ok(r.map(|r| r.string(true)).transpose()?.filter(|s| !s.is_empty()).map(Secret))
        };
        let github_token = optional_secret(take("github_token"))?;
        let github_webhook_secret = optional_secret(take("github_webhook_secret"))?;
        let base_url = match take("base_url") {
            None => DEFAULT_BASE_URL.to_owned(),
            Some(r) => {
                let key = r.key.clone();
                let url = r.string(false)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(err(&key, format!("expected an http(s) URL, got {url:?}")));
                }
                url.trim_end_matches('/').to_owned()
            }
        };
        let additional_footer_html =
            take("additional_footer_html").map_or(Ok(String::new()), |r| r.string(false))?;
        let flag = |r: Option<Raw>| r.map_or(Ok(false), Raw::boolean);
        let disable_commit_statuses = flag(take("disable_commit_statuses"))?;
        let github_deployments = flag(take("github_deployments"))?;
        let deployment_resource_types = match take("deployment_resource_types") {
            None => DEFAULT_DEPLOYMENT_RESOURCE_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            Some(r) => r.string_list()?,
        };
        let no_cleanup_job = flag(take("no_cleanup_job"))?;
        let start_after_init = flag(take("start_after_init"))?;
        let max_pinned = count(take("max_pinned"), DEFAULT_MAX_PINNED)?;
        let wake_service = match take("wake_service") {
            None => None,
            Some(r) => {
                let key = r.key.clone();
                parse_wake_service(&key, &r.string(false)?)?
            }
        };
        let idle_stop_after = match take("idle_stop_after") {
            None => None,
            Some(r) => {
                let key = r.key.clone();
                parse_session(&key, &r.string(false)?)?
            }
        };
        let supersede_keep = count(take("supersede_keep"), 0)?;
        let supersede_max_builds = count(take("supersede_max_builds"), 0)?;

        Ok(Settings {
            repos,
            api_admin_user,
            api_admin_passwd,
            max_initializing,
            max_started,
            max_deployed,
            build_namespace,
            build_domain,
            build_env,
            build_secret_env,
            build_template_vars,
            build_default_kubefiles_path,
            github_token,
            github_webhook_secret,
            base_url,
            additional_footer_html,
            disable_commit_statuses,
            github_deployments,
            deployment_resource_types,
            no_cleanup_job,
            start_after_init,
            max_pinned,
            idle_stop_after,
            wake_service,
            supersede_keep,
            supersede_max_builds,
        })
    }

    /// The build rule of the first repo rule matching `branch` of `repo`
    /// (repo compared case-insensitively), if any.
    pub fn rule_for(&self, repo: &str, branch: &str) -> Option<&BuildRule> {
        self.repos.iter().find(|r| r.matches(repo, branch)).map(|r| &r.build)
    }

    /// True when some repo rule supports `branch` of `repo`.
    pub fn is_supported(&self, repo: &str, branch: &str) -> bool {
        self.rule_for(repo, branch).is_some()
    }

    /// The scheduling limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_initializing: self.max_initializing,
            max_started: self.max_started,
            max_deployed: self.max_deployed,
            max_pinned: self.max_pinned,
        }
    }

    /// The kubefiles directory of `rule`: its own, else the default one;
    /// `None` means the embedded default kubefiles.
    pub fn kubefiles_path_for<'a>(&'a self, rule: &'a BuildRule) -> Option<&'a Path> {
        rule.kubefiles_path.as_deref().or(self.build_default_kubefiles_path.as_deref())
    }

    /// `build_env` extended (and overridden) by the rule's `env`.
    pub fn build_env_for(&self, rule: &BuildRule) -> BTreeMap<String, String> {
        let mut env = self.build_env.clone();
        env.extend(rule.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// `build_secret_env` extended (and overridden) by the rule's
    /// `secret_env`.
    pub fn build_secret_env_for(&self, rule: &BuildRule) -> BTreeMap<String, Secret> {
        let mut env = self.build_secret_env.clone();
        env.extend(rule.secret_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// `build_template_vars` extended (and overridden) by the rule's
    /// `template_vars`.
    pub fn build_template_vars_for(&self, rule: &BuildRule) -> BTreeMap<String, String> {
        let mut vars = self.build_template_vars.clone();
        vars.extend(rule.template_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }
}

#[cfg(test)]
mod tests;
