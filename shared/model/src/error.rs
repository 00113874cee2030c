//! Errors of loading and running models.

/// What can go wrong with a model package or an inference.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The package could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `kiln.toml` is malformed or inconsistent.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The ONNX file is malformed.
    #[error("invalid ONNX model: {0}")]
    Onnx(String),
    /// The graph uses an op this runtime does not implement.
    #[error("unsupported ONNX op {domain}{op} (node {node:?})")]
    UnsupportedOp {
        /// Op type, e.g. `Conv`.
        op: String,
        /// Domain prefix, e.g. `ai.onnx.ml.`; empty for the default domain.
        domain: String,
        /// The node's name.
        node: String,
    },
    /// An inference input does not match the model's signature.
    #[error("input {name:?}: {reason}")]
    InvalidInput {
        /// The input tensor's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The graph failed while running (a model bug or an unsupported shape).
    #[error("inference failed at node {node:?} ({op}): {reason}")]
    Runtime {
        /// Node name.
        node: String,
        /// Op type.
        op: String,
        /// What happened.
        reason: String,
    },
    /// The backend is not compiled in or failed to start.
    #[error("backend {0}")]
    Backend(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
