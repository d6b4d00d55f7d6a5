//! The one error type every store operation returns.

use crate::SessionId;

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`SessionStore`](crate::SessionStore) operation can fail with.
///
/// Callers branch on the variant: [`Error::Unavailable`] is retryable (the backend is
/// down or slow), [`Error::NotFound`] means the session really is gone (an MCP proxy
/// answers 404), [`Error::Conflict`] asks the caller to re-read and retry its update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session does not exist, was deleted, or has expired.
    #[error("session `{0}` not found (never created, deleted, or expired)")]
    NotFound(SessionId),

    /// `create` was called with an id that is already in use; nothing was overwritten.
    #[error("session `{0}` already exists")]
    AlreadyExists(SessionId),

    /// `update` carried a stale revision: someone else updated the session first.
    #[error("session `{id}` was changed concurrently: update carried revision {expected}, the store holds {actual}")]
    Conflict {
        /// The session that was being updated.
        id: SessionId,
        /// The revision the caller read and sent back.
        expected: u64,
        /// The revision the store holds now.
        actual: u64,
    },

    /// The caller's input was rejected before anything was stored.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A configured capacity (such as the memory backend's session cap) is reached.
    #[error("capacity exceeded: {0}")]
    CapacityExceeded(String),

    /// The backend could not be reached or did not answer in time. Retryable.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),

    /// Stored bytes could not be decoded (garbage, unknown format version, wrong type).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),

    /// The store's configuration is invalid; the message names the key and its source.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable(message.into())
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::Corrupt(message.into())
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }
}
