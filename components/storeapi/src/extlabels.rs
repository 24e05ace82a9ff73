//! External labels: deciding whether a store can match a request at all, which matchers remain for
//! the backend, and attaching or stripping labels on series.

use std::cmp::Ordering;

use crate::pb::thanos::Label;
use crate::validate::Matcher;

/// The outcome of matching a request against a store's external labels.
#[derive(Debug, Clone)]
pub enum ExternalMatch {
    /// A matcher on an external label fails: the store has no matching series.
    NoMatch,
    /// The store may match; these matchers (those not on external labels) go to the backend.
    Remaining(Vec<Matcher>),
}

/// Thanos semantics: a matcher on an external label's name is evaluated against that label's value
/// and, when it holds, is not sent to the backend (the backend's series do not carry the label);
/// when it fails, no series can match. Matchers on other names remain.
pub fn match_external(external: &[Label], matchers: &[Matcher]) -> ExternalMatch {
    let mut remaining = Vec::with_capacity(matchers.len());
    for m in matchers {
        match external.iter().find(|l| l.name == m.name) {
            Some(l) if !m.matches(&l.value) => return ExternalMatch::NoMatch,
            Some(_) => {}
            None => remaining.push(m.clone()),
        }
    }
    ExternalMatch::Remaining(remaining)
}

/// Compares label sets like Prometheus's `labels.Compare`: pairwise by name, then value; a prefix
/// sorts first.
pub fn compare_labels(a: &[Label], b: &[Label]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Adds external labels to a series' sorted labels; an external label replaces a series label of the
/// same name. Both inputs must be sorted by name; so is the result.
pub fn with_external_labels(series: Vec<Label>, external: &[Label]) -> Vec<Label> {
    if external.is_empty() {
        return series;
    }
    let mut out = Vec::with_capacity(series.len() + external.len());
    let mut ext = external.iter().peekable();
    for l in series {
        while let Some(e) = ext.next_if(|e| e.name < l.name) {
            out.push(e.clone());
        }
        if ext.peek().is_some_and(|e| e.name == l.name) {
            continue;
        }
        out.push(l);
    }
    out.extend(ext.cloned());
    out
}

/// Removes the named labels (e.g. `without_replica_labels`) from a label set.
pub fn strip_labels(labels: &mut Vec<Label>, names: &[String]) {
    if !names.is_empty() {
        labels.retain(|l| !names.contains(&l.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::thanos::LabelMatcher;

    fn l(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn m(ty: i32, n: &str, v: &str) -> Matcher {
        Matcher::from_pb(&LabelMatcher {
            r#type: ty,
            name: n.into(),
            value: v.into(),
        })
        .expect("valid matcher")
    }

    const EQ: i32 = 0;
    const NEQ: i32 = 1;
    const RE: i32 = 2;
    const NRE: i32 = 3;

    #[test]
    fn external_label_table() {
        let ext = vec![l("cluster", "eu1"), l("replica", "a")];
        // (matchers, expected: None = no match, Some(remaining names))
        let cases: Vec<(Vec<Matcher>, Option<Vec<&str>>)> = vec![
            (vec![m(EQ, "__name__", "up")], Some(vec!["__name__"])),
            (
                vec![m(EQ, "cluster", "eu1"), m(EQ, "job", "x")],
                Some(vec!["job"]),
            ),
            (vec![m(EQ, "cluster", "us1")], None),
            (vec![m(NEQ, "cluster", "eu1")], None),
            (vec![m(NEQ, "cluster", "us1")], Some(vec![])),
            (vec![m(RE, "cluster", "eu.*")], Some(vec![])),
            (vec![m(RE, "cluster", "eu")], None),
            (vec![m(NRE, "replica", "a|b")], None),
            (vec![m(NRE, "replica", "b")], Some(vec![])),
            // an empty-value matcher on an external label fails: the label is always set
            (vec![m(EQ, "cluster", "")], None),
            // a matcher on an absent name goes to the backend
            (vec![m(EQ, "zone", "")], Some(vec!["zone"])),
            (vec![], Some(vec![])),
        ];
        for (i, (ms, want)) in cases.into_iter().enumerate() {
            let got = match match_external(&ext, &ms) {
                ExternalMatch::NoMatch => None,
                ExternalMatch::Remaining(r) => {
                    Some(r.into_iter().map(|m| m.name).collect::<Vec<_>>())
                }
            };
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn no_external_labels_keeps_all() {
        match match_external(&[], &[m(EQ, "a", "b")]) {
            ExternalMatch::Remaining(r) => assert_eq!(r.len(), 1),
            ExternalMatch::NoMatch => panic!("no external labels cannot exclude"),
        }
    }

    #[test]
    fn attach_and_strip() {
        let s = vec![l("__name__", "up"), l("cluster", "old"), l("job", "x")];
        let ext = vec![l("a", "1"), l("cluster", "eu1"), l("zz", "9")];
        let out = with_external_labels(s, &ext);
        assert_eq!(
            out,
            vec![
                l("__name__", "up"),
                l("a", "1"),
                l("cluster", "eu1"),
                l("job", "x"),
                l("zz", "9")
            ]
        );
        let mut out = out;
        strip_labels(&mut out, &["cluster".into(), "zz".into()]);
        assert_eq!(out, vec![l("__name__", "up"), l("a", "1"), l("job", "x")]);
    }

    #[test]
    fn compare_is_prometheus_order() {
        let a = vec![l("a", "1")];
        let b = vec![l("a", "1"), l("b", "1")];
        let c = vec![l("a", "2")];
        assert_eq!(compare_labels(&a, &b), Ordering::Less);
        assert_eq!(compare_labels(&b, &c), Ordering::Less);
        assert_eq!(compare_labels(&c, &c), Ordering::Equal);
    }
}
