//! `kiln.v1.Admin`, the control API, served by every monitor instance (leader or not).
//!
//! Handlers only read and write records in the coordination store; the controller leader turns
//! them into assignments. Each handler lives in the module of its concept ([`models`],
//! [`deployments`], [`rollouts`], [`workers`], [`listing`], [`drift`]) and returns [`crate::Error`]; the conversion to `tonic::Status`
//! happens in [`crate::error`] through `?`.

mod deployments;
mod drift;
pub(crate) mod listing;
mod models;
mod repository;
mod rollouts;
pub(crate) mod workers;

use std::path::PathBuf;
use std::sync::Arc;

use kiln_coord::SharedCoordinator;
use kiln_proto::kiln::v1::admin_server::Admin;
use kiln_proto::kiln::v1::*;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::telemetry::{ProfileStore, ReferenceCache};

/// The Admin API implementation.
#[derive(Clone)]
pub struct AdminService {
    coord: SharedCoordinator,
    package_root: Option<PathBuf>,
    repository: Option<PathBuf>,
    profiles: Arc<ProfileStore>,
    references: Arc<ReferenceCache>,
}

impl AdminService {
    /// An Admin service over `coord`; `package_root`, if set, confines registered packages.
    pub fn new(coord: SharedCoordinator, package_root: Option<PathBuf>) -> Self {
        Self {
            coord,
            package_root,
            repository: None,
            profiles: Arc::new(ProfileStore::new(10_000, 60, 64)),
            references: Arc::default(),
        }
    }

    /// DriftReport reads live profiles from `store` (the one the Telemetry service fills).
    pub fn with_profiles(mut self, store: Arc<ProfileStore>) -> Self {
        self.profiles = store;
        self
    }

    /// The reference profile cache DriftReport uses (shared with the watch loop).
    pub(crate) fn references(&self) -> Arc<ReferenceCache> {
        self.references.clone()
    }

    /// Registration copies packages into this model repository (see [`repository`]).
    pub fn with_repository(mut self, repository: Option<PathBuf>) -> Self {
        self.repository = repository;
        self
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn register_model_version(
        &self,
        req: Request<RegisterModelVersionRequest>,
    ) -> Reply<RegisterModelVersionResponse> {
        let record = models::register(
            self.coord.as_ref(),
            self.package_root.as_deref(),
            self.repository.as_deref(),
            req.into_inner(),
        )
        .await?;
        Ok(Response::new(RegisterModelVersionResponse {
            record: Some(record),
        }))
    }

    async fn list_models(&self, req: Request<ListModelsRequest>) -> Reply<ListModelsResponse> {
        let versions = models::list(self.coord.as_ref(), &req.into_inner().model).await?;
        Ok(Response::new(ListModelsResponse { versions }))
    }

    async fn deploy(&self, req: Request<DeployRequest>) -> Reply<DeployResponse> {
        let deployment = deployments::deploy(self.coord.as_ref(), req.into_inner()).await?;
        Ok(Response::new(DeployResponse {
            deployment: Some(deployment),
        }))
    }

    async fn undeploy(&self, req: Request<UndeployRequest>) -> Reply<UndeployResponse> {
        let deployment = deployments::undeploy(self.coord.as_ref(), req.into_inner()).await?;
        Ok(Response::new(UndeployResponse { deployment }))
    }

    async fn scale(&self, req: Request<ScaleRequest>) -> Reply<ScaleResponse> {
        let deployment = deployments::scale(self.coord.as_ref(), req.into_inner()).await?;
        Ok(Response::new(ScaleResponse {
            deployment: Some(deployment),
        }))
    }

    async fn set_traffic_split(
        &self,
        req: Request<SetTrafficSplitRequest>,
    ) -> Reply<SetTrafficSplitResponse> {
        let deployment =
            deployments::set_traffic_split(self.coord.as_ref(), req.into_inner()).await?;
        Ok(Response::new(SetTrafficSplitResponse {
            deployment: Some(deployment),
        }))
    }

    async fn promote(&self, req: Request<PromoteRequest>) -> Reply<PromoteResponse> {
        let deployment = rollouts::promote(self.coord.as_ref(), req.into_inner()).await?;
        Ok(Response::new(PromoteResponse {
            deployment: Some(deployment),
        }))
    }

    async fn rollback(&self, req: Request<RollbackRequest>) -> Reply<RollbackResponse> {
        let deployment = rollouts::rollback(self.coord.as_ref(), req.into_inner()).await?;
        Ok(Response::new(RollbackResponse {
            deployment: Some(deployment),
        }))
    }

    async fn drain_worker(&self, req: Request<DrainWorkerRequest>) -> Reply<DrainWorkerResponse> {
        Ok(Response::new(
            workers::drain(self.coord.as_ref(), req.into_inner()).await?,
        ))
    }

    async fn list_workers(&self, _req: Request<ListWorkersRequest>) -> Reply<ListWorkersResponse> {
        let (workers, loads) = workers::list(self.coord.as_ref()).await?;
        Ok(Response::new(ListWorkersResponse { workers, loads }))
    }

    async fn list_deployments(
        &self,
        req: Request<ListDeploymentsRequest>,
    ) -> Reply<ListDeploymentsResponse> {
        let deployments =
            listing::deployments(self.coord.as_ref(), &req.into_inner().model).await?;
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }

    async fn list_replicas(
        &self,
        req: Request<ListReplicasRequest>,
    ) -> Reply<ListReplicasResponse> {
        let replicas = listing::replicas(self.coord.as_ref(), &req.into_inner()).await?;
        Ok(Response::new(ListReplicasResponse { replicas }))
    }

    async fn drift_report(&self, req: Request<DriftReportRequest>) -> Reply<DriftReportResponse> {
        let report = drift::report(
            &self.coord,
            &self.profiles,
            &self.references,
            req.into_inner(),
        )
        .await?;
        Ok(Response::new(report))
    }
}

/// Checks that `value` is usable as a key segment (model, version, worker id).
pub(crate) fn segment(what: &str, value: &str) -> crate::Result<()> {
    if kiln_coord::keys::valid_segment(value) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {value:?} is invalid: use 1-128 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Like [`segment`], but an empty value (no filter) is fine.
fn optional_segment(what: &str, value: &str) -> crate::Result<()> {
    if value.is_empty() {
        Ok(())
    } else {
        segment(what, value)
    }
}
