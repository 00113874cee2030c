//! Unit tests of [`plan`]: one per placement rule, plus convergence properties; the rules that
//! read replica states and worker constraints are in `plan_constraint_tests.rs`.

use std::collections::{BTreeSet, HashMap};

use kiln_proto::kiln::v1::DeploymentVersion;

use super::*;

pub(super) fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        address: format!("{id}:9001"),
        ..Default::default()
    }
}

pub(super) fn draining(id: &str) -> WorkerRecord {
    WorkerRecord {
        draining: true,
        ..worker(id)
    }
}

pub(super) fn workers(ids: &[&str]) -> Vec<WorkerRecord> {
    ids.iter().map(|id| worker(id)).collect()
}

pub(super) fn model(m: &str, v: &str) -> ModelVersionRecord {
    ModelVersionRecord {
        model: m.into(),
        version: v.into(),
        ..Default::default()
    }
}

pub(super) fn deployment(m: &str, versions: &[(&str, u32)]) -> DeploymentRecord {
    DeploymentRecord {
        model: m.into(),
        versions: versions
            .iter()
            .map(|(v, r)| DeploymentVersion {
                version: (*v).into(),
                replicas: *r,
                traffic_weight: 100,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The planner over these inputs, with no replica reported yet.
pub(super) fn plan_of(
    workers: &[WorkerRecord],
    deployments: &[DeploymentRecord],
    models: &[ModelVersionRecord],
    assignments: &[Assignment],
) -> Plan {
    plan(&ClusterState {
        workers: workers.to_vec(),
        deployments: deployments.to_vec(),
        models: models.to_vec(),
        assignments: assignments.to_vec(),
        replicas: Vec::new(),
    })
}

pub(super) fn replica(
    w: &str,
    m: &str,
    v: &str,
    state: ReplicaState,
    memory_bytes: u64,
) -> ReplicaRecord {
    ReplicaRecord {
        model: m.into(),
        version: v.into(),
        worker_id: w.into(),
        state: state as i32,
        memory_bytes,
        ..Default::default()
    }
}

pub(super) fn a(w: &str, m: &str, v: &str) -> Assignment {
    assignment(w, m, v)
}

/// Applies a plan to an assignment set, as the reconciler would.
pub(super) fn apply(current: &[Assignment], p: &Plan) -> Vec<Assignment> {
    let mut set: Vec<Assignment> = current
        .iter()
        .filter(|x| !p.delete.contains(x))
        .cloned()
        .collect();
    set.extend(p.create.iter().cloned());
    set.sort_by(|x, y| {
        (&x.model, &x.version, &x.worker_id).cmp(&(&y.model, &y.version, &y.worker_id))
    });
    set
}

pub(super) fn workers_of(set: &[Assignment], m: &str, v: &str) -> Vec<String> {
    set.iter()
        .filter(|x| x.model == m && x.version == v)
        .map(|x| x.worker_id.clone())
        .collect()
}

#[test]
fn spreads_replicas_over_distinct_workers() {
    let ws = workers(&["w1", "w2", "w3"]);
    let p = plan_of(
        &ws,
        &[deployment("digits", &[("1", 2)])],
        &[model("digits", "1")],
        &[],
    );
    assert_eq!(
        p.create,
        vec![a("w1", "digits", "1"), a("w2", "digits", "1")]
    );
    assert!(p.delete.is_empty());
    assert!(p.issues.is_empty());
}

#[test]
fn prefers_the_least_loaded_workers() {
    let ws = workers(&["w1", "w2", "w3"]);
    let deps = [deployment("a", &[("1", 2)]), deployment("b", &[("1", 2)])];
    let models = [model("a", "1"), model("b", "1")];
    let p = plan_of(&ws, &deps, &models, &[]);
    // a/1 takes w1, w2; b/1 then takes w3 (empty) and w1 (lowest id among the loaded).
    assert_eq!(
        p.create,
        vec![
            a("w1", "a", "1"),
            a("w2", "a", "1"),
            a("w1", "b", "1"),
            a("w3", "b", "1")
        ]
    );
    // Existing load counts too: w1 already hosts something else.
    let existing = [a("w1", "b", "1")];
    let p = plan_of(
        &ws,
        &[deployment("a", &[("1", 2)]), deployment("b", &[("1", 1)])],
        &models,
        &existing,
    );
    assert_eq!(p.create, vec![a("w2", "a", "1"), a("w3", "a", "1")]);
}

#[test]
fn never_places_two_replicas_of_a_version_on_one_worker() {
    let ws = workers(&["w1", "w2"]);
    let existing = [a("w1", "m", "1")];
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 2)])],
        &[model("m", "1")],
        &existing,
    );
    assert_eq!(p.create, vec![a("w2", "m", "1")]);
    // Two versions of one model may share a worker.
    let p = plan_of(
        &workers(&["w1"]),
        &[deployment("m", &[("1", 1), ("2", 1)])],
        &[model("m", "1"), model("m", "2")],
        &[],
    );
    assert_eq!(p.create, vec![a("w1", "m", "1"), a("w1", "m", "2")]);
}

#[test]
fn nothing_moves_when_stable() {
    let ws = workers(&["w1", "w2", "w3"]);
    // A placement the planner would not have chosen itself is still left alone.
    let existing = [a("w2", "m", "1"), a("w3", "m", "1")];
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 2)])],
        &[model("m", "1")],
        &existing,
    );
    assert_eq!(p, Plan::default());
    assert!(p.is_empty());
}

#[test]
fn replaces_assignments_of_dead_workers() {
    // w2 died: its key is gone, so it is not in `workers`.
    let ws = workers(&["w1", "w3"]);
    let existing = [a("w1", "m", "1"), a("w2", "m", "1")];
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 2)])],
        &[model("m", "1")],
        &existing,
    );
    assert_eq!(p.delete, vec![a("w2", "m", "1")]);
    assert_eq!(p.create, vec![a("w3", "m", "1")]);
}

#[test]
fn scales_down_from_the_most_loaded() {
    let ws = workers(&["w1", "w2", "w3"]);
    let existing = [
        a("w1", "m", "1"),
        a("w2", "m", "1"),
        a("w3", "m", "1"),
        a("w2", "other", "1"),
    ];
    let deps = [
        deployment("m", &[("1", 2)]),
        deployment("other", &[("1", 1)]),
    ];
    let models = [model("m", "1"), model("other", "1")];
    let p = plan_of(&ws, &deps, &models, &existing);
    assert_eq!(p.delete, vec![a("w2", "m", "1")]);
    assert!(p.create.is_empty());
    // Equal load: the highest worker id goes.
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 1)])],
        &[model("m", "1")],
        &existing[..3],
    );
    assert_eq!(p.delete, vec![a("w2", "m", "1"), a("w3", "m", "1")]);
}

#[test]
fn undeploy_removes_every_assignment_of_the_version() {
    let ws = workers(&["w1", "w2"]);
    let existing = [a("w1", "m", "1"), a("w2", "m", "1"), a("w1", "m", "2")];
    let models = [model("m", "1"), model("m", "2")];
    // Version 1 removed from the deployment.
    let p = plan_of(&ws, &[deployment("m", &[("2", 1)])], &models, &existing);
    assert_eq!(p.delete, vec![a("w1", "m", "1"), a("w2", "m", "1")]);
    assert!(p.create.is_empty());
    // The whole deployment removed.
    let p = plan_of(&ws, &[], &models, &existing);
    assert_eq!(p.delete.len(), 3);
    // Zero replicas behaves like undeploy.
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 0), ("2", 1)])],
        &models,
        &existing,
    );
    assert_eq!(p.delete, vec![a("w1", "m", "1"), a("w2", "m", "1")]);
}

#[test]
fn draining_workers_get_nothing_new() {
    let ws = vec![draining("w1"), worker("w2"), worker("w3")];
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 2)])],
        &[model("m", "1")],
        &[],
    );
    assert_eq!(p.create, vec![a("w2", "m", "1"), a("w3", "m", "1")]);
}

#[test]
fn more_replicas_than_workers_places_what_it_can() {
    let ws = workers(&["w1", "w2"]);
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 3)])],
        &[model("m", "1")],
        &[],
    );
    assert_eq!(p.create, vec![a("w1", "m", "1"), a("w2", "m", "1")]);
    assert_eq!(
        p.issues,
        vec![PlanIssue::Unplaced {
            model: "m".into(),
            version: "1".into(),
            wanted: 3,
            placed: 2
        }]
    );
    assert!(p.issues[0].to_string().contains("wants 3 replicas"));
    // No workers at all.
    let p = plan_of(
        &[],
        &[deployment("m", &[("1", 1)])],
        &[model("m", "1")],
        &[],
    );
    assert!(p.create.is_empty());
    assert_eq!(p.issues.len(), 1);
}

#[test]
fn unregistered_versions_are_never_assigned() {
    let ws = workers(&["w1"]);
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 1), ("2", 1)])],
        &[model("m", "1")],
        &[],
    );
    assert_eq!(p.create, vec![a("w1", "m", "1")]);
    assert_eq!(
        p.issues,
        vec![PlanIssue::Unregistered {
            model: "m".into(),
            version: "2".into()
        }]
    );
    // An existing assignment of a version whose record vanished is removed.
    let p = plan_of(
        &ws,
        &[deployment("m", &[("2", 1)])],
        &[model("m", "1")],
        &[a("w1", "m", "2")],
    );
    assert_eq!(p.delete, vec![a("w1", "m", "2")]);
}

/// A tiny deterministic generator, so the property test needs no extra crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn converges_in_one_plan_and_then_stays_put() {
    let mut rng = Lcg(7);
    for _ in 0..300 {
        let ids: Vec<String> = (0..rng.next(6)).map(|i| format!("w{i}")).collect();
        let ws: Vec<WorkerRecord> = ids
            .iter()
            .map(|id| WorkerRecord {
                draining: rng.next(5) == 0,
                ..worker(id)
            })
            .collect();
        let models = [model("a", "1"), model("a", "2"), model("b", "1")];
        let deps = [
            deployment("a", &[("1", rng.next(4) as u32), ("2", rng.next(3) as u32)]),
            deployment("b", &[("1", rng.next(5) as u32)]),
        ];
        // Random existing assignments, including ones on dead workers (w7) and stale versions.
        let mut existing = BTreeSet::new();
        for _ in 0..rng.next(8) {
            let w = format!("w{}", rng.next(8));
            let (m, v) = [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")][rng.next(4) as usize];
            existing.insert((m.to_string(), v.to_string(), w));
        }
        let existing: Vec<Assignment> = existing.iter().map(|(m, v, w)| a(w, m, v)).collect();

        let p = plan_of(&ws, &deps, &models, &existing);
        let after = apply(&existing, &p);
        // Every delete existed, no create existed.
        assert!(p.delete.iter().all(|d| existing.contains(d)));
        assert!(p.create.iter().all(|c| !existing.contains(c)));
        let live: HashMap<&str, bool> = ws.iter().map(|w| (w.id.as_str(), w.draining)).collect();
        let eligible = ws.iter().filter(|w| !w.draining).count();
        for d in &deps {
            for v in &d.versions {
                let on = workers_of(&after, &d.model, &v.version);
                let staying: Vec<&String> = on
                    .iter()
                    .filter(|w| live.get(w.as_str()) == Some(&false))
                    .collect();
                let distinct: BTreeSet<_> = on.iter().collect();
                assert_eq!(distinct.len(), on.len(), "distinct workers");
                assert!(
                    on.iter().all(|w| live.contains_key(w.as_str())),
                    "live workers"
                );
                assert!(
                    staying.len() <= v.replicas as usize,
                    "not over the replica count"
                );
                assert!(
                    staying.len() >= (v.replicas as usize).min(eligible),
                    "as many as possible"
                );
                for c in p
                    .create
                    .iter()
                    .filter(|c| c.model == d.model && c.version == v.version)
                {
                    assert!(!live[c.worker_id.as_str()], "created on a draining worker");
                }
            }
        }
        assert!(
            workers_of(&after, "c", "1").is_empty(),
            "undeployed model removed"
        );
        // Fixed point: planning again changes nothing.
        let again = plan_of(&ws, &deps, &models, &after);
        assert!(again.is_empty(), "not stable: {again:?}");
    }
}
