//! The gateway's errors and the ONE place they become gRPC statuses.
//!
//! Handlers return [`Error`] and use `?`; `impl From<Error> for tonic::Status` decides the code:
//! unknown model or version → NOT_FOUND, nothing to route to or every attempt lost →
//! UNAVAILABLE, over the in-flight limit → RESOURCE_EXHAUSTED, caller's deadline spent →
//! DEADLINE_EXCEEDED. A worker's own answer ([`Error::Upstream`]) passes through unchanged, so
//! the caller sees exactly what the worker said (INVALID_ARGUMENT naming the tensor, ...).
//!
//! The repository extension (RepositoryModelLoad/Unload) calls the monitor's Admin API: a model
//! never registered → NOT_FOUND, a parameter the gateway cannot honour → INVALID_ARGUMENT, no
//! monitor reachable → UNAVAILABLE (naming `--admin`), no ready replica before the caller's
//! deadline → DEADLINE_EXCEEDED. The monitor's own refusals ([`Error::Admin`]) keep their code
//! (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ...) with the operation named in the
//! message, except transport-level ones, which read as UNAVAILABLE.

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
    /// One client is over its `--client-rate-limit` or `--client-max-inflight`.
    #[error("client {client} over its {limit}")]
    ClientLimited {
        /// The client (token name or peer IP).
        client: String,
        /// Which limit, with its value.
        limit: String,
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
    /// A repository request asked for something the gateway cannot do (bad or unsupported
    /// parameter).
    #[error("{0}")]
    InvalidRequest(String),
    /// RepositoryModelLoad of a model with no registered version.
    #[error("model {0:?} is not registered: register it with `kiln deploy --package`")]
    NotRegistered(String),
    /// RepositoryModelLoad of a version that is not registered.
    #[error(
        "version {version:?} of model {model:?} is not registered: register it with `kiln deploy --package`"
    )]
    VersionNotRegistered {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
    },
    /// No monitor could be reached (none configured, none leading in etcd, or it did not
    /// answer).
    #[error("no monitor reachable: {0} (start a monitor or pass --admin http://HOST:PORT)")]
    AdminUnavailable(String),
    /// The monitor answered an Admin call with this status.
    #[error("monitor refused {op}: {}", .status.message())]
    Admin {
        /// The Admin operation (`Deploy`, `Undeploy`, ...).
        op: &'static str,
        /// What the monitor answered.
        status: Status,
    },
    /// A shared-memory call or tensor on a gateway started without `--shared-memory`.
    #[error(
        "system shared memory is off on this gateway: start it with --shared-memory (on the \
         callers' host)"
    )]
    SharedMemoryOff,
    /// No shared-memory region of that name is registered.
    #[error("shared memory region {0:?} is not registered")]
    UnknownRegion(String),
    /// A shared-memory region of that name is registered already.
    #[error("shared memory region {0:?} is registered already: unregister it first")]
    RegionExists(String),
    /// A request over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The region registry is full.
    #[error("at most {0} shared memory regions may be registered")]
    TooManyRegions(usize),
    /// A model version was deployed but no replica became ready before the deadline.
    #[error(
        "model {model} version {version} is deployed but no replica was ready within {waited_ms} ms ({state})"
    )]
    LoadTimedOut {
        /// The model.
        model: String,
        /// The version deployed.
        version: String,
        /// How long the gateway waited.
        waited_ms: u64,
        /// What the routing table says of the version's replicas.
        state: String,
    },
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Upstream(status) => return status,
            Error::Admin { op, status } => {
                let message = format!("monitor refused {op}: {}", status.message());
                return Status::new(admin_code(&status), message);
            }
            Error::UnknownModel(_) | Error::UnknownVersion { .. } => Code::NotFound,
            Error::NoReadyReplica { .. } | Error::Unreachable { .. } => Code::Unavailable,
            Error::Overloaded { .. } | Error::ClientLimited { .. } => Code::ResourceExhausted,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Unimplemented(_) | Error::SharedMemoryOff => Code::Unimplemented,
            Error::UnknownRegion(_) => Code::NotFound,
            Error::RegionExists(_) => Code::AlreadyExists,
            Error::TooManyRegions(_) | Error::TooLarge(_) => Code::ResourceExhausted,
            Error::InvalidRequest(_) => Code::InvalidArgument,
            Error::NotRegistered(_) | Error::VersionNotRegistered { .. } => Code::NotFound,
            Error::AdminUnavailable(_) => Code::Unavailable,
            Error::LoadTimedOut { .. } => Code::DeadlineExceeded,
        };
        Status::new(code, e.to_string())
    }
}

/// The code the caller sees for a monitor's answer: the monitor's own code, except that a
/// transport failure or an unknown/internal error of the monitor reads as UNAVAILABLE or
/// INTERNAL, never as something the caller could act on.
fn admin_code(status: &Status) -> Code {
    match status.code() {
        Code::Unknown if std::error::Error::source(status).is_some() => Code::Unavailable,
        Code::Ok | Code::Unknown => Code::Internal,
        code => code,
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
            (
                Error::InvalidRequest("config".into()),
                Code::InvalidArgument,
            ),
            (Error::NotRegistered("m".into()), Code::NotFound),
            (
                Error::VersionNotRegistered {
                    model: "m".into(),
                    version: "3".into(),
                },
                Code::NotFound,
            ),
            (Error::AdminUnavailable("down".into()), Code::Unavailable),
            (
                Error::LoadTimedOut {
                    model: "m".into(),
                    version: "1".into(),
                    waited_ms: 10,
                    state: "loading".into(),
                },
                Code::DeadlineExceeded,
            ),
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
    fn admin_statuses_keep_their_code_and_name_the_operation() {
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::Unavailable,
        ] {
            let status = Status::from(Error::Admin {
                op: "Deploy",
                status: Status::new(code, "nope"),
            });
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), "monitor refused Deploy: nope");
        }
        let internal = Status::from(Error::Admin {
            op: "Undeploy",
            status: Status::unknown("odd"),
        });
        assert_eq!(internal.code(), Code::Internal);
        let status = Status::from(Error::AdminUnavailable(
            "no controller leader in etcd".into(),
        ));
        assert!(status.message().contains("--admin"), "{}", status.message());
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
