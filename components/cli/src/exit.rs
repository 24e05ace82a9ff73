//! Exit codes: 0 ok, 1 runtime failure, 2 bad flags or configuration — with a one-line error on stderr.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

/// Exit code for a runtime failure.
pub const RUNTIME_FAILURE: u8 = 1;
/// Exit code for bad flags or a bad configuration file.
pub const BAD_CONFIG: u8 = 2;

/// A flag or configuration file is at fault; the message names it. Wrap errors in this (as the root or
/// as a context) so the binary exits 2 instead of 1.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Prints clap's message (help and `--version` go to stdout with 0; errors to stderr with 2).
pub fn clap_error(e: clap::Error) -> ExitCode {
    let code = e.exit_code();
    // Printing can only fail when stdout/stderr is closed; nothing more to report then.
    let _ = e.print();
    ExitCode::from(u8::try_from(code).unwrap_or(BAD_CONFIG))
}

/// Maps a command's outcome to an exit code, printing a one-line error chain.
pub fn from_result(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    // The reader went away (`strata tools tsdb dump … | head`): not a failure of ours.
    let broken_pipe = err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    // `downcast_ref` sees `.context(ConfigError(..))` layers; `chain` sees it as a `#[source]`.
    let is_config =
        err.downcast_ref::<ConfigError>().is_some() || err.chain().any(|c| c.is::<ConfigError>());
    let code = if is_config {
        BAD_CONFIG
    } else {
        RUNTIME_FAILURE
    };
    let _ = writeln!(std::io::stderr(), "strata: error: {err:#}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    fn code(result: anyhow::Result<()>) -> ExitCode {
        from_result(result)
    }

    #[test]
    fn config_errors_exit_2_anywhere_in_the_chain() {
        let root: anyhow::Result<()> =
            Err(ConfigError("--objstore.config-file: no such file".into()).into());
        assert_eq!(code(root), ExitCode::from(BAD_CONFIG));
        let wrapped: anyhow::Result<()> = Err(std::io::Error::other("missing"))
            .context(ConfigError("--objstore.config-file /x".into()));
        assert_eq!(code(wrapped), ExitCode::from(BAD_CONFIG));
    }

    #[test]
    fn other_errors_exit_1() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("bucket unreachable"));
        assert_eq!(code(err), ExitCode::from(RUNTIME_FAILURE));
        assert_eq!(code(Ok(())), ExitCode::SUCCESS);
    }
}
