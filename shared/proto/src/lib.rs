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
pub mod edge;

/// Serializes `ReplicaRecord.state` (an `i32` in prost) as its name without the enum prefix
/// (`"READY"`), and reads either a name or a number back.
mod replica_state_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::kiln::v1::ReplicaState;

    const PREFIX: &str = "REPLICA_STATE_";

    pub fn serialize<S: Serializer>(state: &i32, s: S) -> Result<S::Ok, S::Error> {
        match ReplicaState::try_from(*state) {
            Ok(v) => s.serialize_str(v.as_str_name().trim_start_matches(PREFIX)),
            Err(_) => s.serialize_i32(*state),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Name(String),
        Number(i32),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(n),
            Repr::Name(name) => ReplicaState::from_str_name(&format!("{PREFIX}{name}"))
                .or_else(|| ReplicaState::from_str_name(&name))
                .map(|v| v as i32)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown replica state {name:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kiln::v1::{ReplicaRecord, ReplicaState};

    #[test]
    fn replica_state_reads_as_a_word() {
        let r = ReplicaRecord {
            state: ReplicaState::Ready as i32,
            ..Default::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"READY""#), "{json}");
        let back: ReplicaRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.state, ReplicaState::Ready as i32);
        let numeric: ReplicaRecord = serde_json::from_str(r#"{"state":3}"#).unwrap();
        assert_eq!(numeric.state, ReplicaState::Failed as i32);
    }
}
