//! The ruler's errors.

/// What can go wrong in the ruler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Local storage (WAL, head, blocks) failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The Alertmanager client could not start.
    #[error("notifier: {0}")]
    Notifier(String),
    /// A rule file does not parse or fails validation; one message per problem, each naming
    /// the file (and group and rule where known) as `promtool check rules` does.
    #[error("{}", errors.iter().map(|e| format!("{file}: {e}")).collect::<Vec<_>>().join("\n"))]
    RuleFile {
        /// The file.
        file: String,
        /// The problems found.
        errors: Vec<String>,
    },
    /// A rule's query failed.
    #[error("{0}")]
    Query(String),
    /// Bad configuration (flags).
    #[error("config: {0}")]
    Config(String),
    /// A server (HTTP or gRPC) failed.
    #[error("serve {what}: {detail}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// Result with the ruler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
