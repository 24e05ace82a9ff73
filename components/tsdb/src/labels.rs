//! `Labels`: a series' label set, sorted by name with unique names, ordered like Prometheus's
//! `labels.Compare`.

use std::fmt;

use crate::error::{Error, Result};

/// The label name that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A label set: `(name, value)` pairs sorted by name, names unique.
///
/// Ordering (`Ord`) compares pair by pair (name, then value) and then by length, which is the
/// order series are stored in a block index.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set from pairs in any order. Errors on duplicate or empty names.
    pub fn new(mut pairs: Vec<(String, String)>) -> Result<Self> {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for w in pairs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::InvalidArgument(format!(
                    "duplicate label name {:?}",
                    w[0].0
                )));
            }
        }
        if pairs.iter().any(|(n, _)| n.is_empty()) {
            return Err(Error::InvalidArgument("empty label name".into()));
        }
        Ok(Labels(pairs))
    }

    /// Builds a label set from string pairs in any order (see [`Labels::new`]).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Wraps pairs that the caller guarantees are sorted by name with unique names (as decoded
    /// from an index, where the order is checked separately).
    pub(crate) fn from_sorted(pairs: Vec<(String, String)>) -> Self {
        Labels(pairs)
    }

    /// Whether the pairs are strictly sorted by name.
    pub(crate) fn is_sorted_unique(pairs: &[(String, String)]) -> bool {
        pairs.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The pairs as a slice.
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }

    /// Consumes the set, returning its pairs.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

impl fmt::Display for Labels {
    /// Formats like Prometheus: `{__name__="up", job="x"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_lookup_and_order() {
        let a = Labels::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(a.get("a"), Some("1"));
        assert_eq!(a.get("c"), None);
        assert_eq!(a.to_string(), r#"{a="1", b="2"}"#);
        let b = Labels::from_pairs([("a", "1")]).unwrap();
        assert!(b < a, "prefix sorts first");
        let c = Labels::from_pairs([("a", "0"), ("z", "")]).unwrap();
        assert!(c < b, "value decides before length");
        assert!(Labels::from_pairs([("a", "1"), ("a", "2")]).is_err());
    }
}
