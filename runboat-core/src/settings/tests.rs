use proptest::prelude::*;

use super::*;

const MINIMAL_TOML: &str = r#"
api_admin_user = "admin"
api_admin_passwd = "hunter2"
build_namespace = "runboat-builds"
build_domain = "runboat.example.com"

[[repos]]
repo = "^oca/.*"
branch = "^1[5-7]\\.0$"
builds = [{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest", env = { PGHOST = "db" }, secret_env = { PGPASSWORD = "s3cr3t" } }]

[[repos]]
repo = "acsone/.*"
branch = ".*"
build = { image = "registry.local:5000/odoo", kubefiles_path = "/kubefiles/acsone" }
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

const MINIMAL_ENV: [(&str, &str); 5] = [
    (
        "RUNBOAT_REPOS",
        r#"[{"repo": "^oca/.*", "branch": "^16\\.0$", "builds": [{"image": "odoo:16"}]}]"#,
    ),
    ("RUNBOAT_API_ADMIN_USER", "admin"),
    ("RUNBOAT_API_ADMIN_PASSWD", "hunter2"),
    ("RUNBOAT_BUILD_NAMESPACE", "ns"),
    ("RUNBOAT_BUILD_DOMAIN", "example.com"),
];

fn with_env(extra: &[(&str, &str)]) -> Result<Settings> {
    let mut e = env(&MINIMAL_ENV);
    e.extend(env(extra));
    Settings::from_env(e)
}

fn setting_error(r: Result<Settings>) -> (String, String) {
    match r {
        Err(Error::Setting { key, message }) => (key, message),
        other => panic!("expected a setting error, got {other:?}"),
    }
}

#[test]
fn toml_minimal_with_defaults() {
    let s = Settings::from_toml_str(MINIMAL_TOML).expect("valid");
    assert_eq!(s.api_admin_user, "admin");
    assert_eq!(s.api_admin_passwd.expose(), "hunter2");
    assert_eq!((s.max_initializing, s.max_started, s.max_deployed), (2, 6, 10));
    assert_eq!(s.limits(), Limits::default());
    assert_eq!(s.base_url, "http://localhost:8000");
    assert_eq!(s.deployment_resource_types, DEFAULT_DEPLOYMENT_RESOURCE_TYPES);
    assert!(!s.disable_commit_statuses && !s.no_cleanup_job && !s.start_after_init);
    assert_eq!(s.github_token, None);
    assert_eq!(s.repos.len(), 2);
    let rule = &s.repos[0].build;
    assert_eq!(rule.image_name, "ghcr.io/oca/oca-ci/py3.10-odoo16.0");
    assert_eq!(rule.image_tag, "latest");
    assert_eq!(rule.env.get("PGHOST").map(String::as_str), Some("db"));
    assert_eq!(rule.secret_env.get("PGPASSWORD").map(Secret::expose), Some("s3cr3t"));
    let acsone = &s.repos[1].build;
    assert_eq!(
        (acsone.image_name.as_str(), acsone.image_tag.as_str()),
        ("registry.local:5000/odoo", "latest")
    );
    assert_eq!(s.kubefiles_path_for(acsone), Some(Path::new("/kubefiles/acsone")));
    assert_eq!(s.kubefiles_path_for(rule), None);
}

#[test]
fn env_in_the_original_format() {
    let s = with_env(&[
        ("RUNBOAT_MAX_STARTED", "100"),
        ("runboat_max_deployed", "1000"),
        ("RUNBOAT_BUILD_ENV", r#"{"A": "1"}"#),
        ("RUNBOAT_BUILD_SECRET_ENV", r#"{"B": "2"}"#),
        ("RUNBOAT_BUILD_TEMPLATE_VARS", r#"{"C": "3"}"#),
        ("RUNBOAT_DISABLE_COMMIT_STATUSES", "1"),
        ("RUNBOAT_NO_CLEANUP_JOB", "true"),
        ("RUNBOAT_DEPLOYMENT_RESOURCE_TYPES", "deployment, service,job"),
        ("RUNBOAT_GITHUB_TOKEN", "ghp_x"),
        ("RUNBOAT_GITHUB_WEBHOOK_SECRET", "whsec"),
        ("RUNBOAT_BASE_URL", "https://runboat.example.com/"),
        ("RUNBOAT_BUILD_DEFAULT_KUBEFILES_PATH", "/k"),
        ("RUNBOAT_ADDITIONAL_FOOTER_HTML", "<b>hi</b>"),
        ("RUNBOAT_LOG_CONFIG", "ignored.yaml"),
        ("PATH", "/usr/bin"),
    ])
    .expect("valid");
    assert_eq!((s.max_started, s.max_deployed), (100, 1000));
    assert_eq!(s.build_env.get("A").map(String::as_str), Some("1"));
    assert_eq!(s.build_secret_env.get("B").map(Secret::expose), Some("2"));
    assert_eq!(s.build_template_vars.get("C").map(String::as_str), Some("3"));
    assert!(s.disable_commit_statuses && s.no_cleanup_job);
    assert_eq!(s.deployment_resource_types, vec!["deployment", "service", "job"]);
    assert_eq!(s.github_token.as_ref().map(Secret::expose), Some("ghp_x"));
    assert_eq!(s.github_webhook_secret.as_ref().map(Secret::expose), Some("whsec"));
    assert_eq!(s.base_url, "https://runboat.example.com");
    assert_eq!(s.build_default_kubefiles_path.as_deref(), Some(Path::new("/k")));
    assert_eq!(s.additional_footer_html, "<b>hi</b>");
    assert_eq!(s.rule_for("OCA/web", "16.0").map(|r| r.image_tag.as_str()), Some("16"));
}

#[test]
fn env_overrides_the_file_key_by_key() {
    let s = Settings::load(
        Some(MINIMAL_TOML),
        env(&[("RUNBOAT_MAX_STARTED", "3"), ("RUNBOAT_BUILD_NAMESPACE", "other")]),
    )
    .expect("valid");
    assert_eq!(s.max_started, 3);
    assert_eq!(s.build_namespace, "other");
    assert_eq!(s.build_domain, "runboat.example.com");
    assert_eq!(s.repos.len(), 2, "repos from the file");
}

#[test]
fn first_matching_rule_wins_and_repo_is_case_insensitive() {
    let toml = MINIMAL_TOML.replace("acsone/.*", "(oca|acsone)/.*");
    let s = Settings::from_toml_str(&toml).expect("valid");
    // Both rules match oca 16.0: the first wins.
    assert_eq!(s.rule_for("OCA/Web", "16.0").map(|r| r.image_tag.as_str()), Some("latest"));
    assert_eq!(s.rule_for("oca/web", "16.0"), Some(&s.repos[0].build));
    // Only the second matches oca 14.0.
    assert_eq!(s.rule_for("oca/web", "14.0"), Some(&s.repos[1].build));
    assert!(s.is_supported("ACSONE/x", "anything"));
    assert!(!s.is_supported("other/x", "16.0"));
    // Branch patterns are case-sensitive; `$` makes them match the whole name.
    let s = Settings::from_toml_str(MINIMAL_TOML).expect("valid");
    assert!(!s.is_supported("oca/web", "16.0-mig"));
    assert!(!s.is_supported("xoca/web", "16.0"));
    assert!(!s.is_supported("oca/web", "16.x"));
}

#[test]
fn patterns_match_from_the_start_like_python_re_match() {
    let rule = RepoRule::new("oca/web", "16\\.0", BuildRule::new("odoo")).expect("valid");
    assert!(rule.matches("oca/web", "16.0"));
    // Python's re.match anchors at the start only: a prefix match counts.
    assert!(rule.matches("oca/web-x", "16.0"));
    assert!(rule.matches("oca/web", "16.0-foo"));
    assert!(!rule.matches("x-oca/web", "16.0"));
    assert!(!rule.matches("oca/web", "x16.0"));
    // `$` anchors the end, as in Python.
    let rule = RepoRule::new("oca/web$", "16\\.0$", BuildRule::new("odoo")).expect("valid");
    assert!(!rule.matches("oca/web-x", "16.0"));
    assert!(!rule.matches("oca/web", "16.0-foo"));
    // Alternations stay inside the anchor: `a|b` never matches in the middle.
    let rule = RepoRule::new("a|b", "x|y", BuildRule::new("odoo")).expect("valid");
    assert!(rule.matches("b", "x"));
    assert!(rule.matches("ab", "x"));
    assert!(!rule.matches("cb", "x"));
}

/// Limits of 0 are valid, as in the original: admins use them to pause.
#[test]
fn limits_of_zero_pause() {
    let s = with_env(&[
        ("RUNBOAT_MAX_INITIALIZING", "0"),
        ("RUNBOAT_MAX_STARTED", "0"),
        ("RUNBOAT_MAX_DEPLOYED", "0"),
    ])
    .expect("zero limits");
    assert_eq!(
        s.limits(),
        Limits { max_initializing: 0, max_started: 0, max_deployed: 0, max_pinned: 5 }
    );
    let s = Settings::from_toml_str(&format!("max_started = 0\n{MINIMAL_TOML}")).expect("zero");
    assert_eq!(s.max_started, 0);
}

#[test]
fn errors_name_the_key() {
    let (key, msg) = setting_error(with_env(&[("RUNBOAT_MAX_STARTED", "abc")]));
    assert_eq!(key, "RUNBOAT_MAX_STARTED");
    assert_eq!(msg, r#"expected a non-negative integer, got "abc""#);
    let e = with_env(&[("RUNBOAT_MAX_DEPLOYED", "-1")]).expect_err("negative");
    assert_eq!(e.to_string(), r#"RUNBOAT_MAX_DEPLOYED: expected a non-negative integer, got "-1""#);
    let e = Settings::from_toml_str(&format!("max_initializing = -2\n{MINIMAL_TOML}"))
        .expect_err("negative");
    assert_eq!(
        e.to_string(),
        "max_initializing: expected a non-negative integer, got a number (-2)"
    );
    let (key, _) = setting_error(with_env(&[("RUNBOAT_NO_CLEANUP_JOB", "maybe")]));
    assert_eq!(key, "RUNBOAT_NO_CLEANUP_JOB");
    let (key, msg) = setting_error(with_env(&[("RUNBOAT_BUILD_ENV", "{not json")]));
    assert_eq!(key, "RUNBOAT_BUILD_ENV");
    assert!(msg.starts_with("invalid JSON"), "{msg}");
    let (key, _) = setting_error(with_env(&[("RUNBOAT_BUILD_ENV", r#"{"A": 1}"#)]));
    assert_eq!(key, "RUNBOAT_BUILD_ENV.A");
    let (key, _) = setting_error(with_env(&[("RUNBOAT_BASE_URL", "localhost")]));
    assert_eq!(key, "RUNBOAT_BASE_URL");
    let (key, _) = setting_error(with_env(&[("RUNBOAT_DEPLOYMENT_RESOURCE_TYPES", " , ")]));
    assert_eq!(key, "RUNBOAT_DEPLOYMENT_RESOURCE_TYPES");
    let (key, _) = setting_error(with_env(&[("RUNBOAT_BUILD_NAMESPACE", " ")]));
    assert_eq!(key, "RUNBOAT_BUILD_NAMESPACE");
}

#[test]
fn missing_required_settings_are_named() {
    for name in ["repos", "api_admin_user", "api_admin_passwd", "build_namespace", "build_domain"] {
        let e: Vec<(String, String)> = env(&MINIMAL_ENV)
            .into_iter()
            .filter(|(k, _)| k != &format!("RUNBOAT_{}", name.to_ascii_uppercase()))
            .collect();
        let (key, msg) = setting_error(Settings::from_env(e));
        assert_eq!(key, name);
        assert!(msg.contains("required"), "{msg}");
    }
}

#[test]
fn bad_repo_rules_are_located() {
    let bad_regex = MINIMAL_TOML.replace(r#"branch = ".*""#, r#"branch = "(""#);
    match Settings::from_toml_str(&bad_regex) {
        Err(Error::SettingRegex { key, source }) => {
            assert_eq!(key, "repos[1].branch");
            assert!(!source.to_string().is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    let e = with_env(&[(
        "RUNBOAT_REPOS",
        r#"[{"repo": "[", "branch": "x", "build": {"image": "i"}}]"#,
    )])
    .expect_err("bad regex");
    assert_eq!(e.to_string(), "RUNBOAT_REPOS[0].repo: invalid regex");
    let cases = [
        (r#"[{"repo": "x", "branch": "x", "builds": []}]"#, "RUNBOAT_REPOS[0].builds"),
        (
            r#"[{"repo": "x", "branch": "x", "builds": [{"image": "a"}, {"image": "b"}]}]"#,
            "RUNBOAT_REPOS[0].builds",
        ),
        (r#"[{"repo": "x", "builds": [{"image": "a"}]}]"#, "RUNBOAT_REPOS[0].branch"),
        (r#"[{"repo": "x", "branch": "x", "builds": [{}]}]"#, "RUNBOAT_REPOS[0].builds[0].image"),
        (
            r#"[{"repo": "x", "branch": "x", "builds": [{"image": "a", "imag": "b"}]}]"#,
            "RUNBOAT_REPOS[0].builds[0].imag",
        ),
        (r#"[{"repo": "x", "branch": "x", "buildz": []}]"#, "RUNBOAT_REPOS[0].buildz"),
        (r#"{"repo": "x"}"#, "RUNBOAT_REPOS"),
        (
            r#"[{"repo": "x", "branch": "x", "builds": [{"image": "a", "env": {"K": 1}}]}]"#,
            "RUNBOAT_REPOS[0].builds[0].env.K",
        ),
    ];
    for (json, want) in cases {
        let (key, _) = setting_error(with_env(&[("RUNBOAT_REPOS", json)]));
        assert_eq!(key, want, "{json}");
    }
}

#[test]
fn unknown_toml_keys_are_errors() {
    let (key, msg) =
        setting_error(Settings::from_toml_str(&format!("max_startd = 3\n{MINIMAL_TOML}")));
    assert_eq!(key, "max_startd");
    assert!(msg.starts_with("unknown setting"));
    let nested = MINIMAL_TOML.replace("kubefiles_path =", "kubefile_path =");
    let (key, _) = setting_error(Settings::from_toml_str(&nested));
    assert_eq!(key, "repos[1].build.kubefile_path");
}

#[test]
fn toml_syntax_errors_give_a_position() {
    match Settings::from_toml_str("a = 1\nb = = 2\n") {
        Err(Error::SettingsToml { line, .. }) => assert_eq!(line, 2),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn secrets_are_redacted_everywhere() {
    let s = with_env(&[
        ("RUNBOAT_GITHUB_TOKEN", "ghp_TOPSECRET"),
        ("RUNBOAT_GITHUB_WEBHOOK_SECRET", "whsec_TOPSECRET"),
        ("RUNBOAT_BUILD_SECRET_ENV", r#"{"PW": "pw_TOPSECRET"}"#),
        ("RUNBOAT_API_ADMIN_PASSWD", "adm_TOPSECRET"),
    ])
    .expect("valid");
    let debug = format!("{s:?}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
    assert!(debug.contains("[redacted]"));
    assert_eq!(Secret::new("x").to_string(), "[redacted]");
    // A bad secret value is described by its type only.
    let e =
        Settings::from_toml_str(&format!("build_secret_env = {{ PW = 123456 }}\n{MINIMAL_TOML}"))
            .expect_err("bad");
    assert!(!e.to_string().contains("123456"), "{e}");
    let e = Settings::from_toml_str(&format!("github_token = 987654\n{MINIMAL_TOML}"))
        .expect_err("bad");
    assert!(!e.to_string().contains("987654"), "{e}");
}

#[test]
fn secret_matches_compares_whole_values() {
    let s = Secret::new("hunter2");
    assert!(s.matches("hunter2"));
    assert!(!s.matches("hunter"));
    assert!(!s.matches("hunter22"));
    assert!(!s.matches(""));
    assert!(Secret::new("").matches(""));
}

#[test]
fn image_split_at_the_tag_only() {
    let cases = [
        ("odoo", ("odoo", "latest")),
        ("odoo:16.0", ("odoo", "16.0")),
        ("ghcr.io/oca/odoo:16.0", ("ghcr.io/oca/odoo", "16.0")),
        ("registry:5000/odoo", ("registry:5000/odoo", "latest")),
        ("registry:5000/odoo:17", ("registry:5000/odoo", "17")),
        ("odoo:", ("odoo", "latest")),
    ];
    for (image, (name, tag)) in cases {
        assert_eq!(split_image(image), (name.to_owned(), tag.to_owned()), "{image}");
    }
}

#[test]
fn rule_values_extend_the_global_ones() {
    let s = Settings::from_toml_str(&format!(
        "build_env = {{ PGHOST = \"global\", A = \"a\" }}\nbuild_template_vars = {{ T = \"1\" }}\n{MINIMAL_TOML}"
    ))
    .expect("valid");
    let rule = &s.repos[0].build;
    let env = s.build_env_for(rule);
    assert_eq!(env.get("PGHOST").map(String::as_str), Some("db"));
    assert_eq!(env.get("A").map(String::as_str), Some("a"));
    assert_eq!(s.build_secret_env_for(rule).len(), 1);
    assert_eq!(s.build_template_vars_for(rule).get("T").map(String::as_str), Some("1"));
}

#[test]
fn unknown_env_keys_are_reported() {
    let keys = unknown_env_keys(env(&[
        ("RUNBOAT_LOG_CONFIG", "x"),
        ("RUNBOAT_MAX_STARTED", "1"),
        ("HOME", "/root"),
    ]));
    assert_eq!(keys, vec!["RUNBOAT_LOG_CONFIG"]);
}

#[test]
fn deployment_resource_types_accept_a_list_in_toml() {
    let s = Settings::from_toml_str(&format!(
        "deployment_resource_types = [\"deployment\", \"pvc\"]\n{MINIMAL_TOML}"
    ))
    .expect("valid");
    assert_eq!(s.deployment_resource_types, vec!["deployment", "pvc"]);
    let s = with_env(&[("RUNBOAT_DEPLOYMENT_RESOURCE_TYPES", r#"["job"]"#)]).expect("valid");
    assert_eq!(s.deployment_resource_types, vec!["job"]);
}

proptest! {
    // Any environment value either loads or gives a Setting error naming the
    // variable; never a panic.
    #[test]
    fn env_values_never_panic(
        key in prop::sample::select(SETTING_KEYS.to_vec()),
        value in prop_oneof![".{0,30}", "[\\[\\]{}\":,0-9a-z ]{0,30}"],
    ) {
        let var = format!("RUNBOAT_{}", key.to_ascii_uppercase());
        match with_env(&[(&var, &value)]) {
            Ok(_) => {}
            Err(Error::Setting { key: k, .. }) | Err(Error::SettingRegex { key: k, .. }) => {
                prop_assert!(k.starts_with(&var), "{} does not name {}", k, var);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn toml_text_never_panics(text in ".{0,60}") {
        let _ = Settings::from_toml_str(&text);
    }

    #[test]
    fn split_image_keeps_everything(image in "[a-z0-9:/.]{0,20}") {
        let (name, tag) = split_image(&image);
        prop_assert!(!tag.is_empty());
        prop_assert!(!tag.contains('/'));
        if tag != "latest" || image.ends_with(":latest") {
            prop_assert_eq!(format!("{name}:{tag}"), image);
        }
    }
}

#[test]
fn idle_stop_after_parses_durations_and_is_off_by_default() {
    let s = Settings::from_toml_str(MINIMAL_TOML).expect("valid");
    assert_eq!(s.idle_stop_after, None);
    assert_eq!(s.max_pinned, DEFAULT_MAX_PINNED);
    let secs = |t: &str| parse_session("idle_stop_after", t).map(|d| d.map(|d| d.as_secs()));
    assert_eq!(secs("2h").expect("2h"), Some(7200));
    assert_eq!(secs("30m").expect("30m"), Some(1800));
    assert_eq!(secs("1h30m").expect("1h30m"), Some(5400));
    assert_eq!(secs(" 45s ").expect("45s"), Some(45));
    assert_eq!(secs("off").expect("off"), None);
    assert_eq!(secs("0").expect("0"), None);
    for bad in ["2", "h", "2d", "-1h", "1.5h", "0h", "31d", "721h", "9999999999h", "2 h"] {
        let e = secs(bad).expect_err(bad).to_string();
        assert!(e.contains("idle_stop_after"), "{bad}: {e}");
    }
    let s = Settings::from_toml_str(&format!(
        "idle_stop_after = \"90m\"\nmax_pinned = 0\n{MINIMAL_TOML}"
    ))
    .expect("valid");
    assert_eq!(s.idle_stop_after, Some(std::time::Duration::from_secs(5400)));
    assert_eq!(s.limits().max_pinned, 0);
    let e = Settings::from_toml_str(&format!("idle_stop_after = \"soon\"\n{MINIMAL_TOML}"))
        .expect_err("invalid");
    assert!(e.to_string().contains("idle_stop_after"), "{e}");
    let s =
        with_env(&[("RUNBOAT_IDLE_STOP_AFTER", "2h"), ("RUNBOAT_MAX_PINNED", "3")]).expect("env");
    assert_eq!(s.idle_stop_after, Some(std::time::Duration::from_secs(7200)));
    assert_eq!(s.max_pinned, 3);
}

proptest! {
    #[test]
    fn parse_session_never_panics(s in "\\PC{0,20}") {
        let _ = parse_session("idle_stop_after", &s);
    }
}

#[test]
fn wake_service_is_a_service_name_and_port() {
    let s = Settings::from_toml_str(MINIMAL_TOML).expect("valid");
    assert_eq!(s.wake_service, None);
    let ws = |t: &str| parse_wake_service("wake_service", t);
    assert_eq!(
        ws("runboat-wake:8080").expect("valid"),
        Some(WakeService { name: "runboat-wake".into(), port: 8080 })
    );
    assert_eq!(ws("").expect("off"), None);
    for bad in
        ["runboat-wake", "Runboat:80", "-a:80", "a-:80", "a:0", "a:65536", "a.b:80", ":80", "a:x"]
    {
        let e = ws(bad).expect_err(bad).to_string();
        assert!(e.contains("wake_service") && e.contains("name:port"), "{bad}: {e}");
    }
    let s = with_env(&[("RUNBOAT_WAKE_SERVICE", "wake:80")]).expect("env");
    assert_eq!(s.wake_service.map(|w| w.port), Some(80));
}
