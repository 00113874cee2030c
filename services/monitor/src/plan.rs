//! Placement: the pure heart of the controller.
//!
//! [`plan`] compares the desired state (deployments) with the actual one (assignments) over the
//! live workers and returns the assignments to create and to delete. It does no I/O and reads no
//! clock, so every placement rule is unit-tested here and the reconciler only applies the result.
//!
//! The rules, in order:
//! 1. An assignment survives only if its worker is live (its key exists), its version is deployed
//!    with at least one replica, and that version is registered. Everything else is deleted.
//! 2. A version never has more assignments than replicas: extras are deleted, draining workers
//!    first, then the most loaded (ties: highest worker id), so the spread stays even.
//! 3. Missing replicas go to distinct, live, non-draining workers that do not already host the
//!    version, fewest assignments first (ties: lowest worker id), so plans are deterministic.
//! 4. A replica on a draining worker moves when a replacement can be placed elsewhere (create the
//!    new one, delete the old one in the same plan); with nowhere to go it stays put, because a
//!    draining replica serves better than none.
//! 5. Nothing else moves: a stable cluster yields an empty plan.
//!
//! What cannot be done (a version that is not registered, more replicas than eligible workers) is
//! reported in [`Plan::issues`] for the caller to log, and the rest is still placed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_proto::kiln::v1::{AssignmentRecord, DeploymentRecord, ModelVersionRecord, WorkerRecord};

/// One replica placement: `/kiln/v1/assignments/{worker_id}/{model}/{version}`.
pub type Assignment = AssignmentRecord;

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
    /// Fewer eligible workers than replicas: only `placed` of `wanted` replicas are assigned.
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
                "{model}/{version} wants {wanted} replicas but only {placed} eligible workers are available"
            ),
        }
    }
}

type VersionKey = (String, String);

fn key_of(a: &Assignment) -> VersionKey {
    (a.model.clone(), a.version.clone())
}

fn assignment(worker_id: &str, model: &str, version: &str) -> Assignment {
    Assignment {
        worker_id: worker_id.to_string(),
        model: model.to_string(),
        version: version.to_string(),
        ..Default::default()
    }
}

/// Computes the changes that turn `assignments` into the placement `deployments` ask for.
///
/// `workers` are the live workers (their keys exist), `models` the registered versions,
/// `assignments` the current assignments. Inputs may come in any order; outputs are sorted
/// deterministically (by model, version, then worker id).
pub fn plan(
    workers: &[WorkerRecord],
    deployments: &[DeploymentRecord],
    models: &[ModelVersionRecord],
    assignments: &[Assignment],
) -> Plan {
    let live: HashMap<&str, &WorkerRecord> = workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let registered: BTreeSet<VersionKey> = models
        .iter()
        .map(|m| (m.model.clone(), m.version.clone()))
        .collect();

    let mut out = Plan::default();

    // Desired replicas per registered, deployed version.
    let mut desired: BTreeMap<VersionKey, u32> = BTreeMap::new();
    for d in deployments {
        for v in &d.versions {
            if v.replicas == 0 {
                continue;
            }
            let key = (d.model.clone(), v.version.clone());
            if registered.contains(&key) {
                desired.insert(key, v.replicas);
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
    for a in assignments {
        if live.contains_key(a.worker_id.as_str()) && desired.contains_key(&key_of(a)) {
            kept.entry(key_of(a)).or_default().push(a.clone());
        } else {
            out.delete.push(a.clone());
        }
    }

    // Load = surviving assignments per worker, updated as the plan creates and deletes.
    let mut load: HashMap<String, usize> = workers.iter().map(|w| (w.id.clone(), 0)).collect();
    for a in kept.values().flatten() {
        *load.entry(a.worker_id.clone()).or_default() += 1;
    }
    let draining = |id: &str| live.get(id).is_some_and(|w| w.draining);

    // Rule 2: trim versions with more assignments than replicas.
    for (key, list) in kept.iter_mut() {
        let wanted = desired[key] as usize;
        if list.len() <= wanted {
            continue;
        }
        // Most removable first: draining, then most loaded, then highest id.
        list.sort_by(|a, b| {
            let rank = |x: &Assignment| (draining(&x.worker_id), load[&x.worker_id]);
            rank(b)
                .cmp(&rank(a))
                .then_with(|| b.worker_id.cmp(&a.worker_id))
        });
        for extra in list.drain(..list.len() - wanted) {
            *load.get_mut(&extra.worker_id).expect("live worker") -= 1;
            out.delete.push(extra);
        }
    }

    // Rules 3 and 4: fill missing replicas, then move replicas off draining workers.
    let mut eligible: Vec<&WorkerRecord> = workers.iter().filter(|w| !w.draining).collect();
    eligible.sort_by(|a, b| a.id.cmp(&b.id));
    for (key, &wanted) in &desired {
        let list = kept.entry(key.clone()).or_default();
        let hosted: BTreeSet<String> = list.iter().map(|a| a.worker_id.clone()).collect();
        let mut candidates: Vec<&WorkerRecord> = eligible
            .iter()
            .copied()
            .filter(|w| !hosted.contains(&w.id))
            .collect();
        let missing = (wanted as usize).saturating_sub(list.len());
        let on_draining: Vec<Assignment> = list
            .iter()
            .filter(|a| draining(&a.worker_id))
            .cloned()
            .collect();
        let mut placed = list.len();
        for step in 0..missing + on_draining.len() {
            // Least loaded first; ties by id (the candidates are sorted by id and the sort is stable).
            candidates.sort_by_key(|w| load[&w.id]);
            if candidates.is_empty() {
                break;
            }
            let w = candidates.remove(0);
            *load.get_mut(&w.id).expect("live worker") += 1;
            out.create.push(assignment(&w.id, &key.0, &key.1));
            if step < missing {
                placed += 1;
            } else {
                let old = &on_draining[step - missing];
                *load.get_mut(&old.worker_id).expect("live worker") -= 1;
                out.delete.push(old.clone());
            }
        }
        if placed < wanted as usize {
            out.issues.push(PlanIssue::Unplaced {
                model: key.0.clone(),
                version: key.1.clone(),
                wanted,
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

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
