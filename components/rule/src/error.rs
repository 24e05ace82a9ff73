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
}

/// Result with the ruler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
