//! Errors of the coordination layer.

/// What can go wrong talking to the coordination store.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The store could not be reached or answered with a transport error; retry later.
    #[error("coordination store unavailable: {0}")]
    Unavailable(String),
    /// The lease no longer exists (it expired or was revoked).
    #[error("lease {0:x} expired or revoked")]
    LeaseExpired(i64),
    /// A watch asked for a revision the store no longer holds; list again and watch from there.
    #[error("revision {requested} compacted (oldest retained {compacted})")]
    Compacted {
        /// The revision the caller asked for.
        requested: i64,
        /// The oldest revision the store can still replay from.
        compacted: i64,
    },
    /// An election has no leader right now.
    #[error("election {0} has no leader")]
    NoLeader(String),
    /// A stored value could not be decoded.
    #[error("cannot decode value at {key}: {reason}")]
    Codec {
        /// The key whose value failed.
        key: String,
        /// Why.
        reason: String,
    },
    /// Anything else the store reported.
    #[error("coordination store error: {0}")]
    Other(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, CoordError>;

impl From<etcd_client::Error> for CoordError {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::TransportError(_) | E::IoError(_) => CoordError::Unavailable(e.to_string()),
            E::GRpcStatus(ref s) => {
                let msg = s.message().to_string();
                if msg.contains("requested lease not found") {
                    CoordError::LeaseExpired(0)
                } else if msg.contains("no leader") {
                    CoordError::NoLeader(msg)
                } else if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                ) {
                    CoordError::Unavailable(e.to_string())
                } else {
                    CoordError::Other(e.to_string())
                }
            }
            E::LeaseKeepAliveError(ref m) if m.contains("lease not found") => {
                CoordError::LeaseExpired(0)
            }
            other => CoordError::Other(other.to_string()),
        }
    }
}
