//! Reading the whole cluster state from the coordination store, for the controller's passes and
//! for the Admin listings that show load.
//!
//! The key, not the value, names the worker, deployment, model version, assignment and replica:
//! a value that disagrees with its key must not hide or invent a placement. Undecodable values
//! are skipped with a warning, and the models and workers they would describe are listed in
//! [`Snapshot::unreadable`]: a deployment, model version or worker that cannot be read is not
//! one that is gone, so the reconciler deletes none of their assignments. A worker with a cordon
//! (`/kiln/v1/drains/{id}`) reads as draining.

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
    /// What undecodable records would describe.
    pub unreadable: Unreadable,
}

/// Models and workers with a record that could not be decoded.
#[derive(Debug, Default)]
pub(crate) struct Unreadable {
    /// Models whose deployment, or one of whose versions, could not be read.
    pub models: BTreeSet<String>,
    /// Workers whose record could not be read.
    pub workers: BTreeSet<String>,
}

impl Unreadable {
    /// Whether `a` may be about something unreadable (then it must not be deleted).
    pub fn covers(&self, a: &AssignmentRecord) -> bool {
        self.models.contains(&a.model) || self.workers.contains(&a.worker_id)
    }
}

async fn decode_all<T: serde::de::DeserializeOwned>(
    coord: &dyn Coordinator,
    prefix: &str,
) -> Result<Vec<(KeyValue, T)>> {
    decode_all_noting(coord, prefix, &mut Vec::new()).await
}

/// Like [`decode_all`], and pushes the key segments (after `prefix`) of undecodable values.
async fn decode_all_noting<T: serde::de::DeserializeOwned>(
    coord: &dyn Coordinator,
    prefix: &str,
    unreadable: &mut Vec<Vec<String>>,
) -> Result<Vec<(KeyValue, T)>> {
    let listing = coord.list(prefix).await?;
    Ok(listing
        .kvs
        .into_iter()
        .filter_map(|kv| match codec::decode::<T>(&kv) {
            Ok(v) => Some((kv, v)),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping undecodable record");
                if let Some(segments) = keys::segments(prefix, &kv.key) {
                    unreadable.push(segments.iter().map(|s| s.to_string()).collect());
                }
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

/// Live workers, with `draining` set for cordoned ones too; the keys of undecodable records
/// are pushed to `unreadable`.
async fn workers_noting(
    coord: &dyn Coordinator,
    unreadable: &mut Vec<Vec<String>>,
) -> Result<Vec<WorkerRecord>> {
    let cordoned = cordons(coord).await?;
    Ok(
        decode_all_noting::<WorkerRecord>(coord, keys::WORKERS, unreadable)
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
            .collect(),
    )
}

/// Reads everything the controller plans over.
pub(crate) async fn snapshot(coord: &dyn Coordinator) -> Result<Snapshot> {
    let mut unreadable = Unreadable::default();
    let mut noted = Vec::new();
    let workers = workers_noting(coord, &mut noted).await?;
    unreadable
        .workers
        .extend(noted.drain(..).filter_map(|s| s.into_iter().next()));
    let mut deployment_revs = HashMap::new();
    let deployments = decode_all_noting::<DeploymentRecord>(coord, keys::DEPLOYMENTS, &mut noted)
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
    let models = decode_all_noting::<ModelVersionRecord>(coord, keys::MODELS, &mut noted)
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
    unreadable
        .models
        .extend(noted.drain(..).filter_map(|s| s.into_iter().next()));
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
        unreadable,
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
