//! `strata version`.

use std::io::Write;

/// `strata --version`: version and commit.
pub const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STRATA_GIT_COMMIT"),
    ")"
);

/// Writes the full version report to stdout.
pub fn print() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "strata, version {SHORT}")?;
    writeln!(out, "  rustc:  {}", env!("STRATA_RUSTC_VERSION"))?;
    writeln!(out, "  target: {}", env!("STRATA_TARGET"))?;
    Ok(())
}
