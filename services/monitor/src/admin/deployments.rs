//! Deploy, Undeploy, Scale and SetTrafficSplit: edits of one `DeploymentRecord`.
//!
//! Every edit is a read-modify-write guarded by the record's mod revision (or its absence), retried
//! a few times when another writer got there first, so concurrent Admin calls never lose each
//! other's changes. The controller leader then reconciles assignments from the new record.

use kiln_coord::codec::{self, DeploymentRecord, DeploymentVersion, ModelVersionRecord};
use kiln_coord::{Compare, Coordinator, TxnOp, TxnRequest, keys};
use kiln_proto::kiln::v1::{DeployRequest, ScaleRequest, SetTrafficSplitRequest, UndeployRequest};

use super::segment;
use crate::error::{Error, Result};

/// Largest replica count one version may ask for.
pub const MAX_REPLICAS: u32 = 64;
/// Traffic weight given to the first version of a deployment when the request leaves it 0.
pub const DEFAULT_WEIGHT: u32 = 100;
/// Attempts of a read-modify-write before giving up with ABORTED.
const ATTEMPTS: usize = 8;

fn check_replicas(replicas: u32) -> Result<()> {
    if (1..=MAX_REPLICAS).contains(&replicas) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "replicas must be between 1 and {MAX_REPLICAS}, got {replicas}"
        )))
    }
}

/// Labels and backend names are short words; batching overrides stay within the batcher's limits.
fn check_constraints(req: &DeployRequest) -> Result<()> {
    for (k, v) in &req.selector {
        if !keys::valid_segment(k) || v.len() > 128 {
            return Err(Error::InvalidArgument(format!(
                "selector {k:?}={v:?} is invalid: keys are 1-128 letters, digits, '-', '_' or '.', values at most 128 bytes"
            )));
        }
    }
    if req.backend.len() > 32 {
        return Err(Error::InvalidArgument(format!(
            "backend {:?} is not a backend name",
            req.backend
        )));
    }
    if let Some(b) = &req.batching {
        if b.max_batch_size > 65_536 || b.preferred_batch_size.iter().any(|&p| p > 65_536) {
            return Err(Error::InvalidArgument(
                "batch sizes above 65536 are not accepted".into(),
            ));
        }
        if b.max_queue_delay_microseconds > kiln_model::MAX_QUEUE_DELAY_US {
            return Err(Error::InvalidArgument(
                "max_queue_delay_microseconds above 10 s is not accepted".into(),
            ));
        }
        if b.max_queue_size > kiln_model::MAX_QUEUE_SIZE {
            return Err(Error::InvalidArgument(format!(
                "max_queue_size above {} is not accepted",
                kiln_model::MAX_QUEUE_SIZE
            )));
        }
    }
    Ok(())
}

pub(super) fn not_deployed(model: &str) -> Error {
    Error::NotFound(format!("model {model:?} is not deployed"))
}

fn version_not_deployed(model: &str, version: &str) -> Error {
    Error::NotFound(format!(
        "version {version:?} of model {model:?} is not deployed"
    ))
}

/// Reads the deployment of `model`, applies `edit`, and writes the result (`None` deletes it),
/// guarded by the revision read. Returns what was written.
pub(super) async fn update<F>(
    coord: &dyn Coordinator,
    model: &str,
    mut edit: F,
) -> Result<Option<DeploymentRecord>>
where
    F: FnMut(Option<DeploymentRecord>) -> Result<Option<DeploymentRecord>>,
{
    let key = keys::deployment(model);
    for _ in 0..ATTEMPTS {
        let kv = coord.get(&key).await?;
        let current = kv
            .as_ref()
            .map(codec::decode::<DeploymentRecord>)
            .transpose()?;
        let next = edit(current)?;
        let guard = match &kv {
            Some(kv) => Compare::ModRevision(key.clone(), kv.mod_revision),
            None => Compare::Absent(key.clone()),
        };
        let write = match &next {
            Some(d) => TxnOp::Put {
                key: key.clone(),
                value: codec::encode(d),
                lease: 0,
            },
            None => TxnOp::Delete(key.clone()),
        };
        let outcome = coord
            .txn(TxnRequest {
                compare: vec![guard],
                success: vec![write],
                failure: vec![],
            })
            .await?;
        if outcome.succeeded {
            return Ok(next);
        }
    }
    Err(Error::Conflict(format!(
        "deployment {model:?} kept changing under concurrent writers; retry"
    )))
}

pub(super) async fn deploy(
    coord: &dyn Coordinator,
    req: DeployRequest,
) -> Result<DeploymentRecord> {
    segment("model", &req.model)?;
    segment("version", &req.version)?;
    check_replicas(req.replicas)?;
    check_constraints(&req)?;
    let registered: Option<ModelVersionRecord> =
        codec::get(coord, &keys::model_version(&req.model, &req.version)).await?;
    if registered.is_none() {
        return Err(Error::NotFound(format!(
            "model version {}/{} is not registered; register it first",
            req.model, req.version
        )));
    }
    let written = update(coord, &req.model, |current| {
        let mut d = current.unwrap_or_else(|| DeploymentRecord {
            model: req.model.clone(),
            ..Default::default()
        });
        match d.versions.iter_mut().find(|v| v.version == req.version) {
            Some(v) => {
                v.replicas = req.replicas;
                if req.traffic_weight > 0 {
                    v.traffic_weight = req.traffic_weight;
                    v.retiring = false;
                }
                // Deploying again (to change replicas, say) keeps the constraints and overrides
                // it does not restate.
                if !req.backend.is_empty() {
                    v.backend = req.backend.clone();
                }
                if !req.selector.is_empty() {
                    v.selector = req.selector.clone();
                }
                if req.batching.is_some() {
                    v.batching = req.batching.clone();
                }
            }
            None => {
                // A first version with weight 0 would serve nothing: route to it by default.
                let weight = match (d.versions.is_empty(), req.traffic_weight) {
                    (true, 0) => DEFAULT_WEIGHT,
                    (_, w) => w,
                };
                d.versions.push(DeploymentVersion {
                    version: req.version.clone(),
                    replicas: req.replicas,
                    traffic_weight: weight,
                    retiring: false,
                    backend: req.backend.clone(),
                    selector: req.selector.clone(),
                    batching: req.batching.clone(),
                });
            }
        }
        Ok(Some(d))
    })
    .await?
    .expect("deploy always writes a record");
    tracing::info!(model = %req.model, version = %req.version, replicas = req.replicas, "deployed");
    Ok(written)
}

pub(super) async fn undeploy(
    coord: &dyn Coordinator,
    req: UndeployRequest,
) -> Result<Option<DeploymentRecord>> {
    segment("model", &req.model)?;
    if !req.version.is_empty() {
        segment("version", &req.version)?;
    }
    let left = update(coord, &req.model, |current| {
        let mut d = current.ok_or_else(|| not_deployed(&req.model))?;
        if req.version.is_empty() {
            return Ok(None);
        }
        let before = d.versions.len();
        d.versions.retain(|v| v.version != req.version);
        if d.versions.len() == before {
            return Err(version_not_deployed(&req.model, &req.version));
        }
        Ok((!d.versions.is_empty()).then_some(d))
    })
    .await?;
    tracing::info!(model = %req.model, version = %req.version, "undeployed");
    Ok(left)
}

pub(super) async fn scale(coord: &dyn Coordinator, req: ScaleRequest) -> Result<DeploymentRecord> {
    segment("model", &req.model)?;
    segment("version", &req.version)?;
    check_replicas(req.replicas)?;
    let written = update(coord, &req.model, |current| {
        let mut d = current.ok_or_else(|| not_deployed(&req.model))?;
        let v = d
            .versions
            .iter_mut()
            .find(|v| v.version == req.version)
            .ok_or_else(|| version_not_deployed(&req.model, &req.version))?;
        v.replicas = req.replicas;
        Ok(Some(d))
    })
    .await?
    .expect("scale always writes a record");
    tracing::info!(model = %req.model, version = %req.version, replicas = req.replicas, "scaled");
    Ok(written)
}

pub(super) async fn set_traffic_split(
    coord: &dyn Coordinator,
    req: SetTrafficSplitRequest,
) -> Result<DeploymentRecord> {
    segment("model", &req.model)?;
    let mut seen = std::collections::BTreeSet::new();
    for w in &req.weights {
        if !seen.insert(w.version.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "version {:?} is listed twice",
                w.version
            )));
        }
    }
    let total: u64 = req.weights.iter().map(|w| u64::from(w.weight)).sum();
    if total == 0 {
        return Err(Error::InvalidArgument(
            "the weights must sum to more than 0, or no version would get traffic".into(),
        ));
    }
    let written = update(coord, &req.model, |current| {
        let mut d = current.ok_or_else(|| not_deployed(&req.model))?;
        if let Some(w) = req
            .weights
            .iter()
            .find(|w| !d.versions.iter().any(|v| v.version == w.version))
        {
            return Err(version_not_deployed(&req.model, &w.version));
        }
        for v in &mut d.versions {
            v.traffic_weight = req
                .weights
                .iter()
                .find(|w| w.version == v.version)
                .map_or(0, |w| w.weight);
            // Giving a retiring version traffic again keeps it.
            v.retiring &= v.traffic_weight == 0;
        }
        Ok(Some(d))
    })
    .await?
    .expect("a traffic split always writes a record");
    tracing::info!(model = %req.model, "traffic split set");
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kiln_coord::{MemoryCoordinator, SharedCoordinator};
    use kiln_proto::kiln::v1::TrafficWeight;

    use super::*;

    async fn store_with(versions: &[&str]) -> SharedCoordinator {
        let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
        for v in versions {
            let r = ModelVersionRecord {
                model: "m".into(),
                version: (*v).into(),
                ..Default::default()
            };
            codec::put(coord.as_ref(), &keys::model_version("m", v), &r, 0)
                .await
                .unwrap();
        }
        coord
    }

    fn dep(version: &str, replicas: u32, weight: u32) -> DeployRequest {
        DeployRequest {
            model: "m".into(),
            version: version.into(),
            replicas,
            traffic_weight: weight,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn deploy_validates_and_defaults_the_first_weight() {
        let c = store_with(&["1", "2"]).await;
        assert!(matches!(
            deploy(c.as_ref(), dep("9", 1, 0)).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            deploy(c.as_ref(), dep("1", 0, 0)).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            deploy(c.as_ref(), dep("1", 65, 0)).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            deploy(c.as_ref(), dep("a/b", 1, 0)).await,
            Err(Error::InvalidArgument(_))
        ));
        let d = deploy(c.as_ref(), dep("1", 2, 0)).await.unwrap();
        assert_eq!(d.versions[0].traffic_weight, DEFAULT_WEIGHT);
        // A second version with weight 0 is a canary without traffic.
        let d = deploy(c.as_ref(), dep("2", 1, 0)).await.unwrap();
        assert_eq!(d.versions[1].traffic_weight, 0);
        // Constraints given once stay when a later deploy does not restate them.
        let mut constrained = dep("1", 2, 0);
        constrained.backend = "wgpu".into();
        deploy(c.as_ref(), constrained).await.unwrap();
        // Redeploying a version changes its replicas and keeps its weight.
        let d = deploy(c.as_ref(), dep("1", 3, 0)).await.unwrap();
        assert_eq!(d.versions[0].backend, "wgpu");
        assert_eq!(
            (d.versions[0].replicas, d.versions[0].traffic_weight),
            (3, 100)
        );
        let stored: DeploymentRecord = codec::get(c.as_ref(), &keys::deployment("m"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, d);
    }

    #[tokio::test]
    async fn scale_and_undeploy() {
        let c = store_with(&["1", "2"]).await;
        let scale_req = |v: &str, r| ScaleRequest {
            model: "m".into(),
            version: v.into(),
            replicas: r,
        };
        assert!(matches!(
            scale(c.as_ref(), scale_req("1", 2)).await,
            Err(Error::NotFound(_))
        ));
        deploy(c.as_ref(), dep("1", 1, 0)).await.unwrap();
        deploy(c.as_ref(), dep("2", 1, 0)).await.unwrap();
        assert!(matches!(
            scale(c.as_ref(), scale_req("3", 2)).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            scale(c.as_ref(), scale_req("1", 0)).await,
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            scale(c.as_ref(), scale_req("1", 4)).await.unwrap().versions[0].replicas,
            4
        );
        let undeploy_req = |v: &str| UndeployRequest {
            model: "m".into(),
            version: v.into(),
        };
        assert!(matches!(
            undeploy(c.as_ref(), undeploy_req("7")).await,
            Err(Error::NotFound(_))
        ));
        let left = undeploy(c.as_ref(), undeploy_req("1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left.versions.len(), 1);
        assert_eq!(undeploy(c.as_ref(), undeploy_req("2")).await.unwrap(), None);
        assert!(c.get(&keys::deployment("m")).await.unwrap().is_none());
        assert!(matches!(
            undeploy(c.as_ref(), undeploy_req("")).await,
            Err(Error::NotFound(_))
        ));
        deploy(c.as_ref(), dep("1", 1, 0)).await.unwrap();
        assert_eq!(undeploy(c.as_ref(), undeploy_req("")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn traffic_split_is_validated() {
        let c = store_with(&["1", "2"]).await;
        let split = |ws: &[(&str, u32)]| SetTrafficSplitRequest {
            model: "m".into(),
            weights: ws
                .iter()
                .map(|(v, w)| TrafficWeight {
                    version: (*v).into(),
                    weight: *w,
                })
                .collect(),
        };
        assert!(matches!(
            set_traffic_split(c.as_ref(), split(&[("1", 1)])).await,
            Err(Error::NotFound(_))
        ));
        deploy(c.as_ref(), dep("1", 1, 0)).await.unwrap();
        deploy(c.as_ref(), dep("2", 1, 0)).await.unwrap();
        assert!(matches!(
            set_traffic_split(c.as_ref(), split(&[("1", 0)])).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            set_traffic_split(c.as_ref(), split(&[("1", 1), ("1", 2)])).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            set_traffic_split(c.as_ref(), split(&[("3", 1)])).await,
            Err(Error::NotFound(_))
        ));
        let d = set_traffic_split(c.as_ref(), split(&[("2", 90)]))
            .await
            .unwrap();
        let weights: Vec<u32> = d.versions.iter().map(|v| v.traffic_weight).collect();
        assert_eq!(weights, [0, 90]);
    }
}
