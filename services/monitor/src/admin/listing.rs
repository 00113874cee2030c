//! ListDeployments and ListReplicas: reads straight from the coordination store, so
//! any monitor instance (leader or standby) answers with the store's current view.

use kiln_coord::codec::{self, DeploymentRecord, ReplicaRecord};
use kiln_coord::{Coordinator, keys};
use kiln_proto::kiln::v1::ListReplicasRequest;

use super::optional_segment;
use crate::error::Result;

pub(crate) async fn deployments(
    coord: &dyn Coordinator,
    model: &str,
) -> Result<Vec<DeploymentRecord>> {
    optional_segment("model", model)?;
    if model.is_empty() {
        return Ok(codec::list(coord, keys::DEPLOYMENTS).await?);
    }
    Ok(
        codec::get::<DeploymentRecord>(coord, &keys::deployment(model))
            .await?
            .into_iter()
            .collect(),
    )
}

pub(crate) async fn replicas(
    coord: &dyn Coordinator,
    req: &ListReplicasRequest,
) -> Result<Vec<ReplicaRecord>> {
    optional_segment("model", &req.model)?;
    optional_segment("version", &req.version)?;
    optional_segment("worker_id", &req.worker_id)?;
    // Narrow the read by key where the filters allow it; filter the rest in memory.
    let prefix = match (req.model.as_str(), req.version.as_str()) {
        ("", _) => keys::REPLICAS.to_string(),
        (m, "") => format!("{}{m}/", keys::REPLICAS),
        (m, v) => format!("{}{m}/{v}/", keys::REPLICAS),
    };
    let all: Vec<ReplicaRecord> = codec::list(coord, &prefix).await?;
    Ok(all
        .into_iter()
        .filter(|r| req.version.is_empty() || r.version == req.version)
        .filter(|r| req.worker_id.is_empty() || r.worker_id == req.worker_id)
        .collect())
}
