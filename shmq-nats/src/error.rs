//! The bridge's error type.

/// Why a bridge could not start or stopped.
///
/// [`BridgeError::Config`] is fatal and is the caller's to fix (a bad
/// file, flag, subject template or a missing topic or stream); the bridge
/// never retries it. A lost server is *not* an error: the bridge reconnects
/// with backoff and reports the outage in its progress lines.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A configuration error: fix the flag or file it names.
    #[error("{0}")]
    Config(String),
    /// A shmq error (topic missing, partition held by another writer, ...).
    #[error("{0}")]
    Shmq(#[from] shmq::Error),
    /// NATS refused something the bridge cannot work around (authorization,
    /// a stream that cannot be created, ...).
    #[error("NATS: {0}")]
    Nats(String),
    /// The imported topic's partitions are written by someone else: the
    /// bridge's send landed at another offset than the one it recorded.
    #[error("{0}")]
    Conflict(String),
}

impl BridgeError {
    /// Whether this is a configuration error (exit code 2 in `shmq bridge`).
    pub fn is_config(&self) -> bool {
        matches!(self, BridgeError::Config(_))
    }
}

/// Result of a bridge operation.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;
