//! The harness's error type: it names the peer and the step that failed.

/// What went wrong while starting or talking to a peer. `Debug` prints the readable message (with the
/// peer's log), so a test's `unwrap()` shows it as text.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer binary is not installed.
    #[error(
        "{tool} is not installed ({detail}); run `bash e2e/tools/install.sh` (CI does this in .ci/run)"
    )]
    MissingTool {
        /// The peer.
        tool: &'static str,
        /// Where we looked.
        detail: String,
    },
    /// Spawning a process failed.
    #[error("start {name}")]
    Spawn {
        /// The process.
        name: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it became ready.
    #[error("{name} exited with {status} before it was ready; its log:\n{log}")]
    Exited {
        /// The process.
        name: String,
        /// Its exit status.
        status: String,
        /// The tail of its log.
        log: String,
    },
    /// The process did not become ready in time.
    #[error("{name} was not ready after {waited:?} ({last}); its log:\n{log}")]
    NotReady {
        /// The process.
        name: String,
        /// How long we waited.
        waited: std::time::Duration,
        /// The last readiness probe outcome.
        last: String,
        /// The tail of its log.
        log: String,
    },
    /// A file-system step of the harness failed.
    #[error("{step}")]
    Io {
        /// What the harness was doing.
        step: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A request to a peer failed.
    #[error("{step}: {message}")]
    Request {
        /// What the harness was doing.
        step: String,
        /// What came back.
        message: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Result with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let step = step.into();
        move |source| Error::Io { step, source }
    }
}
