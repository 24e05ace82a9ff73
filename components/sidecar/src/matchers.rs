//! StoreAPI matchers: validation (bad regex → InvalidArgument) and matching against external labels.

use strata_storeapi::pb::thanos::LabelMatcher;
use strata_storeapi::validate::{self, MatchOp};

use crate::pb::Label;
use crate::prom::{MatchKind, Matcher};

/// A validated matcher: what Prometheus is sent, and the StoreAPI matcher (with its regex compiled
/// the way `strata-storeapi` validates every StoreAPI request) to evaluate external labels.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The matcher as sent to Prometheus.
    pub matcher: Matcher,
    checked: validate::Matcher,
}

impl Compiled {
    /// Whether `value` satisfies the matcher (a missing label has value "").
    pub fn matches(&self, value: &str) -> bool {
        self.checked.matches(value)
    }
}

/// Validates and compiles StoreAPI matchers; the error text is meant for an InvalidArgument status.
pub fn compile(matchers: &[LabelMatcher]) -> Result<Vec<Compiled>, String> {
    let checked = validate::matchers(matchers).map_err(|s| s.message().to_owned())?;
    Ok(checked
        .into_iter()
        .map(|c| {
            let (kind, value) = match &c.op {
                MatchOp::Eq(v) => (MatchKind::Equal, v.clone()),
                MatchOp::Neq(v) => (MatchKind::NotEqual, v.clone()),
                MatchOp::Re(src, _) => (MatchKind::Regex, src.clone()),
                MatchOp::Nre(src, _) => (MatchKind::NotRegex, src.clone()),
            };
            Compiled {
                matcher: Matcher {
                    kind,
                    name: c.name.clone(),
                    value,
                },
                checked: c,
            }
        })
        .collect())
}

/// Checks the matchers on external label names against their values: `None` when one fails (the
/// request selects nothing here), otherwise the matchers left for Prometheus.
pub fn strip_external(matchers: Vec<Compiled>, external: &[Label]) -> Option<Vec<Compiled>> {
    let mut rest = Vec::with_capacity(matchers.len());
    for m in matchers {
        match external.iter().find(|l| l.name == m.matcher.name) {
            Some(l) if m.matches(&l.value) => {}
            Some(_) => return None,
            None => rest.push(m),
        }
    }
    Some(rest)
}

/// Adds the external labels to a sorted label set (an external label replaces a series label of the
/// same name, as Thanos does), skipping external labels named in `drop`.
pub fn extend_sorted(series: Vec<Label>, external: &[Label], drop: &[String]) -> Vec<Label> {
    let mut out: Vec<Label> = series
        .into_iter()
        .filter(|l| !external.iter().any(|e| e.name == l.name))
        .collect();
    out.extend(external.iter().filter(|e| !drop.contains(&e.name)).cloned());
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_storeapi::pb::thanos::label_matcher::Type;

    fn m(t: Type, name: &str, value: &str) -> LabelMatcher {
        LabelMatcher {
            r#type: t as i32,
            name: name.into(),
            value: value.into(),
        }
    }

    fn l(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn regexes_are_anchored_and_invalid_ones_rejected() {
        let c = compile(&[m(Type::Re, "a", "fo+")]).expect("valid");
        assert!(c[0].matches("foo"));
        assert!(!c[0].matches("xfoo"));
        let err = compile(&[m(Type::Re, "a", "(")]).expect_err("invalid");
        assert!(err.contains("bad regex"), "{err}");
        assert!(
            compile(&[LabelMatcher {
                r#type: 9,
                name: "a".into(),
                value: String::new()
            }])
            .is_err()
        );
    }

    #[test]
    fn external_label_matchers_are_checked_and_removed() {
        let ext = [l("cluster", "eu"), l("replica", "0")];
        let ok =
            compile(&[m(Type::Eq, "cluster", "eu"), m(Type::Re, "job", "p.*")]).expect("valid");
        let rest = strip_external(ok, &ext).expect("matches");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].matcher.name, "job");
        let no = compile(&[m(Type::Neq, "replica", "0")]).expect("valid");
        assert!(strip_external(no, &ext).is_none());
    }

    #[test]
    fn external_labels_win_and_can_be_dropped() {
        let got = extend_sorted(
            vec![l("__name__", "up"), l("cluster", "series")],
            &[l("cluster", "ext"), l("replica", "0")],
            &["replica".into()],
        );
        assert_eq!(got, vec![l("__name__", "up"), l("cluster", "ext")]);
    }
}
