//! Placement: the pure heart of the controller.
//!
//! [`plan`] compares the desired state (deployments) with the actual one (assignments and the
//! replica states workers report) over the live workers and returns the assignments to create
//! and to delete. It does no I/O and reads no clock, so every placement rule is unit-tested here
//! and the reconciler only applies the result.
//!
//! A worker *fits* a version when it is live, not draining (shutting down or cordoned), has the
//! version's backend (if the deployment names one), carries every label of its selector, and has
//! the memory for it: its `capacity_bytes` (0 = unlimited) covers what its replicas hold plus the
//! version's size. A version's size is the largest `memory_bytes` a replica of it reported after
//! loading, else its package's `size_bytes` (the estimate before any load).
//!
//! The rules, in order:
//! 1. An assignment survives only if its worker is live, its version is deployed with at least
//!    one replica, and that version is registered. Everything else is deleted.
//! 2. Assignments on workers that no longer fit in any way but memory (draining, cordoned, wrong
//!    backend or labels), and assignments whose replica reports FAILED, are *leaving*: they stay until the version has as many READY replicas
//!    on fitting workers as it wants (make before break), then they are deleted. A leaving
//!    replica with nowhere to go stays put, because it serves better than none. So a load that
//!    failed is tried once on each other fitting worker, not again and again on the same one.
//! 3. A version never has more staying assignments than replicas: extras are deleted, those
//!    not READY first (a scale-down keeps the replicas that serve), then the most loaded worker
//!    first (ties: highest worker id), so the spread stays even.
//! 4. Missing replicas go to distinct fitting workers that do not already host the version:
//!    fewest assignments first, then workers that already hold a replica record of the version
//!    (a copy still loaded), then lowest id, so plans are deterministic.
//! 5. Nothing else moves: a stable cluster yields an empty plan (memory is checked only when
//!    placing; a replica whose reported size grew is not evicted).
//!
//! What cannot be done (a version that is not registered, more replicas than fitting workers) is
//! reported in [`Plan::issues`] for the caller to log, and the rest is still placed.
//! [`retirements`] is the second pure step, over the state and the plan: which retiring
//! versions may leave a deployment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_proto::kiln::v1::{
    AssignmentRecord, DeploymentRecord, DeploymentVersion, ModelVersionRecord, ReplicaRecord,
    ReplicaState, WorkerRecord,
};

/// One replica placement: `/kiln/v1/assignments/{worker_id}/{model}/{version}`.
pub type Assignment = AssignmentRecord;

/// Everything the planner looks at, as read from the store at the start of a pass.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Live workers (their keys exist); `draining` already includes cordons.
    pub workers: Vec<WorkerRecord>,
    /// Deployments.
    pub deployments: Vec<DeploymentRecord>,
    /// Registered model versions.
    pub models: Vec<ModelVersionRecord>,
    /// Current assignments.
    pub assignments: Vec<Assignment>,
    /// Replica states reported by the workers.
    pub replicas: Vec<ReplicaRecord>,
}

/// What the reconciler must write to reach the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Assignments to create.
    pub create: Vec<Assignment>,
    /// Assignments to delete.
    pub delete: Vec<Assignment>,
    /// Desired state that could not be (fully) realised, for the log.
    pub issues: Vec<PlanIssue>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// Something the planner could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanIssue {
    /// A deployed version has no `ModelVersionRecord`; it gets no replicas.
    Unregistered {
        /// Model name.
        model: String,
        /// Version.
        version: String,
    },
    /// Fewer fitting workers than replicas: only `placed` of `wanted` replicas are assigned.
    Unplaced {
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// Replicas the deployment asks for.
        wanted: u32,
        /// Replicas assigned after this plan.
        placed: u32,
    },
}

impl std::fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanIssue::Unregistered { model, version } => {
                write!(
                    f,
                    "{model}/{version} is deployed but not registered; not placing it"
                )
            }
            PlanIssue::Unplaced {
                model,
                version,
                wanted,
                placed,
            } => write!(
                f,
                "{model}/{version} wants {wanted} replicas but only {placed} fitting workers are available \
                 (live, not draining, matching backend and selector, with memory to spare)"
            ),
        }
    }
}

type VersionKey = (String, String);

fn key_of(a: &Assignment) -> VersionKey {
    (a.model.clone(), a.version.clone())
}

/// An assignment of `model/version` to `worker_id` (no batching overrides).
pub fn assignment(worker_id: &str, model: &str, version: &str) -> Assignment {
    Assignment {
        worker_id: worker_id.to_string(),
        model: model.to_string(),
        version: version.to_string(),
        ..Default::default()
    }
}

/// Whether `w` satisfies a version's backend and selector (memory aside).
fn matches(w: &WorkerRecord, d: &DeploymentVersion) -> bool {
    (d.backend.is_empty() || d.backend == w.backend)
        && d.selector
            .iter()
            .all(|(k, v)| w.labels.get(k).is_some_and(|have| have == v))
}

/// The memory one replica of each version needs (see the module docs).
pub fn version_sizes(state: &ClusterState) -> HashMap<VersionKey, u64> {
    let mut size: HashMap<VersionKey, u64> = state
        .models
        .iter()
        .map(|m| ((m.model.clone(), m.version.clone()), m.size_bytes))
        .collect();
    let mut reported: HashMap<VersionKey, u64> = HashMap::new();
    for r in &state.replicas {
        if r.memory_bytes > 0 {
            let e = reported
                .entry((r.model.clone(), r.version.clone()))
                .or_default();
            *e = (*e).max(r.memory_bytes);
        }
    }
    size.extend(reported);
    size
}

/// Computes the changes that turn the current assignments into the placement the deployments
/// ask for. Inputs may come in any order; outputs are sorted deterministically (by model,
/// version, then worker id).
pub fn plan(state: &ClusterState) -> Plan {
    let live: HashMap<&str, &WorkerRecord> =
        state.workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let registered: BTreeSet<VersionKey> = state
        .models
        .iter()
        .map(|m| (m.model.clone(), m.version.clone()))
        .collect();
    let sizes = version_sizes(state);
    let size_of = |k: &VersionKey| sizes.get(k).copied().unwrap_or(0);
    let ready: BTreeSet<(&str, &str, &str)> = state
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Ready as i32)
        .map(|r| (r.model.as_str(), r.version.as_str(), r.worker_id.as_str()))
        .collect();
    let failed: BTreeSet<(&str, &str, &str)> = state
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Failed as i32)
        .map(|r| (r.model.as_str(), r.version.as_str(), r.worker_id.as_str()))
        .collect();
    let holders: BTreeSet<(&str, &str, &str)> = state
        .replicas
        .iter()
        .map(|r| (r.model.as_str(), r.version.as_str(), r.worker_id.as_str()))
        .collect();

    let mut out = Plan::default();

    // Desired versions, registered and with replicas.
    let mut desired: BTreeMap<VersionKey, &DeploymentVersion> = BTreeMap::new();
    for d in &state.deployments {
        for v in &d.versions {
            if v.replicas == 0 {
                continue;
            }
            let key = (d.model.clone(), v.version.clone());
            if registered.contains(&key) {
                desired.insert(key, v);
            } else {
                out.issues.push(PlanIssue::Unregistered {
                    model: key.0,
                    version: key.1,
                });
            }
        }
    }

    // Rule 1: keep only assignments on live workers of wanted versions.
    let mut kept: BTreeMap<VersionKey, Vec<Assignment>> = BTreeMap::new();
    for a in &state.assignments {
        if live.contains_key(a.worker_id.as_str()) && desired.contains_key(&key_of(a)) {
            kept.entry(key_of(a)).or_default().push(a.clone());
        } else {
            out.delete.push(a.clone());
        }
    }

    // Load (assignment count) and memory per worker, updated as the plan creates and deletes.
    let mut load: HashMap<String, usize> =
        state.workers.iter().map(|w| (w.id.clone(), 0)).collect();
    let mut used: HashMap<String, u64> = state.workers.iter().map(|w| (w.id.clone(), 0)).collect();
    for a in kept.values().flatten() {
        *load.entry(a.worker_id.clone()).or_default() += 1;
        *used.entry(a.worker_id.clone()).or_default() += size_of(&key_of(a));
    }
    let stays = |key: &VersionKey, id: &str, v: &DeploymentVersion| {
        live.get(id).is_some_and(|w| !w.draining && matches(w, v))
            && !failed.contains(&(key.0.as_str(), key.1.as_str(), id))
    };

    let mut sorted_workers: Vec<&WorkerRecord> = state.workers.iter().collect();
    sorted_workers.sort_by(|a, b| a.id.cmp(&b.id));
    for (key, dv) in &desired {
        let wanted = dv.replicas as usize;
        let size = size_of(key);
        let list = kept.remove(key).unwrap_or_default();
        let (mut staying, leaving): (Vec<Assignment>, Vec<Assignment>) =
            list.into_iter().partition(|a| stays(key, &a.worker_id, dv));

        // Rule 3: trim extras among the staying: those not READY first (a scale-down must not
        // remove a serving replica and keep one still loading), then the most loaded (ties:
        // highest id).
        let is_ready = |a: &Assignment| {
            ready.contains(&(key.0.as_str(), key.1.as_str(), a.worker_id.as_str()))
        };
        if staying.len() > wanted {
            staying.sort_by(|a, b| {
                is_ready(a)
                    .cmp(&is_ready(b))
                    .then_with(|| load[&b.worker_id].cmp(&load[&a.worker_id]))
                    .then_with(|| b.worker_id.cmp(&a.worker_id))
            });
            for extra in staying.drain(..staying.len() - wanted) {
                *load.get_mut(&extra.worker_id).expect("live worker") -= 1;
                *used.get_mut(&extra.worker_id).expect("live worker") -= size;
                out.delete.push(extra);
            }
        }

        // Rule 2: leaving replicas go once the staying ones are all READY.
        let ready_staying = staying.iter().filter(|a| is_ready(a)).count();
        if ready_staying >= wanted {
            out.delete.extend(leaving.iter().cloned());
        }

        // Rule 4: place what is missing.
        let hosted: BTreeSet<&str> = staying
            .iter()
            .chain(&leaving)
            .map(|a| a.worker_id.as_str())
            .collect();
        let mut candidates: Vec<&WorkerRecord> = sorted_workers
            .iter()
            .copied()
            .filter(|w| !w.draining && matches(w, dv) && !hosted.contains(w.id.as_str()))
            .collect();
        let holds =
            |w: &WorkerRecord| holders.contains(&(key.0.as_str(), key.1.as_str(), w.id.as_str()));
        let mut placed = staying.len();
        while placed < wanted {
            // Least loaded, then holders of a copy, then lowest id (candidates are id-sorted
            // and the sort is stable).
            candidates.sort_by_key(|w| (load[&w.id], !holds(w)));
            let fits = |w: &&WorkerRecord| {
                w.capacity_bytes == 0 || used[&w.id].saturating_add(size) <= w.capacity_bytes
            };
            let Some(i) = candidates.iter().position(fits) else {
                break;
            };
            let w = candidates.remove(i);
            *load.get_mut(&w.id).expect("live worker") += 1;
            *used.get_mut(&w.id).expect("live worker") += size;
            let mut a = assignment(&w.id, &key.0, &key.1);
            a.batching = dv.batching.clone();
            out.create.push(a);
            placed += 1;
        }
        if placed < wanted {
            out.issues.push(PlanIssue::Unplaced {
                model: key.0.clone(),
                version: key.1.clone(),
                wanted: dv.replicas,
                placed: placed as u32,
            });
        }
    }

    let order = |a: &Assignment, b: &Assignment| {
        (&a.model, &a.version, &a.worker_id).cmp(&(&b.model, &b.version, &b.worker_id))
    };
    out.create.sort_by(order);
    out.delete.sort_by(order);
    out
}

/// Deployments whose retiring versions may go: every version that takes traffic (weight > 0,
/// not retiring) is *settled*: it has all its replicas READY, or it has at least one READY,
/// nothing of it is still loading or about to be, and `plan` could not place the rest (no
/// fitting worker, or not enough memory while the retiring versions hold theirs). Without that
/// second way out, a promote whose new version cannot get every replica while the old one
/// still holds its workers would wait forever, with the old version's replicas idle. Returns
/// each changed record without its retiring versions.
pub fn retirements(state: &ClusterState, plan: &Plan) -> Vec<DeploymentRecord> {
    let mut ready: HashMap<(&str, &str), usize> = HashMap::new();
    let mut settled_replicas: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    for r in &state.replicas {
        if r.state == ReplicaState::Ready as i32 {
            *ready
                .entry((r.model.as_str(), r.version.as_str()))
                .or_default() += 1;
        }
        if r.state == ReplicaState::Ready as i32 || r.state == ReplicaState::Failed as i32 {
            settled_replicas.insert((r.model.as_str(), r.version.as_str(), r.worker_id.as_str()));
        }
    }
    // Assignments whose load has not ended (no record, or LOADING), and those this plan makes.
    let mut pending: HashMap<(&str, &str), usize> = HashMap::new();
    for a in &state.assignments {
        let key = (a.model.as_str(), a.version.as_str(), a.worker_id.as_str());
        if !settled_replicas.contains(&key) {
            *pending.entry((key.0, key.1)).or_default() += 1;
        }
    }
    for a in &plan.create {
        *pending
            .entry((a.model.as_str(), a.version.as_str()))
            .or_default() += 1;
    }
    let unplaced: BTreeSet<(&str, &str)> = plan
        .issues
        .iter()
        .filter_map(|i| match i {
            PlanIssue::Unplaced { model, version, .. } => Some((model.as_str(), version.as_str())),
            PlanIssue::Unregistered { .. } => None,
        })
        .collect();
    let settled = |model: &str, v: &DeploymentVersion| {
        let key = (model, v.version.as_str());
        let ready = ready.get(&key).copied().unwrap_or(0);
        ready >= v.replicas as usize
            || (ready > 0 && unplaced.contains(&key) && !pending.contains_key(&key))
    };
    let mut out = Vec::new();
    for d in &state.deployments {
        if !d.versions.iter().any(|v| v.retiring) {
            continue;
        }
        let serving: Vec<&DeploymentVersion> = d
            .versions
            .iter()
            .filter(|v| !v.retiring && v.traffic_weight > 0)
            .collect();
        if !serving.is_empty() && serving.iter().all(|v| settled(&d.model, v)) {
            let mut next = d.clone();
            next.versions.retain(|v| !v.retiring);
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_constraint_tests.rs"]
mod constraint_tests;
