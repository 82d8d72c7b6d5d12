//! Label and field selectors, parsed from their query-string syntax.

use crate::validate::{label_key_error, label_value_error};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(pub(crate) Vec<Requirement>);

impl LabelSelector {
    /// Parses the `labelSelector` query syntax (`a=b,c!=d,e in (x,y),!f,g`).
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let chars: Vec<char> = input.chars().collect();
        let mut pos = 0;
        let skip_ws = |pos: &mut usize| {
            while *pos < chars.len() && chars[*pos].is_whitespace() {
                *pos += 1;
            }
        };
        let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
        loop {
            skip_ws(&mut pos);
            if pos >= chars.len() {
                break;
            }
            let negated = chars[pos] == '!';
            if negated {
                pos += 1;
                skip_ws(&mut pos);
            }
            let start = pos;
            while pos < chars.len() && is_key_char(chars[pos]) {
                pos += 1;
            }
            let key: String = chars[start..pos].iter().collect();
            if key.is_empty() {
                return Err(format!(
                    "unable to parse requirement: found '{}', expected: identifier",
                    rest(&chars, pos)
                ));
            }
            if let Some(err) = label_key_error(&key) {
                return Err(format!(
                    "unable to parse requirement: invalid label key \"{key}\": {err}"
                ));
            }
            skip_ws(&mut pos);
            if negated {
                reqs.push(Requirement::DoesNotExist(key));
            } else if pos >= chars.len() || chars[pos] == ',' {
                reqs.push(Requirement::Exists(key));
            } else if chars[pos] == '=' || chars[pos] == '!' {
                let not = chars[pos] == '!';
                pos += 1;
                if pos < chars.len() && chars[pos] == '=' {
                    pos += 1;
                } else if not {
                    return Err("unable to parse requirement: expected '=' after '!'".into());
                }
                skip_ws(&mut pos);
                let start = pos;
                while pos < chars.len() && chars[pos] != ',' && !chars[pos].is_whitespace() {
                    pos += 1;
                }
                let value: String = chars[start..pos].iter().collect();
                check_value(&value)?;
                reqs.push(if not {
                    Requirement::NotEquals(key, value)
                } else {
                    Requirement::Equals(key, value)
                });
            } else {
                let start = pos;
                while pos < chars.len() && chars[pos].is_ascii_alphabetic() {
                    pos += 1;
                }
                let op: String = chars[start..pos].iter().collect();
                if op != "in" && op != "notin" {
                    return Err(format!(
                        "unable to parse requirement: found '{op}', expected: in, notin, =, ==, !="
                    ));
                }
                skip_ws(&mut pos);
                if pos >= chars.len() || chars[pos] != '(' {
                    return Err("unable to parse requirement: found '', expected: '('".into());
                }
                pos += 1;
                let start = pos;
                while pos < chars.len() && chars[pos] != ')' {
                    pos += 1;
                }
                if pos >= chars.len() {
                    return Err("unable to parse requirement: found '', expected: ')'".into());
                }
                let inner: String = chars[start..pos].iter().collect();
                pos += 1;
                let mut values = Vec::new();
                for v in inner.split(',') {
                    let v = v.trim().to_string();
                    check_value(&v)?;
                    values.push(v);
                }
                values.sort();
                values.dedup();
                reqs.push(if op == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                });
            }
            skip_ws(&mut pos);
            if pos < chars.len() {
                if chars[pos] != ',' {
                    return Err(format!(
                        "unable to parse requirement: found '{}', expected: ','",
                        rest(&chars, pos)
                    ));
                }
                pos += 1;
                skip_ws(&mut pos);
                if pos >= chars.len() {
                    return Err(
                        "unable to parse requirement: found '', expected: identifier".into()
                    );
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a sorted label list satisfies every requirement.
    pub(crate) fn matches(&self, labels: &[(String, String)]) -> bool {
        let get = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        self.0.iter().all(|req| match req {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Renders the selector back to query syntax.
    pub(crate) fn render(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|req| match req {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        parts.join(",")
    }
}

fn rest(chars: &[char], pos: usize) -> String {
    chars[pos.min(chars.len())..].iter().take(20).collect()
}

fn check_value(value: &str) -> Result<(), String> {
    match label_value_error(value) {
        Some(err) => {
            Err(format!("unable to parse requirement: invalid label value: \"{value}\": {err}"))
        }
        None => Ok(()),
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(pub(crate) Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a field selector, accepting only the given field labels.
    pub(crate) fn parse(input: &str, allowed: &dyn Fn(&str) -> bool) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in input.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!("invalid selector: '{input}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !allowed(field) {
                return Err(format!("field label not supported: {field}"));
            }
            out.push((field.to_string(), negated, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `lookup(field)` satisfies every requirement.
    pub(crate) fn matches(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|(field, negated, value)| {
            let actual = lookup(field).unwrap_or_default();
            (actual == *value) != *negated
        })
    }

    /// The name required by `metadata.name=x`, if any: lists can then look
    /// up one key instead of scanning.
    pub(crate) fn exact_name(&self) -> Option<&str> {
        self.0.iter().find(|(f, neg, _)| f == "metadata.name" && !neg).map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_every_operator() {
        let sel =
            LabelSelector::parse("a=1, b==2,c!=3,d in (x, y),e notin (z),f,!g").expect("parses");
        assert_eq!(
            sel.0,
            vec![
                Requirement::Equals("a".into(), "1".into()),
                Requirement::Equals("b".into(), "2".into()),
                Requirement::NotEquals("c".into(), "3".into()),
                Requirement::In("d".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("e".into(), vec!["z".into()]),
                Requirement::Exists("f".into()),
                Requirement::DoesNotExist("g".into()),
            ]
        );
    }

    #[test]
    fn matches_like_kubernetes() {
        let l = labels(&[("runboat/build", "b1"), ("app", "odoo")]);
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(&l);
        assert!(m("runboat/build"));
        assert!(m("runboat/build=b1"));
        assert!(!m("runboat/build!=b1"));
        assert!(m("missing!=x"));
        assert!(m("app in (odoo,web)"));
        assert!(!m("app notin (odoo)"));
        assert!(m("missing notin (odoo)"));
        assert!(!m("missing in (odoo)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m(""));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a=b=c", "a in x", "a in (x", "a,", "a~b", "a=b c", "=b", "a=-b-"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selectors() {
        let allowed = |f: &str| f == "metadata.name" || f == "status.phase";
        let sel = FieldSelector::parse("metadata.name=x,status.phase!=Running", &allowed)
            .expect("parses");
        assert_eq!(sel.exact_name(), Some("x"));
        let lookup = |f: &str| match f {
            "metadata.name" => Some("x".to_string()),
            _ => Some("Pending".to_string()),
        };
        assert!(sel.matches(&lookup));
        assert_eq!(
            FieldSelector::parse("spec.foo=1", &allowed),
            Err("field label not supported: spec.foo".to_string())
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s, &|_| true);
        }

        #[test]
        fn render_round_trips(
            keys in proptest::collection::vec("[a-z][a-z0-9]{0,6}", 1..5),
            values in proptest::collection::vec("[a-z0-9]{1,6}", 1..5),
            ops in proptest::collection::vec(0u8..6, 1..5),
        ) {
            let reqs: Vec<Requirement> = keys.iter().zip(ops.iter()).enumerate().map(|(i, (k, op))| {
                let v = values[i % values.len()].clone();
                match op {
                    0 => Requirement::Equals(k.clone(), v),
                    1 => Requirement::NotEquals(k.clone(), v),
                    2 => Requirement::In(k.clone(), vec![v]),
                    3 => Requirement::NotIn(k.clone(), vec![v]),
                    4 => Requirement::Exists(k.clone()),
                    _ => Requirement::DoesNotExist(k.clone()),
                }
            }).collect();
            let sel = LabelSelector(reqs);
            prop_assert_eq!(LabelSelector::parse(&sel.render()), Ok(sel));
        }
    }
}
