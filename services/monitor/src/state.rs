//! Reading the whole cluster state from the coordination store, for the controller's passes and
//! for the Admin listings that show load.
//!
//! The key, not the value, names the worker, deployment, model version, assignment and replica:
//! a value that disagrees with its key must not hide or invent a placement. Undecodable values
//! are skipped with a warning. A worker with a cordon (`/kiln/v1/drains/{id}`) reads as draining.

use std::collections::{BTreeSet, HashMap};

use kiln_coord::codec::{
    self, AssignmentRecord, DeploymentRecord, ModelVersionRecord, ReplicaRecord, WorkerRecord,
};
use kiln_coord::{Coordinator, KeyValue, keys};
use kiln_proto::kiln::v1::{ReplicaState, WorkerLoad};

use crate::error::Result;
use crate::plan::{ClusterState, version_sizes};

/// The state with the revisions the reconciler's transactions are guarded on.
pub(crate) struct Snapshot {
    /// What the planner reads.
    pub state: ClusterState,
    /// Mod revision of each assignment key.
    pub assignment_revs: HashMap<String, i64>,
    /// Mod revision of each deployment key.
    pub deployment_revs: HashMap<String, i64>,
}

async fn decode_all<T: serde::de::DeserializeOwned>(
    coord: &dyn Coordinator,
    prefix: &str,
) -> Result<Vec<(KeyValue, T)>> {
    let listing = coord.list(prefix).await?;
    Ok(listing
        .kvs
        .into_iter()
        .filter_map(|kv| match codec::decode::<T>(&kv) {
            Ok(v) => Some((kv, v)),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping undecodable record");
                None
            }
        })
        .collect())
}

/// Ids of cordoned workers.
pub(crate) async fn cordons(coord: &dyn Coordinator) -> Result<BTreeSet<String>> {
    Ok(coord
        .list(keys::DRAINS)
        .await?
        .kvs
        .iter()
        .filter_map(
            |kv| match keys::segments(keys::DRAINS, &kv.key)?.as_slice() {
                [id] => Some(id.to_string()),
                _ => None,
            },
        )
        .collect())
}

/// Live workers, with `draining` set for cordoned ones too.
pub(crate) async fn workers(coord: &dyn Coordinator) -> Result<Vec<WorkerRecord>> {
    let cordoned = cordons(coord).await?;
    Ok(decode_all::<WorkerRecord>(coord, keys::WORKERS)
        .await?
        .into_iter()
        .filter_map(
            |(kv, mut w)| match keys::segments(keys::WORKERS, &kv.key)?.as_slice() {
                [id] => {
                    w.id = id.to_string();
                    w.draining |= cordoned.contains(&w.id);
                    Some(w)
                }
                _ => None,
            },
        )
        .collect())
}

/// Reads everything the controller plans over.
pub(crate) async fn snapshot(coord: &dyn Coordinator) -> Result<Snapshot> {
    let workers = workers(coord).await?;
    let mut deployment_revs = HashMap::new();
    let deployments = decode_all::<DeploymentRecord>(coord, keys::DEPLOYMENTS)
        .await?
        .into_iter()
        .filter_map(
            |(kv, mut d)| match keys::segments(keys::DEPLOYMENTS, &kv.key)?.as_slice() {
                [m] => {
                    d.model = m.to_string();
                    deployment_revs.insert(d.model.clone(), kv.mod_revision);
                    Some(d)
                }
                _ => None,
            },
        )
        .collect();
    let models = decode_all::<ModelVersionRecord>(coord, keys::MODELS)
        .await?
        .into_iter()
        .filter_map(
            |(kv, mut r)| match keys::segments(keys::MODELS, &kv.key)?.as_slice() {
                [m, v] => {
                    r.model = m.to_string();
                    r.version = v.to_string();
                    Some(r)
                }
                _ => None,
            },
        )
        .collect();
    let mut assignment_revs = HashMap::new();
    let assignments = decode_all::<AssignmentRecord>(coord, keys::ASSIGNMENTS)
        .await?
        .into_iter()
        .filter_map(
            |(kv, mut a)| match keys::segments(keys::ASSIGNMENTS, &kv.key)?.as_slice() {
                [w, m, v] => {
                    a.worker_id = w.to_string();
                    a.model = m.to_string();
                    a.version = v.to_string();
                    assignment_revs.insert(kv.key.clone(), kv.mod_revision);
                    Some(a)
                }
                _ => {
                    tracing::warn!(key = %kv.key, "ignoring malformed assignment key");
                    None
                }
            },
        )
        .collect();
    let replicas = replicas(coord).await?;
    Ok(Snapshot {
        state: ClusterState {
            workers,
            deployments,
            models,
            assignments,
            replicas,
        },
        assignment_revs,
        deployment_revs,
    })
}

/// Every replica record, named by its key.
pub(crate) async fn replicas(coord: &dyn Coordinator) -> Result<Vec<ReplicaRecord>> {
    Ok(decode_all::<ReplicaRecord>(coord, keys::REPLICAS)
        .await?
        .into_iter()
        .filter_map(
            |(kv, mut r)| match keys::segments(keys::REPLICAS, &kv.key)?.as_slice() {
                [m, v, w] => {
                    r.model = m.to_string();
                    r.version = v.to_string();
                    r.worker_id = w.to_string();
                    Some(r)
                }
                _ => None,
            },
        )
        .collect())
}

/// What each worker carries: assignments, READY replicas and the memory of its versions.
pub(crate) fn loads(state: &ClusterState) -> Vec<WorkerLoad> {
    let sizes = version_sizes(state);
    state
        .workers
        .iter()
        .map(|w| {
            let mine = state.assignments.iter().filter(|a| a.worker_id == w.id);
            let (mut replicas, mut memory_bytes) = (0u32, 0u64);
            for a in mine {
                replicas += 1;
                memory_bytes += sizes
                    .get(&(a.model.clone(), a.version.clone()))
                    .copied()
                    .unwrap_or(0);
            }
            let ready_replicas = state
                .replicas
                .iter()
                .filter(|r| r.worker_id == w.id && r.state == ReplicaState::Ready as i32)
                .count() as u32;
            WorkerLoad {
                worker_id: w.id.clone(),
                replicas,
                ready_replicas,
                memory_bytes,
            }
        })
        .collect()
}
