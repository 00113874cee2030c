//! The one value codec: records are the `kiln.v1` messages of `cluster.proto`, stored as JSON so
//! that `etcdctl get` shows something a person can read.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Coordinator, KeyValue, LeaseId};
use crate::{CoordError, Result};

pub use kiln_proto::kiln::v1::{
    AssignmentRecord, DeploymentRecord, DeploymentVersion, ModelVersionRecord, ReplicaRecord,
    ReplicaState, TensorSpec, WorkerRecord,
};

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records always serialize")
}

/// Decodes the value of `kv`.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| CoordError::Codec {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// Reads and decodes one record.
pub async fn get<T: DeserializeOwned>(coord: &dyn Coordinator, key: &str) -> Result<Option<T>> {
    coord.get(key).await?.map(|kv| decode(&kv)).transpose()
}

/// Encodes and writes one record.
pub async fn put<T: Serialize>(
    coord: &dyn Coordinator,
    key: &str,
    record: &T,
    lease: LeaseId,
) -> Result<i64> {
    coord.put(key, encode(record), lease).await
}

/// Lists and decodes every record under `prefix`, skipping (and logging) undecodable values.
pub async fn list<T: DeserializeOwned>(coord: &dyn Coordinator, prefix: &str) -> Result<Vec<T>> {
    let listing = coord.list(prefix).await?;
    Ok(listing
        .kvs
        .iter()
        .filter_map(|kv| match decode(kv) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "skipping undecodable record");
                None
            }
        })
        .collect())
}
