//! ListWorkers (with each worker's load) and DrainWorker (cordons).
//!
//! A cordon is the key `/kiln/v1/drains/{worker_id}`, written here and read by the controller,
//! which then treats the worker as draining: nothing new goes there and each of its replicas is
//! removed once a replacement elsewhere is READY. Unlike the `draining` flag a worker sets in its
//! own record when it shuts down, a cordon outlives restarts of the worker until it is lifted.

use kiln_coord::codec::{self, WorkerRecord};
use kiln_coord::{Coordinator, keys};
use kiln_proto::kiln::v1::{DrainWorkerRequest, DrainWorkerResponse, WorkerLoad};

use super::segment;
use crate::error::{Error, Result};
use crate::state;

/// Live workers (cordoned ones read as draining) and, in the same order, their loads.
pub(crate) async fn list(coord: &dyn Coordinator) -> Result<(Vec<WorkerRecord>, Vec<WorkerLoad>)> {
    let snap = state::snapshot(coord).await?;
    let loads = state::loads(&snap.state);
    Ok((snap.state.workers, loads))
}

pub(super) async fn drain(
    coord: &dyn Coordinator,
    req: DrainWorkerRequest,
) -> Result<DrainWorkerResponse> {
    segment("worker_id", &req.worker_id)?;
    let key = keys::drain(&req.worker_id);
    let (workers, loads) = list(coord).await?;
    let live = workers.iter().any(|w| w.id == req.worker_id);
    if req.undo {
        coord.delete(&key).await?;
        tracing::info!(worker = %req.worker_id, "cordon lifted");
    } else {
        if !live {
            return Err(Error::NotFound(format!(
                "worker {:?} is not registered (see `kiln workers`)",
                req.worker_id
            )));
        }
        codec::put(coord, &key, &req, 0).await?;
        tracing::info!(worker = %req.worker_id, "cordoned; its replicas will move");
    }
    let worker = workers
        .into_iter()
        .find(|w| w.id == req.worker_id)
        .map(|mut w| {
            w.draining = !req.undo;
            w
        });
    let replicas = loads
        .iter()
        .find(|l| l.worker_id == req.worker_id)
        .map_or(0, |l| l.replicas);
    Ok(DrainWorkerResponse { worker, replicas })
}
