//! The routing table: which replicas of which model version are ready, and how a deployment
//! splits traffic between versions.
//!
//! Two layers, both plain data and free of I/O so they are unit tested directly:
//!
//! - [`RoutingState`] mirrors the etcd keys under `/kiln/v1/replicas/` and
//!   `/kiln/v1/deployments/`. The watcher resets it from a listing and applies watch events to it.
//! - [`RoutingTable`] is an immutable snapshot built from the state and shared as
//!   `Arc<RoutingTable>`: requests read it without locks while the watcher builds the next one.
//!
//! Version choice ([`RoutingTable::resolve`]): an explicit version is used as asked. An empty
//! version follows the deployment's traffic weights among the versions that have ready replicas;
//! when no weighted version is ready (or there is no deployment record) the highest version with
//! ready replicas takes the traffic, so a version switch never drops requests (DESIGN.md §4).
//! Versions compare numerically when both are integers, as strings otherwise.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use kiln_coord::codec::{self, DeploymentRecord, ReplicaRecord, ReplicaState};
use kiln_coord::{EventKind, KeyValue, WatchEvent, keys};
use rand::Rng;

use crate::error::Error;

/// The records the gateway follows, keyed as in etcd. Built only by the watcher task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingState {
    /// Replica records by (model, version, worker id), taken from the key.
    replicas: BTreeMap<(String, String, String), ReplicaRecord>,
    /// Deployment records by model.
    deployments: BTreeMap<String, DeploymentRecord>,
}

/// A ready replica the gateway may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyReplica {
    /// The worker hosting it.
    pub worker_id: String,
    /// `host:port` of the worker's inference endpoint.
    pub address: String,
}

/// Every replica of one version, as the workers report them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionRoutes {
    /// Ready replicas, sorted by worker id: the request path picks among these.
    pub ready: Vec<ReadyReplica>,
    /// Replicas that are not ready: (worker id, state, reason), for RepositoryIndex.
    pub not_ready: Vec<(String, ReplicaState, String)>,
    /// Addresses of every replica whatever its state (ModelStatistics asks them all).
    pub addresses: Vec<String>,
}

/// Everything known about one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRoutes {
    /// Versions with a replica record or a deployment entry, by version string.
    pub versions: BTreeMap<String, VersionRoutes>,
    /// The deployment's traffic weights per version; `None` without a deployment record.
    pub weights: Option<Vec<(String, u32)>>,
}

/// One immutable snapshot of where each model version can be served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingTable {
    models: BTreeMap<String, ModelRoutes>,
}

/// Where one request goes: the version chosen and its ready replicas.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The model.
    pub model: &'a str,
    /// The version chosen (filled into the forwarded request).
    pub version: &'a str,
    /// Its ready replicas (never empty).
    pub replicas: &'a [ReadyReplica],
}

/// Orders version strings: integers numerically (ties, such as `01` and `1`, as strings) and
/// before every other version; other versions as strings. A total order, as `sort_by` needs:
/// comparing an integer with a non-integer as strings made cycles (`9` < `10` < `5a` < `9`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl RoutingState {
    /// Replaces every replica record with those of a fresh listing of `/kiln/v1/replicas/`.
    pub fn reset_replicas(&mut self, kvs: &[KeyValue]) {
        self.replicas.clear();
        for kv in kvs {
            self.put_replica(kv);
        }
    }

    /// Replaces every deployment with those of a fresh listing of `/kiln/v1/deployments/`.
    pub fn reset_deployments(&mut self, kvs: &[KeyValue]) {
        self.deployments.clear();
        for kv in kvs {
            self.put_deployment(kv);
        }
    }

    /// Applies one watch event under either prefix; keys outside them are ignored.
    pub fn apply(&mut self, event: &WatchEvent) {
        let key = event.kv.key.as_str();
        match (event.kind, replica_key(key), deployment_key(key)) {
            (EventKind::Put, Some(_), _) => self.put_replica(&event.kv),
            (EventKind::Delete, Some(id), _) => {
                self.replicas.remove(&id);
            }
            (EventKind::Put, None, Some(_)) => self.put_deployment(&event.kv),
            (EventKind::Delete, None, Some(model)) => {
                self.deployments.remove(&model);
            }
            (_, None, None) => tracing::debug!(key, "ignoring key outside the routing prefixes"),
        }
    }

    /// An undecodable value removes the entry: the gateway never routes on a record it cannot read.
    fn put_replica(&mut self, kv: &KeyValue) {
        let Some(id) = replica_key(&kv.key) else {
            tracing::warn!(key = %kv.key, "ignoring malformed replica key");
            return;
        };
        match codec::decode::<ReplicaRecord>(kv) {
            Ok(record) => {
                self.replicas.insert(id, record);
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring undecodable replica record");
                self.replicas.remove(&id);
            }
        }
    }

    fn put_deployment(&mut self, kv: &KeyValue) {
        let Some(model) = deployment_key(&kv.key) else {
            tracing::warn!(key = %kv.key, "ignoring malformed deployment key");
            return;
        };
        match codec::decode::<DeploymentRecord>(kv) {
            Ok(record) => {
                self.deployments.insert(model, record);
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring undecodable deployment record");
                self.deployments.remove(&model);
            }
        }
    }

    /// Builds the snapshot the request path reads.
    pub fn table(&self) -> RoutingTable {
        let mut models: BTreeMap<String, ModelRoutes> = BTreeMap::new();
        for ((model, version, worker), record) in &self.replicas {
            let routes = models
                .entry(model.clone())
                .or_default()
                .versions
                .entry(version.clone())
                .or_default();
            if !record.address.is_empty() {
                routes.addresses.push(record.address.clone());
            }
            let state = ReplicaState::try_from(record.state).unwrap_or(ReplicaState::Unspecified);
            if state == ReplicaState::Ready && !record.address.is_empty() {
                routes.ready.push(ReadyReplica {
                    worker_id: worker.clone(),
                    address: record.address.clone(),
                });
            } else {
                routes
                    .not_ready
                    .push((worker.clone(), state, record.reason.clone()));
            }
        }
        for (model, deployment) in &self.deployments {
            let entry = models.entry(model.clone()).or_default();
            let mut weights = Vec::with_capacity(deployment.versions.len());
            for v in &deployment.versions {
                if v.version.is_empty() {
                    continue;
                }
                entry.versions.entry(v.version.clone()).or_default();
                weights.push((v.version.clone(), v.traffic_weight));
            }
            entry.weights = Some(weights);
        }
        RoutingTable { models }
    }
}

/// `(model, version, worker)` of a valid key under `/kiln/v1/replicas/`.
fn replica_key(key: &str) -> Option<(String, String, String)> {
    match keys::segments(keys::REPLICAS, key)?.as_slice() {
        [m, v, w] if [m, v, w].iter().all(|s| keys::valid_segment(s)) => {
            Some((m.to_string(), v.to_string(), w.to_string()))
        }
        _ => None,
    }
}

/// The model of a valid key under `/kiln/v1/deployments/`.
fn deployment_key(key: &str) -> Option<String> {
    match keys::segments(keys::DEPLOYMENTS, key)?.as_slice() {
        [m] if keys::valid_segment(m) => Some(m.to_string()),
        _ => None,
    }
}

impl RoutingTable {
    /// Every model, by name.
    pub fn models(&self) -> &BTreeMap<String, ModelRoutes> {
        &self.models
    }

    /// One model's routes.
    pub fn model(&self, name: &str) -> Option<&ModelRoutes> {
        self.models.get(name)
    }

    /// Number of ready replicas over every model version.
    pub fn ready_replicas(&self) -> usize {
        self.models
            .values()
            .flat_map(|m| m.versions.values())
            .map(|v| v.ready.len())
            .sum()
    }

    /// Every distinct worker address holding any replica, sorted.
    pub fn addresses(&self) -> BTreeSet<&str> {
        self.models
            .values()
            .flat_map(|m| m.versions.values())
            .flat_map(|v| v.addresses.iter().map(String::as_str))
            .collect()
    }

    /// Chooses where a request for `model`/`version` goes. An empty version follows the
    /// deployment's traffic weights (drawn with `rng`); an explicit one is used as asked.
    pub fn resolve(
        &self,
        model: &str,
        version: &str,
        rng: &mut impl Rng,
    ) -> Result<Route<'_>, Error> {
        let (model, routes) = self.lookup(model)?;
        let version = if version.is_empty() {
            routes
                .weighted_version(rng)
                .or_else(|| routes.highest_ready_version())
                .ok_or_else(|| no_ready(model, "any"))?
        } else {
            version
        };
        routes.route(model, version)
    }

    /// Like [`RoutingTable::resolve`] but deterministic for an empty version: the ready version
    /// with the largest traffic weight (ties: the highest version), else the highest ready one.
    /// Used by ModelMetadata/ModelConfig so repeated calls describe the same version.
    pub fn resolve_stable(&self, model: &str, version: &str) -> Result<Route<'_>, Error> {
        let (model, routes) = self.lookup(model)?;
        let version = if version.is_empty() {
            routes
                .heaviest_ready_version()
                .or_else(|| routes.highest_ready_version())
                .ok_or_else(|| no_ready(model, "any"))?
        } else {
            version
        };
        routes.route(model, version)
    }

    fn lookup(&self, model: &str) -> Result<(&str, &ModelRoutes), Error> {
        self.models
            .get_key_value(model)
            .map(|(name, routes)| (name.as_str(), routes))
            .ok_or_else(|| Error::UnknownModel(model.to_owned()))
    }
}

fn no_ready(model: &str, version: &str) -> Error {
    Error::NoReadyReplica {
        model: model.to_owned(),
        version: version.to_owned(),
    }
}

impl ModelRoutes {
    fn route<'a>(&'a self, model: &'a str, version: &str) -> Result<Route<'a>, Error> {
        let (version, routes) =
            self.versions
                .get_key_value(version)
                .ok_or_else(|| Error::UnknownVersion {
                    model: model.to_owned(),
                    version: version.to_owned(),
                })?;
        if routes.ready.is_empty() {
            return Err(no_ready(model, version));
        }
        Ok(Route {
            model,
            version,
            replicas: &routes.ready,
        })
    }

    fn is_ready(&self, version: &str) -> bool {
        self.versions
            .get(version)
            .is_some_and(|v| !v.ready.is_empty())
    }

    /// Versions with a positive weight and ready replicas, with their weights.
    fn weighted_ready(&self) -> impl Iterator<Item = (&str, u32)> {
        self.weights
            .iter()
            .flatten()
            .filter(|(v, w)| *w > 0 && self.is_ready(v))
            .map(|(v, w)| (v.as_str(), *w))
    }

    /// Draws a version by traffic weight among the ready ones; `None` when none is weighted.
    pub fn weighted_version(&self, rng: &mut impl Rng) -> Option<&str> {
        let total: u64 = self.weighted_ready().map(|(_, w)| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut draw = rng.random_range(0..total);
        for (version, weight) in self.weighted_ready() {
            if draw < u64::from(weight) {
                return Some(version);
            }
            draw -= u64::from(weight);
        }
        None
    }

    /// The ready version with the largest weight (ties: highest version).
    fn heaviest_ready_version(&self) -> Option<&str> {
        self.weighted_ready()
            .max_by(|(va, wa), (vb, wb)| wa.cmp(wb).then_with(|| compare_versions(va, vb)))
            .map(|(v, _)| v)
    }

    /// The highest version that has ready replicas.
    pub fn highest_ready_version(&self) -> Option<&str> {
        self.versions
            .iter()
            .filter(|(_, r)| !r.ready.is_empty())
            .map(|(v, _)| v.as_str())
            .max_by(|a, b| compare_versions(a, b))
    }
}

#[cfg(test)]
mod tests;
