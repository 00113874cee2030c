//! The worker's errors and their one mapping to gRPC statuses.
//!
//! Handlers return [`WorkerError`] and use `?`; [`From<WorkerError> for tonic::Status`] is the
//! only place a domain error becomes a status code, so every RPC answers the same failure the
//! same way (conventions: unknown model → NOT_FOUND, bad tensors → INVALID_ARGUMENT naming the
//! tensor, full queue → RESOURCE_EXHAUSTED, deadline → DEADLINE_EXCEEDED).

use kiln_model::ModelError;

/// Everything a worker RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The model (or the requested version of it) is not loaded on this worker.
    #[error("{}", not_found_message(model, version))]
    ModelNotFound {
        /// The requested model name.
        model: String,
        /// The requested version; empty when any version would do.
        version: String,
    },
    /// An input tensor of the request is wrong (name, datatype, shape, contents).
    #[error("input tensor {name:?}: {reason}")]
    InvalidInput {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested output tensor is wrong (unknown or repeated).
    #[error("output tensor {name:?}: {reason}")]
    InvalidOutput {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request as a whole is malformed (e.g. raw and typed contents mixed).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The model version's queue is full; the caller should back off or go elsewhere.
    #[error("queue of {model} version {version} is full ({capacity} requests waiting)")]
    QueueFull {
        /// Model name.
        model: String,
        /// Model version.
        version: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// Every compute instance of the model version is running a batch and the version refuses
    /// to queue behind them (`refuse_when_busy`); the caller should back off or go elsewhere.
    #[error("every compute instance of {model} version {version} is busy ({instances} running)")]
    Busy {
        /// Model name.
        model: String,
        /// Model version.
        version: String,
        /// Compute instances of the version.
        instances: usize,
    },
    /// A message exceeds the configured size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The caller's deadline passed before the request was computed.
    #[error("deadline exceeded before the request was computed")]
    DeadlineExceeded,
    /// The model version is being unloaded or the worker is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The RPC is not offered by a worker.
    #[error("{0}")]
    Unimplemented(String),
    /// The model runtime failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A bug or an unexpected condition inside the worker.
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_found_message(model: &str, version: &str) -> String {
    if version.is_empty() {
        format!("model {model:?} is not loaded on this worker")
    } else {
        format!("model {model:?} version {version:?} is not loaded on this worker")
    }
}

impl WorkerError {
    /// Shorthand for [`WorkerError::InvalidInput`].
    pub fn input(name: impl Into<String>, reason: impl Into<String>) -> Self {
        WorkerError::InvalidInput {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            WorkerError::ModelNotFound { .. } => Code::NotFound,
            WorkerError::InvalidInput { .. }
            | WorkerError::InvalidOutput { .. }
            | WorkerError::InvalidRequest(_) => Code::InvalidArgument,
            WorkerError::QueueFull { .. } | WorkerError::Busy { .. } | WorkerError::TooLarge(_) => {
                Code::ResourceExhausted
            }
            WorkerError::DeadlineExceeded => Code::DeadlineExceeded,
            WorkerError::Unavailable(_) => Code::Unavailable,
            WorkerError::Unimplemented(_) => Code::Unimplemented,
            WorkerError::Model(ModelError::InvalidInput { .. }) => Code::InvalidArgument,
            WorkerError::Model(_) | WorkerError::Internal(_) => Code::Internal,
        }
    }
}

impl From<WorkerError> for tonic::Status {
    fn from(e: WorkerError) -> Self {
        let code = e.code();
        if code == tonic::Code::Internal {
            tracing::error!(error = %e, "inference failed");
        }
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn maps_each_error_to_its_code() {
        let cases = [
            (
                WorkerError::ModelNotFound {
                    model: "m".into(),
                    version: "2".into(),
                },
                Code::NotFound,
            ),
            (WorkerError::input("x", "bad"), Code::InvalidArgument),
            (
                WorkerError::Model(ModelError::InvalidInput {
                    name: "x".into(),
                    reason: "r".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                WorkerError::Model(ModelError::Runtime {
                    node: "n".into(),
                    op: "Gemm".into(),
                    reason: "r".into(),
                }),
                Code::Internal,
            ),
            (
                WorkerError::QueueFull {
                    model: "m".into(),
                    version: "1".into(),
                    capacity: 4,
                },
                Code::ResourceExhausted,
            ),
            (WorkerError::DeadlineExceeded, Code::DeadlineExceeded),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
        let s = tonic::Status::from(WorkerError::input("pixels", "wrong shape"));
        assert!(s.message().contains("pixels"), "{}", s.message());
    }
}
