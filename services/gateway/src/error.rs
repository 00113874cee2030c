//! The gateway's errors and the ONE place they become gRPC statuses.
//!
//! Handlers return [`Error`] and use `?`; `impl From<Error> for tonic::Status` decides the code:
//! unknown model or version → NOT_FOUND, nothing to route to or every attempt lost →
//! UNAVAILABLE, over the in-flight limit → RESOURCE_EXHAUSTED, caller's deadline spent →
//! DEADLINE_EXCEEDED. A worker's own answer ([`Error::Upstream`]) passes through unchanged, so
//! the caller sees exactly what the worker said (INVALID_ARGUMENT naming the tensor, ...).

use tonic::{Code, Status};

/// What can go wrong serving one request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No replica and no deployment of this model exist.
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// The model exists but this version has neither replicas nor a deployment entry.
    #[error("unknown version {version:?} of model {model:?}")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
    },
    /// The model (version) exists but no replica of it is ready.
    #[error("no ready replica of model {model} version {version}")]
    NoReadyReplica {
        /// The model.
        model: String,
        /// The version, or `any` when the caller let the gateway pick.
        version: String,
    },
    /// Every attempt failed without an answer (connection refused or reset, worker gone,
    /// UNAVAILABLE), or the retry budget was spent.
    #[error("no replica of model {model} version {version} answered: {last}")]
    Unreachable {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// What the last attempt saw.
        last: String,
    },
    /// More requests are in flight than `--max-inflight` allows.
    #[error("gateway overloaded: {limit} requests in flight")]
    Overloaded {
        /// The configured limit.
        limit: usize,
    },
    /// The caller's deadline passed before an answer came.
    #[error("deadline exceeded after {attempts} attempt(s)")]
    DeadlineExceeded {
        /// How many attempts were started.
        attempts: usize,
    },
    /// A worker answered with this status; it is passed to the caller as is.
    #[error("{}", .0.message())]
    Upstream(Status),
    /// The RPC is not offered by the gateway (yet).
    #[error("{0}")]
    Unimplemented(&'static str),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Upstream(status) => return status,
            Error::UnknownModel(_) | Error::UnknownVersion { .. } => Code::NotFound,
            Error::NoReadyReplica { .. } | Error::Unreachable { .. } => Code::Unavailable,
            Error::Overloaded { .. } => Code::ResourceExhausted,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::edge::code_name;

    #[test]
    fn maps_each_error_to_its_code() {
        let cases = [
            (Error::UnknownModel("m".into()), Code::NotFound),
            (
                Error::UnknownVersion {
                    model: "m".into(),
                    version: "9".into(),
                },
                Code::NotFound,
            ),
            (
                Error::NoReadyReplica {
                    model: "m".into(),
                    version: "1".into(),
                },
                Code::Unavailable,
            ),
            (Error::Overloaded { limit: 1 }, Code::ResourceExhausted),
            (
                Error::DeadlineExceeded { attempts: 1 },
                Code::DeadlineExceeded,
            ),
            (Error::Unimplemented("no"), Code::Unimplemented),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
        let status = Status::from(Error::NoReadyReplica {
            model: "digits".into(),
            version: "2".into(),
        });
        assert_eq!(
            status.message(),
            "no ready replica of model digits version 2"
        );
    }

    #[test]
    fn upstream_status_passes_through() {
        let status = Status::from(Error::Upstream(Status::invalid_argument(
            "input x: bad shape",
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "input x: bad shape");
        assert_eq!(code_name(status.code()), "INVALID_ARGUMENT");
    }
}
