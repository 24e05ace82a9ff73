//! Block sync: lists the bucket, fetches every block's meta.json concurrently (cached on local
//! disk), drops partial uploads and blocks marked for deletion past the delay, and applies the
//! time and relabel filters.
//!
//! CONTRACT (skeleton).

use std::time::Duration;

/// A time bound given on the command line: RFC 3339, or relative to now (`-2w`, `-36h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// Milliseconds since the epoch.
    Absolute(i64),
    /// This long before now.
    Ago(Duration),
}

impl TimeBound {
    /// The bound as milliseconds since the epoch at `now_ms`.
    pub fn resolve(&self, now_ms: i64) -> i64 {
        match self {
            TimeBound::Absolute(t) => *t,
            TimeBound::Ago(d) => now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}
