//! Promote and Rollback: moving all of a model's traffic to one version and retiring the rest.
//!
//! Both are one guarded edit of the deployment record (see [`super::deployments::update`]):
//! the target gets weight 100 and at least as many replicas as any version it replaces; every
//! other version gets weight 0 and is marked `retiring`. Nothing is unloaded by the edit itself:
//! the controller leader removes retiring versions from the record once every version with
//! traffic has all its replicas READY, and their assignments after that. Meanwhile the gateway
//! routes by weight among versions with ready replicas and falls back to a ready one otherwise,
//! so traffic only moves to versions that can serve it and no request finds nothing to serve it.
//!
//! Promote needs the target to have a READY replica (FAILED_PRECONDITION otherwise), because it
//! is the step that follows a canary. Rollback does not: returning to a version that was
//! retired reloads it, and the current version keeps serving until it is ready.

use kiln_coord::codec::{self, DeploymentRecord, DeploymentVersion, ModelVersionRecord};
use kiln_coord::{Coordinator, keys};
use kiln_proto::kiln::v1::{ListReplicasRequest, PromoteRequest, ReplicaState, RollbackRequest};

use super::deployments::{DEFAULT_WEIGHT, not_deployed, update};
use super::{listing, segment};
use crate::error::{Error, Result};

/// The version that takes the traffic now: the highest weight among non-retiring versions.
fn serving(d: &DeploymentRecord) -> Option<&DeploymentVersion> {
    d.versions
        .iter()
        .filter(|v| !v.retiring && v.traffic_weight > 0)
        .max_by_key(|v| v.traffic_weight)
}

/// Gives `target` all the traffic and retires every other version. `target` must be in `d`.
fn switch_to(d: &mut DeploymentRecord, target: &str) {
    let replicas = d.versions.iter().map(|v| v.replicas).max().unwrap_or(1);
    let before = serving(d)
        .map(|v| v.version.clone())
        .filter(|v| v != target);
    for v in &mut d.versions {
        if v.version == target {
            v.traffic_weight = DEFAULT_WEIGHT;
            v.retiring = false;
            v.replicas = v.replicas.max(replicas);
        } else {
            v.traffic_weight = 0;
            v.retiring = true;
        }
    }
    if let Some(before) = before {
        d.previous_version = before;
    }
}

pub(super) async fn promote(
    coord: &dyn Coordinator,
    req: PromoteRequest,
) -> Result<DeploymentRecord> {
    segment("model", &req.model)?;
    segment("version", &req.version)?;
    let ready = listing::replicas(
        coord,
        &ListReplicasRequest {
            model: req.model.clone(),
            version: req.version.clone(),
            worker_id: String::new(),
        },
    )
    .await?
    .iter()
    .filter(|r| r.state == ReplicaState::Ready as i32)
    .count();
    let written = update(coord, &req.model, |current| {
        let mut d = current.ok_or_else(|| not_deployed(&req.model))?;
        if !d.versions.iter().any(|v| v.version == req.version) {
            return Err(Error::NotFound(format!(
                "version {:?} of model {:?} is not deployed; deploy it first (a canary with `kiln deploy --weight`)",
                req.version, req.model
            )));
        }
        if ready == 0 {
            return Err(Error::FailedPrecondition(format!(
                "{}/{} has no READY replica yet, so it cannot take all the traffic; wait until `kiln status` shows it ready",
                req.model, req.version
            )));
        }
        switch_to(&mut d, &req.version);
        Ok(Some(d))
    })
    .await?
    .expect("promote always writes a record");
    tracing::info!(model = %req.model, version = %req.version, "promoted");
    Ok(written)
}

pub(super) async fn rollback(
    coord: &dyn Coordinator,
    req: RollbackRequest,
) -> Result<DeploymentRecord> {
    segment("model", &req.model)?;
    if !req.to_version.is_empty() {
        segment("version", &req.to_version)?;
    }
    let current: DeploymentRecord = codec::get(coord, &keys::deployment(&req.model))
        .await?
        .ok_or_else(|| not_deployed(&req.model))?;
    let target = if req.to_version.is_empty() {
        current.previous_version.clone()
    } else {
        req.to_version.clone()
    };
    if target.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "model {:?} has no previous version to roll back to; name one with --to",
            req.model
        )));
    }
    let registered: Option<ModelVersionRecord> =
        codec::get(coord, &keys::model_version(&req.model, &target)).await?;
    if registered.is_none() {
        return Err(Error::NotFound(format!(
            "{}/{target} is not registered, so there is nothing to roll back to",
            req.model
        )));
    }
    let written = update(coord, &req.model, |current| {
        let mut d = current.ok_or_else(|| not_deployed(&req.model))?;
        // The target was read before this edit: a promote or rollback in between changed it.
        if req.to_version.is_empty() && d.previous_version != target {
            return Err(Error::Conflict(format!(
                "{} changed while rolling back (previous version now {:?}); check `kiln status` and run it again",
                req.model, d.previous_version
            )));
        }
        if !d.versions.iter().any(|v| v.version == target) {
            d.versions.push(DeploymentVersion {
                version: target.clone(),
                replicas: 1,
                ..Default::default()
            });
        }
        switch_to(&mut d, &target);
        Ok(Some(d))
    })
    .await?
    .expect("rollback always writes a record");
    tracing::info!(model = %req.model, version = %target, "rolled back");
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dv(version: &str, replicas: u32, weight: u32) -> DeploymentVersion {
        DeploymentVersion {
            version: version.into(),
            replicas,
            traffic_weight: weight,
            ..Default::default()
        }
    }

    #[test]
    fn switching_retires_the_others_and_remembers_the_previous_version() {
        let mut d = DeploymentRecord {
            model: "m".into(),
            versions: vec![dv("1", 3, 90), dv("2", 1, 10)],
            ..Default::default()
        };
        switch_to(&mut d, "2");
        assert_eq!(d.previous_version, "1");
        assert_eq!(
            (
                d.versions[1].traffic_weight,
                d.versions[1].replicas,
                d.versions[1].retiring
            ),
            (100, 3, false)
        );
        assert_eq!(
            (d.versions[0].traffic_weight, d.versions[0].retiring),
            (0, true)
        );
        // And back: the previous version is now 2.
        switch_to(&mut d, "1");
        assert_eq!(d.previous_version, "2");
        assert!(d.versions[1].retiring && !d.versions[0].retiring);
    }
}
