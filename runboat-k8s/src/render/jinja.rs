//! The minijinja environment kubefiles are rendered in, and the YAML-safe escaping
//! of every `{{ expression }}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

/// The name of our auto-escape format: every expression is written as a JSON value,
/// which YAML reads back exactly.
const YAML_ESCAPE: &str = "yaml";

/// How `{{ expression }}` output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escaping {
    /// Native kubefiles: in `*.yaml` / `*.yaml.jinja` templates every expression is
    /// emitted as a quoted YAML (JSON) scalar, so no value can inject YAML.
    Yaml,
    /// Kustomize kubefiles: plain Jinja2 output, as the original runboat rendered them;
    /// templates quote values with `| tojson`.
    None,
}

/// Builds the environment shared by every render of one kubefiles set.
///
/// `files` is every file of the set, for the `file(name)` function.
pub(crate) fn environment(
    files: Arc<BTreeMap<String, String>>,
    escaping: Escaping,
) -> Environment<'static> {
    let mut env = Environment::new();
    // Native kubefiles are ours: an undefined variable is a bug, refused.
    // Kustomize-format kubefiles are the original's format, which rendered
    // an undefined variable as "" (Jinja2's default `Undefined`): user
    // kubefiles that worked with it keep working.
    env.set_undefined_behavior(match escaping {
        Escaping::Yaml => UndefinedBehavior::Strict,
        Escaping::None => UndefinedBehavior::Lenient,
    });
    // Debug mode would attach the render context (secrets included) to errors.
    env.set_debug(false);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    // Jinja2's default drops a file's final newline; YAML and scripts keep theirs.
    syntax.keep_trailing_newline(true);
    if let Ok(syntax) = syntax.build() {
        env.set_syntax(syntax);
    }
    env.set_auto_escape_callback(move |name| {
        if escaping == Escaping::Yaml && is_yaml_template(name) {
            AutoEscape::Custom(YAML_ESCAPE.into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Custom(name) if name == YAML_ESCAPE)
            && !value.is_safe()
        {
            let scalar = yaml_value(value)?;
            out.write_str(&scalar).map_err(minijinja::Error::from)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    // The original runboat's templates are Jinja2 run by Python: `.items()` and
    // friends must keep working.
    env.set_unknown_method_callback(python_method);
    env.add_filter("tojson", |value: Value| -> Result<Value, minijinja::Error> {
        Ok(Value::from_safe_string(yaml_value(&value)?))
    });
    // Standard base64 with padding, as Kubernetes expects in a Secret's `data`.
    env.add_filter("b64encode", |value: String| {
        base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
    });
    env.add_function("file", move |name: String| -> Result<String, minijinja::Error> {
        files.get(&name).cloned().ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("file({name:?}): no such file in the kubefiles directory"),
            )
        })
    });
    env
}

/// The Python methods Jinja2 templates commonly call on dicts and strings.
fn python_method(
    _state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    use minijinja::value::ValueKind;
    let unknown = || {
        minijinja::Error::new(
            ErrorKind::UnknownMethod,
            format!("{} has no method named {method}", value.kind()),
        )
    };
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::UNDEFINED);
    let str_arg = |i: usize| -> Result<String, minijinja::Error> {
        args.get(i).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{method}() expects a string"),
            )
        })
    };
    match value.kind() {
        ValueKind::Map => {
            let keys = || value.try_iter().map(|keys| keys.collect::<Vec<Value>>());
            match method {
                "items" => Ok(Value::from(
                    keys()?
                        .into_iter()
                        .map(|key| {
                            let item = value.get_item(&key).unwrap_or(Value::UNDEFINED);
                            Value::from(vec![key, item])
                        })
                        .collect::<Vec<_>>(),
                )),
                "keys" => Ok(Value::from(keys()?)),
                "values" => Ok(Value::from(
                    keys()?
                        .into_iter()
                        .map(|key| value.get_item(&key).unwrap_or(Value::UNDEFINED))
                        .collect::<Vec<_>>(),
                )),
                "get" => {
                    let item = value.get_item(&arg(0))?;
                    Ok(if item.is_undefined() {
                        args.get(1).cloned().unwrap_or(Value::from(()))
                    } else {
                        item
                    })
                }
                _ => Err(unknown()),
            }
        }
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default();
            match method {
                "lower" => Ok(Value::from(text.to_lowercase())),
                "upper" => Ok(Value::from(text.to_uppercase())),
                "strip" => Ok(Value::from(text.trim())),
                "startswith" => Ok(Value::from(text.starts_with(&str_arg(0)?))),
                "endswith" => Ok(Value::from(text.ends_with(&str_arg(0)?))),
                "replace" => Ok(Value::from(text.replace(&str_arg(0)?, &str_arg(1)?))),
                "split" => Ok(Value::from(match args.first() {
                    Some(_) => {
                        text.split(str_arg(0)?.as_str()).map(Value::from).collect::<Vec<_>>()
                    }
                    None => text.split_whitespace().map(Value::from).collect::<Vec<_>>(),
                })),
                _ => Err(unknown()),
            }
        }
        _ => Err(unknown()),
    }
}

/// Whether a template is YAML (auto-escaped in native kubefiles).
pub(crate) fn is_yaml_template(name: &str) -> bool {
    let name = name.strip_suffix(".jinja").unwrap_or(name);
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Writes a template value as JSON restricted to characters YAML accepts verbatim.
///
/// JSON is a subset of YAML's flow syntax, so the result parses back to exactly the
/// same value. JSON leaves some characters raw that YAML forbids or treats as line
/// breaks (DEL, C1 controls, NEL, LS, PS, BOM, non-characters); those are written
/// as `\uXXXX` escapes, which both JSON and YAML double-quoted scalars understand.
pub(crate) fn yaml_value(value: &Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            "undefined value written to a kubefile",
        ));
    }
    let json = serde_json::to_string(value).map_err(|err| {
        minijinja::Error::new(ErrorKind::BadSerialization, "value cannot be written as YAML")
            .with_source(err)
    })?;
    if json.chars().all(yaml_verbatim) {
        return Ok(json);
    }
    let mut escaped = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if yaml_verbatim(c) {
            escaped.push(c);
        } else {
            // Every char outside the verbatim set is in the BMP (all of U+10000.. is
            // printable), so one \u escape is enough.
            escaped.push_str(&format!("\\u{:04x}", u32::from(c)));
        }
    }
    Ok(escaped)
}

/// YAML 1.2 `c-printable` minus the characters YAML 1.1 parsers treat as line
/// breaks or a byte order mark.
fn yaml_verbatim(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{7e}'
        | '\u{a0}'..='\u{2027}'
        | '\u{202a}'..='\u{d7ff}'
        | '\u{e000}'..='\u{fefe}'
        | '\u{ff00}'..='\u{fffd}'
        | '\u{10000}'..='\u{10ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(template: &str, name: &str, escaping: Escaping, ctx: Value) -> String {
        let mut env = environment(Arc::new(BTreeMap::new()), escaping);
        env.add_template_owned(name.to_owned(), template.to_owned()).expect("template compiles");
        env.get_template(name).expect("template").render(ctx).expect("renders")
    }

    #[test]
    fn yaml_templates_quote_every_expression() {
        let ctx = minijinja::context! { branch => "16.0: evil\nkind: Secret", n => 3 };
        let out = render("a: {{ branch }}\nb: {{ n }}\n", "x.yaml", Escaping::Yaml, ctx);
        assert_eq!(out, "a: \"16.0: evil\\nkind: Secret\"\nb: 3\n");
    }

    #[test]
    fn non_yaml_templates_and_kustomize_are_not_escaped() {
        let ctx = minijinja::context! { v => "a\"b" };
        assert_eq!(render("{{ v }}", "x.sh.jinja", Escaping::Yaml, ctx.clone()), "a\"b");
        assert_eq!(render("{{ v }}", "x.yaml.jinja", Escaping::None, ctx.clone()), "a\"b");
        assert_eq!(render("{{ v | tojson }}", "x.yaml", Escaping::None, ctx), "\"a\\\"b\"");
    }

    #[test]
    fn tojson_is_not_escaped_twice_and_safe_opts_out() {
        let ctx = minijinja::context! { v => "x" };
        assert_eq!(render("{{ v | tojson }}", "x.yaml", Escaping::Yaml, ctx.clone()), "\"x\"");
        assert_eq!(render("{{ v | safe }}", "x.yaml", Escaping::Yaml, ctx), "x");
    }

    #[test]
    fn yaml_line_breaks_and_controls_are_escaped() {
        let value = Value::from("a\u{85}b\u{2028}c\u{7f}d\u{feff}e\u{fffe}f");
        assert_eq!(
            yaml_value(&value).expect("escapes"),
            "\"a\\u0085b\\u2028c\\u007fd\\ufeffe\\ufffef\""
        );
    }

    #[test]
    fn undefined_renders_empty_in_kustomize_kubefiles_as_jinja2_does() {
        let ctx = minijinja::context! { vars => minijinja::context! { a => "1" } };
        let template = "x={{ nope }};y={{ vars['storageClassName'] }};\
            {% if vars.missing %}no{% else %}falsy{% endif %};{% for i in nope %}{{ i }}{% endfor %}";
        assert_eq!(render(template, "k.yaml.jinja", Escaping::None, ctx), "x=;y=;falsy;");
    }

    #[test]
    fn undefined_is_an_error_not_an_empty_string() {
        let mut env = environment(Arc::new(BTreeMap::new()), Escaping::Yaml);
        env.add_template_owned("x.yaml", "a: {{ nope }}").expect("compiles");
        let err = env.get_template("x.yaml").expect("t").render(()).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::UndefinedError);
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn b64encode_matches_known_vectors() {
        let mut env = environment(Arc::new(BTreeMap::new()), Escaping::None);
        env.add_template_owned("b.jinja", "{{ v | b64encode }}").expect("compiles");
        let template = env.get_template("b.jinja").expect("template");
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let out = template.render(minijinja::context! { v => plain }).expect("renders");
            assert_eq!(out, encoded);
        }
    }

    #[test]
    fn python_methods_of_the_original_templates_work() {
        let ctx =
            minijinja::context! { env => minijinja::context! { A => "1", B => "2" }, s => "Ab-c" };
        let template = "{% for k, v in env.items() %}{{ k }}={{ v }};{% endfor %}\
            {{ env.keys() | join(',') }} {{ env.get('A') }} {{ env.get('Z', 'z') }} \
            {{ s.lower() }} {{ s.startswith('Ab') }} {{ s.replace('-', '_') }} {{ s.split('-') }}";
        assert_eq!(
            render(template, "k.jinja", Escaping::None, ctx),
            "A=1;B=2;A,B 1 z ab-c True Ab_c ['Ab', 'c']"
        );
    }

    proptest! {
        #[test]
        fn any_string_round_trips_through_yaml(s in any::<String>()) {
            let scalar = yaml_value(&Value::from(s.clone())).expect("escapes");
            let doc = format!("k: {scalar}\n");
            let parsed: serde_json::Value = serde_saphyr::from_str(&doc).expect("valid YAML");
            prop_assert_eq!(parsed, serde_json::json!({ "k": s }));
        }
    }
}
