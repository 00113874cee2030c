//! Triton's model repository extension on the gateway, mapped onto the monitor's Admin API
//! (DESIGN.md §3): RepositoryModelLoad deploys, RepositoryModelUnload undeploys,
//! RepositoryIndex reports what the routing table knows.
//!
//! - **Load** `{model_name, parameters}`: ListModels(model) picks the version (parameter
//!   `version`, else the highest registered one, numerically when both are integers); Deploy
//!   with `replicas` (parameter, else the count already deployed for that version, else 1) and
//!   traffic weight 0 (the monitor gives a first version all the traffic); then waits until the
//!   gateway's own routing table has a READY replica of that version, within the caller's
//!   deadline. OK once routable; DEADLINE_EXCEEDED when no replica got ready in time (the
//!   deployment stays: the cluster keeps loading it); NOT_FOUND for a model or version that is
//!   not registered. Triton's model upload (`config`, `file:…` parameters) is refused with
//!   INVALID_ARGUMENT: packages are registered with `kiln deploy --package`.
//! - **Unload** `{model_name, parameters}`: Undeploy(model, parameter `version` or every
//!   version); NOT_FOUND when not deployed. `unload_dependents` is ignored (no ensembles). OK
//!   once the monitor recorded it; workers drop the replicas as the controller reconciles.
//! - **Index**: one entry per (model, version) with replicas or a deployment entry, state
//!   `READY` (a ready replica), `LOADING` (a replica loading, or deployed and not placed yet) or
//!   `UNAVAILABLE` (replicas failed, or left over after an undeploy), with the reason.

use std::collections::HashMap;
use std::sync::Arc;

use kiln_coord::codec::ReplicaState;
use kiln_proto::inference::model_repository_parameter::ParameterChoice;
use kiln_proto::inference::repository_index_response::ModelIndex;
use kiln_proto::inference::{
    ModelRepositoryParameter, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};
use kiln_proto::kiln::v1::{
    DeployRequest, ListDeploymentsRequest, ListModelsRequest, UndeployRequest,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Request;

use crate::admin::AdminLink;
use crate::error::Error;
use crate::routing::{ModelRoutes, RoutingTable, VersionRoutes, compare_versions};

/// Replicas deployed by a load that names none, for a version not deployed yet.
pub const DEFAULT_REPLICAS: u32 = 1;

/// Index states, as Triton spells them.
const READY: &str = "READY";
const LOADING: &str = "LOADING";
const UNAVAILABLE: &str = "UNAVAILABLE";

/// The repository extension: Admin calls plus the routing table to wait on.
pub struct Repository {
    admin: AdminLink,
    table: watch::Receiver<Arc<RoutingTable>>,
}

/// What RepositoryModelLoad was asked for, from its parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadParameters {
    /// Parameter `version` (string or int64).
    pub version: Option<String>,
    /// Parameter `replicas` (int64, or a string holding one).
    pub replicas: Option<u32>,
}

/// What RepositoryModelUnload was asked for, from its parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UnloadParameters {
    /// Parameter `version` (string or int64); `None` unloads every version.
    pub version: Option<String>,
}

impl Repository {
    /// The extension over `admin`, waiting on the tables published on `table`.
    pub fn new(admin: AdminLink, table: watch::Receiver<Arc<RoutingTable>>) -> Self {
        Self { admin, table }
    }

    /// RepositoryModelLoad (see the module docs): returns once a replica of the deployed
    /// version is routable, or fails by `deadline`.
    pub async fn load(
        &self,
        request: RepositoryModelLoadRequest,
        deadline: Instant,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let model = model_name(request.model_name)?;
        let params = LoadParameters::parse(&request.parameters)?;
        let registered = self
            .admin
            .call("ListModels", deadline, |mut client, timeout| {
                let mut request = Request::new(ListModelsRequest {
                    model: model.clone(),
                });
                request.set_timeout(timeout);
                async move { client.list_models(request).await }
            })
            .await?
            .versions;
        let registered: Vec<&str> = registered
            .iter()
            .filter(|r| r.model == model)
            .map(|r| r.version.as_str())
            .collect();
        let version = match params.version {
            Some(v) if registered.contains(&v.as_str()) => v,
            Some(version) if !registered.is_empty() => {
                return Err(Error::VersionNotRegistered { model, version });
            }
            _ => registered
                .iter()
                .max_by(|a, b| compare_versions(a, b))
                .map(|v| (*v).to_owned())
                .ok_or_else(|| Error::NotRegistered(model.clone()))?,
        };
        let replicas = match params.replicas {
            Some(n) => n,
            None => self
                .deployed_replicas(&model, &version, deadline)
                .await?
                .unwrap_or(DEFAULT_REPLICAS),
        };
        self.admin
            .call("Deploy", deadline, |mut client, timeout| {
                let mut request = Request::new(DeployRequest {
                    model: model.clone(),
                    version: version.clone(),
                    replicas,
                    traffic_weight: 0,
                    ..Default::default()
                });
                request.set_timeout(timeout);
                async move { client.deploy(request).await }
            })
            .await?;
        tracing::info!(%model, %version, replicas, "RepositoryModelLoad deployed; waiting for a ready replica");
        self.wait_ready(&model, &version, deadline, started).await
    }

    /// RepositoryModelUnload (see the module docs).
    pub async fn unload(
        &self,
        request: RepositoryModelUnloadRequest,
        deadline: Instant,
    ) -> Result<(), Error> {
        let model = model_name(request.model_name)?;
        let params = UnloadParameters::parse(&request.parameters)?;
        let version = params.version.unwrap_or_default();
        self.admin
            .call("Undeploy", deadline, |mut client, timeout| {
                let mut request = Request::new(UndeployRequest {
                    model: model.clone(),
                    version: version.clone(),
                });
                request.set_timeout(timeout);
                async move { client.undeploy(request).await }
            })
            .await?;
        tracing::info!(%model, %version, "RepositoryModelUnload undeployed");
        Ok(())
    }

    /// The replica count the deployment of `model` holds for `version`, if deployed.
    async fn deployed_replicas(
        &self,
        model: &str,
        version: &str,
        deadline: Instant,
    ) -> Result<Option<u32>, Error> {
        let deployments = self
            .admin
            .call("ListDeployments", deadline, |mut client, timeout| {
                let mut request = Request::new(ListDeploymentsRequest {
                    model: model.to_owned(),
                });
                request.set_timeout(timeout);
                async move { client.list_deployments(request).await }
            })
            .await?
            .deployments;
        Ok(deployments
            .iter()
            .filter(|d| d.model == model)
            .flat_map(|d| &d.versions)
            .find(|v| v.version == version && v.replicas > 0)
            .map(|v| v.replicas))
    }

    /// Waits until the routing table has a ready replica of `model`/`version`, up to `deadline`.
    async fn wait_ready(
        &self,
        model: &str,
        version: &str,
        deadline: Instant,
        started: Instant,
    ) -> Result<(), Error> {
        let mut table = self.table.clone();
        let routable = |t: &Arc<RoutingTable>| {
            t.model(model)
                .and_then(|m| m.versions.get(version))
                .is_some_and(|v| !v.ready.is_empty())
        };
        match tokio::time::timeout_at(deadline, table.wait_for(routable)).await {
            Ok(Ok(_)) => Ok(()),
            // The routing watcher is gone: the gateway is shutting down.
            Ok(Err(_closed)) => Err(Error::NoReadyReplica {
                model: model.to_owned(),
                version: version.to_owned(),
            }),
            Err(_elapsed) => {
                let table = self.table.borrow().clone();
                let state = match table.model(model) {
                    Some(routes) => describe(routes, version).1,
                    None => "not in the routing table yet".to_owned(),
                };
                Err(Error::LoadTimedOut {
                    model: model.to_owned(),
                    version: version.to_owned(),
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    state,
                })
            }
        }
    }
}

/// The model name of a request; it must not be empty.
fn model_name(name: String) -> Result<String, Error> {
    if name.is_empty() {
        Err(Error::InvalidRequest("model_name must not be empty".into()))
    } else {
        Ok(name)
    }
}

/// Refuses Triton's model upload parameters.
fn refuse_upload(key: &str) -> Result<(), Error> {
    if key == "config" || key.starts_with("file:") {
        return Err(Error::InvalidRequest(format!(
            "parameter {key:?} is not supported: register packages with `kiln deploy --package`"
        )));
    }
    Ok(())
}

/// A `version` parameter: a non-empty string, or an integer.
fn version_param(param: &ModelRepositoryParameter) -> Result<String, Error> {
    match &param.parameter_choice {
        Some(ParameterChoice::StringParam(s)) if !s.is_empty() => Ok(s.clone()),
        Some(ParameterChoice::Int64Param(n)) if *n >= 0 => Ok(n.to_string()),
        _ => Err(Error::InvalidRequest(
            "parameter \"version\" must be a non-empty string or a non-negative integer".into(),
        )),
    }
}

impl LoadParameters {
    /// Reads the parameters of RepositoryModelLoad; unknown ones and model uploads are refused.
    pub fn parse(params: &HashMap<String, ModelRepositoryParameter>) -> Result<Self, Error> {
        let mut parsed = Self::default();
        for (key, param) in params {
            refuse_upload(key)?;
            match key.as_str() {
                "version" => parsed.version = Some(version_param(param)?),
                "replicas" => {
                    let n = match &param.parameter_choice {
                        Some(ParameterChoice::Int64Param(n)) => Some(*n),
                        Some(ParameterChoice::StringParam(s)) => s.trim().parse().ok(),
                        _ => None,
                    };
                    let n = n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
                    parsed.replicas = Some(n.ok_or_else(|| {
                        Error::InvalidRequest(
                            "parameter \"replicas\" must be a positive integer".into(),
                        )
                    })?);
                }
                _ => {
                    return Err(Error::InvalidRequest(format!(
                        "unknown parameter {key:?}: RepositoryModelLoad takes \"version\" and \"replicas\""
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

impl UnloadParameters {
    /// Reads the parameters of RepositoryModelUnload; `unload_dependents` is ignored.
    pub fn parse(params: &HashMap<String, ModelRepositoryParameter>) -> Result<Self, Error> {
        let mut parsed = Self::default();
        for (key, param) in params {
            match key.as_str() {
                "version" => parsed.version = Some(version_param(param)?),
                "unload_dependents" => {}
                _ => {
                    return Err(Error::InvalidRequest(format!(
                        "unknown parameter {key:?}: RepositoryModelUnload takes \"version\""
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

/// RepositoryIndex: every (model, version) the table knows, sorted, with its Triton state and
/// reason; `only_ready` keeps the READY ones.
pub fn index(table: &RoutingTable, only_ready: bool) -> Vec<ModelIndex> {
    let mut models = Vec::new();
    for (name, routes) in table.models() {
        let mut versions: Vec<&String> = routes.versions.keys().collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        for version in versions {
            let (state, reason) = describe(routes, version);
            if only_ready && state != READY {
                continue;
            }
            models.push(ModelIndex {
                name: name.clone(),
                version: version.clone(),
                state: state.to_owned(),
                reason,
            });
        }
    }
    models
}

/// The Triton state of one version and why it is not ready (empty when it is).
fn describe(routes: &ModelRoutes, version: &str) -> (&'static str, String) {
    let empty = VersionRoutes::default();
    let replicas = routes.versions.get(version).unwrap_or(&empty);
    let deployed = routes.weights.iter().flatten().any(|(v, _)| v == version);
    if !replicas.ready.is_empty() {
        return (READY, String::new());
    }
    if replicas.not_ready.is_empty() {
        return if deployed {
            (
                LOADING,
                "deployed; no replica placed on a worker yet".into(),
            )
        } else {
            (UNAVAILABLE, "not deployed".into())
        };
    }
    let loading = replicas
        .not_ready
        .iter()
        .any(|(_, state, _)| *state == ReplicaState::Loading);
    let mut reason = replicas
        .not_ready
        .iter()
        .map(|(worker, state, reason)| {
            let state = state
                .as_str_name()
                .trim_start_matches("REPLICA_STATE_")
                .to_lowercase();
            if reason.is_empty() {
                format!("{worker}: {state}")
            } else {
                format!("{worker}: {state} ({reason})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if !deployed {
        reason.push_str("; not deployed");
    }
    (if loading { LOADING } else { UNAVAILABLE }, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> ModelRepositoryParameter {
        ModelRepositoryParameter {
            parameter_choice: Some(ParameterChoice::StringParam(s.into())),
        }
    }

    fn int(n: i64) -> ModelRepositoryParameter {
        ModelRepositoryParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(n)),
        }
    }

    fn params(
        pairs: impl IntoIterator<Item = (&'static str, ModelRepositoryParameter)>,
    ) -> HashMap<String, ModelRepositoryParameter> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn load_parameters() {
        assert_eq!(
            LoadParameters::parse(&HashMap::new()).unwrap(),
            LoadParameters::default()
        );
        let parsed =
            LoadParameters::parse(&params([("version", string("2")), ("replicas", int(3))]))
                .unwrap();
        assert_eq!(parsed.version.as_deref(), Some("2"));
        assert_eq!(parsed.replicas, Some(3));
        let parsed =
            LoadParameters::parse(&params([("version", int(7)), ("replicas", string("2"))]))
                .unwrap();
        assert_eq!(parsed.version.as_deref(), Some("7"));
        assert_eq!(parsed.replicas, Some(2));
        for bad in [
            params([("config", string("{}"))]),
            params([("file:1/model.onnx", string(""))]),
            params([("replicas", int(0))]),
            params([("replicas", int(-1))]),
            params([("replicas", int(1 << 40))]),
            params([("version", string(""))]),
            params([("replica", int(2))]),
        ] {
            let err = tonic::Status::from(LoadParameters::parse(&bad).unwrap_err());
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let err = tonic::Status::from(
            LoadParameters::parse(&params([("config", string("{}"))])).unwrap_err(),
        );
        assert!(err.message().contains("kiln deploy --package"), "{err:?}");
    }

    fn kv(key: String, value: Vec<u8>) -> kiln_coord::KeyValue {
        kiln_coord::KeyValue {
            key,
            value,
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    fn replica(
        version: &str,
        worker: &str,
        state: ReplicaState,
        reason: &str,
    ) -> kiln_coord::KeyValue {
        let record = kiln_coord::codec::ReplicaRecord {
            model: "m".into(),
            version: version.into(),
            worker_id: worker.into(),
            address: format!("{worker}.local:9001"),
            state: state as i32,
            reason: reason.into(),
            ..Default::default()
        };
        kv(
            kiln_coord::keys::replica("m", version, worker),
            kiln_coord::codec::encode(&record),
        )
    }

    #[test]
    fn index_states_follow_triton() {
        use kiln_coord::codec::{DeploymentRecord, DeploymentVersion, encode};
        let mut state = crate::routing::RoutingState::default();
        state.reset_replicas(&[
            replica("1", "wa", ReplicaState::Ready, ""),
            replica("2", "wa", ReplicaState::Loading, ""),
            replica("3", "wb", ReplicaState::Failed, "bad package"),
            replica("9", "wa", ReplicaState::Failed, ""),
        ]);
        let deployment = DeploymentRecord {
            model: "m".into(),
            versions: ["1", "2", "3", "4"]
                .iter()
                .map(|v| DeploymentVersion {
                    version: (*v).into(),
                    replicas: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        state.reset_deployments(&[kv(kiln_coord::keys::deployment("m"), encode(&deployment))]);
        let table = state.table();
        let listed: Vec<_> = index(&table, false)
            .into_iter()
            .map(|m| (m.version, m.state, m.reason))
            .collect();
        let row = |v: &str, s: &str, r: &str| (v.to_owned(), s.to_owned(), r.to_owned());
        assert_eq!(
            listed,
            [
                row("1", "READY", ""),
                row("2", "LOADING", "wa: loading"),
                row("3", "UNAVAILABLE", "wb: failed (bad package)"),
                row(
                    "4",
                    "LOADING",
                    "deployed; no replica placed on a worker yet"
                ),
                row("9", "UNAVAILABLE", "wa: failed; not deployed"),
            ]
        );
        let ready: Vec<_> = index(&table, true).into_iter().map(|m| m.version).collect();
        assert_eq!(ready, ["1"]);
    }

    #[test]
    fn unload_parameters_ignore_unload_dependents() {
        let parsed = UnloadParameters::parse(&params([(
            "unload_dependents",
            ModelRepositoryParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(true)),
            },
        )]))
        .unwrap();
        assert_eq!(parsed, UnloadParameters::default());
        let parsed = UnloadParameters::parse(&params([("version", string("3"))])).unwrap();
        assert_eq!(parsed.version.as_deref(), Some("3"));
        assert!(UnloadParameters::parse(&params([("config", string("{}"))])).is_err());
    }
}
