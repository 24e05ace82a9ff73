//! Values the engine reads and returns: label sets, stored series and query results.

use std::fmt;
use std::sync::Arc;

use crate::histogram::FloatHistogram;

/// The bit pattern Prometheus writes as a staleness marker: a NaN that ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `f` is exactly the staleness-marker NaN (not any other NaN).
pub fn is_stale_nan(f: f64) -> bool {
    f.to_bits() == STALE_NAN_BITS
}

/// A label set, kept sorted by label name, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set from pairs; sorts them, a later duplicate name wins, empty values are dropped.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut v: Vec<(String, String)> = Vec::new();
        for (k, val) in pairs {
            if let Some(e) = v.iter_mut().find(|(n, _)| *n == k) {
                e.1 = val;
            } else {
                v.push((k, val));
            }
        }
        v.retain(|(_, val)| !val.is_empty());
        v.sort();
        Labels(v)
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All `(name, value)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }

    /// Sets (or, for an empty value, removes) label `name`.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.0.push((name.to_string(), value.to_string()));
            self.0.sort();
        }
    }

    /// Removes label `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// Only the labels whose names are in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| names.contains(n))
                .cloned()
                .collect(),
        )
    }

    /// The labels whose names are not in `names`.
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| !names.contains(n))
                .cloned()
                .collect(),
        )
    }

    /// Go's `%s` form of a label set as Prometheus errors print it: `{__name__="a", b="c"}`.
    pub fn go_string(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{{{}}}", parts.join(", "))
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.get("__name__");
        if let Some(n) = name {
            write!(f, "{n}")?;
        }
        let rest: Vec<_> = self.0.iter().filter(|(n, _)| n != "__name__").collect();
        if rest.is_empty() && name.is_some() {
            return Ok(());
        }
        write!(f, "{{")?;
        for (i, (k, v)) in rest.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        write!(f, "}}")
    }
}

/// A stored series: its labels (with `__name__`), its float samples and its native-histogram
/// samples, each in time order. A timestamp appears in at most one of the two lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// `(timestamp ms, value)`, ascending by timestamp.
    pub samples: Vec<(i64, f64)>,
    /// `(timestamp ms, histogram)`, ascending by timestamp.
    pub histograms: Vec<(i64, Arc<FloatHistogram>)>,
}

/// One element of an instant-vector result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The element's labels.
    pub labels: Labels,
    /// The evaluation timestamp in ms.
    pub t: i64,
    /// The float value (0 when `h` is set).
    pub f: f64,
    /// The native-histogram value, if this element is a histogram.
    pub h: Option<Arc<FloatHistogram>>,
}
