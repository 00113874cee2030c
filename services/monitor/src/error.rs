//! The monitor's domain errors and their one mapping to `tonic::Status`.
//!
//! Handlers return [`Error`] and use `?`; the gRPC code a client sees is decided here and
//! nowhere else, so the same failure always reads the same way on the wire.

use kiln_coord::CoordError;

/// What an Admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad name, replica count out of range, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A model, version or deployment the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing the request creates exists already, with different contents.
    #[error("{0}")]
    AlreadyExists(String),
    /// A package path outside the configured package root.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid but the cluster is not in a state to carry it out (e.g. promoting a
    /// version with no ready replica).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Concurrent writers kept changing the record; the client may retry.
    #[error("{0}")]
    Conflict(String),
    /// The operation is not available yet.
    #[error("{0}")]
    Unimplemented(String),
    /// The coordination store failed.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// Anything unexpected (I/O while reading a package, a panicked task).
    #[error("{0}")]
    Internal(String),
}

/// Result alias of the monitor.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Conflict(m) => Status::aborted(m),
            Error::Unimplemented(m) => Status::unimplemented(m),
            Error::Coord(e @ (CoordError::Unavailable(_) | CoordError::NoLeader(_))) => {
                Status::unavailable(e.to_string())
            }
            Error::Coord(e) => {
                tracing::error!(error = %e, "coordination store error");
                Status::internal(e.to_string())
            }
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal(m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_grpc_codes() {
        let code = |e: Error| tonic::Status::from(e).code();
        use tonic::Code;
        assert_eq!(code(Error::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(Error::InvalidArgument("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(code(Error::AlreadyExists("x".into())), Code::AlreadyExists);
        assert_eq!(
            code(Error::PermissionDenied("x".into())),
            Code::PermissionDenied
        );
        assert_eq!(code(Error::Conflict("x".into())), Code::Aborted);
        assert_eq!(
            code(Error::FailedPrecondition("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(code(Error::Unimplemented("x".into())), Code::Unimplemented);
        assert_eq!(
            code(CoordError::Unavailable("down".into()).into()),
            Code::Unavailable
        );
        assert_eq!(code(CoordError::Other("odd".into()).into()), Code::Internal);
        assert_eq!(code(Error::Internal("x".into())), Code::Internal);
    }
}
