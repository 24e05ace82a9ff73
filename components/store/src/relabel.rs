//! The Prometheus relabel-config subset Thanos's `--selector.relabel-config` uses to choose
//! blocks: applied to a block's external labels plus `__block_id`; a block is kept when the
//! result is non-empty.
//!
//! CONTRACT (skeleton).

/// A parsed relabel config (a list of rules).
#[derive(Debug, Clone, Default)]
pub struct RelabelConfig {}
