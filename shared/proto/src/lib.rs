//! Kiln's protocol types, generated from `proto/` (the one source of truth).
//!
//! - [`inference`]: the Open Inference Protocol v2 (`inference.GRPCInferenceService`), wire
//!   compatible with Triton's `grpc_service.proto` and `model_config.proto`, so tritonclient and
//!   perf_analyzer talk to Kiln unchanged. Tensor byte fields are `bytes::Bytes`, so the gateway
//!   forwards them without copying.
//! - [`kiln::v1`]: cluster records (stored in etcd as JSON), the Admin API and telemetry.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// The Open Inference Protocol v2 with Triton's extensions.
pub mod inference {
    #![allow(missing_docs)]
    tonic::include_proto!("inference");
}

/// Kiln's own packages.
pub mod kiln {
    /// Version 1 of Kiln's cluster, admin and telemetry protocols.
    pub mod v1 {
        #![allow(missing_docs)]
        tonic::include_proto!("kiln.v1");
    }
}

/// Encoded descriptors of every proto file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kiln_descriptor");

pub mod datatype;
