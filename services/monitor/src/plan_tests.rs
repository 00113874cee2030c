//! Unit tests of [`plan`]: one per placement rule, plus convergence properties.

use std::collections::{BTreeSet, HashMap};

use kiln_proto::kiln::v1::DeploymentVersion;

use super::*;

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        address: format!("{id}:9001"),
        ..Default::default()
    }
}

fn draining(id: &str) -> WorkerRecord {
    WorkerRecord {
        draining: true,
        ..worker(id)
    }
}

fn workers(ids: &[&str]) -> Vec<WorkerRecord> {
    ids.iter().map(|id| worker(id)).collect()
}

fn model(m: &str, v: &str) -> ModelVersionRecord {
    ModelVersionRecord {
        model: m.into(),
        version: v.into(),
        ..Default::default()
    }
}

fn deployment(m: &str, versions: &[(&str, u32)]) -> DeploymentRecord {
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
fn plan_of(
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

fn replica(w: &str, m: &str, v: &str, state: ReplicaState, memory_bytes: u64) -> ReplicaRecord {
    ReplicaRecord {
        model: m.into(),
        version: v.into(),
        worker_id: w.into(),
        state: state as i32,
        memory_bytes,
        ..Default::default()
    }
}

fn a(w: &str, m: &str, v: &str) -> Assignment {
    assignment(w, m, v)
}

/// Applies a plan to an assignment set, as the reconciler would.
fn apply(current: &[Assignment], p: &Plan) -> Vec<Assignment> {
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

fn workers_of(set: &[Assignment], m: &str, v: &str) -> Vec<String> {
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
fn replicas_move_off_draining_workers_make_before_break() {
    let ws = vec![draining("w1"), worker("w2"), worker("w3")];
    let existing = [a("w1", "m", "1"), a("w2", "m", "1")];
    let mut state = ClusterState {
        workers: ws,
        deployments: vec![deployment("m", &[("1", 2)])],
        models: vec![model("m", "1")],
        assignments: existing.to_vec(),
        replicas: vec![
            replica("w1", "m", "1", ReplicaState::Ready, 0),
            replica("w2", "m", "1", ReplicaState::Ready, 0),
        ],
    };
    // The replacement is placed first; the draining replica keeps serving meanwhile.
    let p = plan(&state);
    assert_eq!(p.create, vec![a("w3", "m", "1")]);
    assert!(p.delete.is_empty(), "{p:?}");
    // Still loading: nothing changes.
    state.assignments = apply(&existing, &p);
    state
        .replicas
        .push(replica("w3", "m", "1", ReplicaState::Loading, 0));
    assert!(plan(&state).is_empty());
    // Ready: now the draining one goes.
    state.replicas[2].state = ReplicaState::Ready as i32;
    let p = plan(&state);
    assert_eq!(p.delete, vec![a("w1", "m", "1")]);
    assert!(p.create.is_empty());

    // Nowhere to go: the draining replica stays.
    let ws = vec![draining("w1"), worker("w2")];
    let p = plan_of(
        &ws,
        &[deployment("m", &[("1", 2)])],
        &[model("m", "1")],
        &existing,
    );
    assert!(p.is_empty(), "{p:?}");
    // Scaling down while w2 is ready drops the draining replica.
    let state = ClusterState {
        workers: vec![draining("w1"), worker("w2"), worker("w3")],
        deployments: vec![deployment("m", &[("1", 1)])],
        models: vec![model("m", "1")],
        assignments: existing.to_vec(),
        replicas: vec![replica("w2", "m", "1", ReplicaState::Ready, 0)],
    };
    let p = plan(&state);
    assert_eq!(p.delete, vec![a("w1", "m", "1")]);
    assert!(p.create.is_empty());
}

#[test]
fn a_failed_load_is_tried_once_on_each_other_worker() {
    let mut state = ClusterState {
        workers: workers(&["w1", "w2", "w3"]),
        deployments: vec![deployment("m", &[("1", 1)])],
        models: vec![model("m", "1")],
        assignments: vec![a("w1", "m", "1")],
        replicas: vec![replica("w1", "m", "1", ReplicaState::Failed, 0)],
    };
    // The failed replica stays (it may be the only copy) and a second try goes elsewhere.
    let p = plan(&state);
    assert_eq!(p.create, vec![a("w2", "m", "1")]);
    assert!(p.delete.is_empty());
    // That one fails too: the last worker gets a try.
    state.assignments.push(a("w2", "m", "1"));
    state
        .replicas
        .push(replica("w2", "m", "1", ReplicaState::Failed, 0));
    assert_eq!(plan(&state).create, vec![a("w3", "m", "1")]);
    // Every worker failed it: nothing more to try, and nothing churns.
    state.assignments.push(a("w3", "m", "1"));
    state
        .replicas
        .push(replica("w3", "m", "1", ReplicaState::Failed, 0));
    let p = plan(&state);
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(p.issues.len(), 1);
    // One succeeds: the failed ones go.
    state.replicas[2].state = ReplicaState::Ready as i32;
    let p = plan(&state);
    assert_eq!(p.delete, vec![a("w1", "m", "1"), a("w2", "m", "1")]);
}

#[test]
fn respects_backend_and_selector_and_moves_off_a_mismatch() {
    let mut gpu = worker("g1");
    gpu.backend = "wgpu".into();
    gpu.labels.insert("zone".into(), "a".into());
    let mut cpu = worker("c1");
    cpu.backend = "flex".into();
    cpu.labels.insert("zone".into(), "a".into());
    let mut cpu_b = worker("c2");
    cpu_b.backend = "flex".into();
    cpu_b.labels.insert("zone".into(), "b".into());
    let mut dep = deployment("m", &[("1", 2)]);
    dep.versions[0].backend = "flex".into();
    dep.versions[0].selector.insert("zone".into(), "a".into());
    let ws = vec![gpu, cpu, cpu_b];
    let p = plan_of(&ws, &[dep.clone()], &[model("m", "1")], &[]);
    assert_eq!(p.create, vec![a("c1", "m", "1")]);
    assert_eq!(p.issues.len(), 1, "only one worker fits");
    // An existing replica on a worker that no longer matches moves, make before break.
    dep.versions[0].replicas = 1;
    let state = ClusterState {
        workers: ws,
        deployments: vec![dep],
        models: vec![model("m", "1")],
        assignments: vec![a("g1", "m", "1")],
        replicas: vec![replica("g1", "m", "1", ReplicaState::Ready, 0)],
    };
    let p = plan(&state);
    assert_eq!(p.create, vec![a("c1", "m", "1")]);
    assert!(p.delete.is_empty());
}

#[test]
fn memory_capacity_is_respected() {
    let cap = |id: &str, bytes: u64| WorkerRecord {
        capacity_bytes: bytes,
        ..worker(id)
    };
    let sized = |m: &str, bytes: u64| ModelVersionRecord {
        size_bytes: bytes,
        ..model(m, "1")
    };
    // w1 holds 100 bytes, w2 1000, w3 unlimited.
    let ws = vec![cap("w1", 100), cap("w2", 1000), cap("w3", 0)];
    let models = [sized("small", 60), sized("big", 500)];
    let deps = [
        deployment("small", &[("1", 3)]),
        deployment("big", &[("1", 3)]),
    ];
    let p = plan_of(&ws, &deps, &models, &[]);
    let after = apply(&[], &p);
    assert_eq!(workers_of(&after, "big", "1"), ["w2", "w3"]);
    assert_eq!(workers_of(&after, "small", "1"), ["w1", "w2", "w3"]);
    assert_eq!(p.issues.len(), 1, "big has no third home: {:?}", p.issues);
    // A size reported after load replaces the package estimate.
    let state = ClusterState {
        workers: vec![cap("w1", 100), cap("w2", 100)],
        deployments: vec![deployment("small", &[("1", 2)])],
        models: vec![sized("small", 60)],
        assignments: vec![a("w1", "small", "1")],
        replicas: vec![replica("w1", "small", "1", ReplicaState::Ready, 150)],
    };
    let p = plan(&state);
    assert!(p.create.is_empty(), "150 bytes fit nowhere: {p:?}");
    assert!(
        p.delete.is_empty(),
        "an existing replica is never evicted for size"
    );
}

#[test]
fn prefers_a_worker_that_still_holds_a_copy_and_copies_batching_overrides() {
    let ws = workers(&["w1", "w2", "w3"]);
    let mut dep = deployment("m", &[("1", 1)]);
    dep.versions[0].batching = Some(kiln_proto::kiln::v1::BatchingOverrides {
        max_batch_size: 8,
        ..Default::default()
    });
    let state = ClusterState {
        workers: ws,
        deployments: vec![dep],
        models: vec![model("m", "1")],
        assignments: vec![],
        replicas: vec![replica("w2", "m", "1", ReplicaState::Ready, 0)],
    };
    let p = plan(&state);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].worker_id, "w2");
    assert_eq!(p.create[0].batching.as_ref().unwrap().max_batch_size, 8);
}

#[test]
fn retiring_versions_leave_once_the_serving_ones_are_ready() {
    let mut dep = deployment("m", &[("1", 2), ("2", 2)]);
    dep.versions[0].retiring = true;
    dep.versions[0].traffic_weight = 0;
    let mut state = ClusterState {
        workers: workers(&["w1", "w2"]),
        deployments: vec![dep],
        models: vec![model("m", "1"), model("m", "2")],
        assignments: vec![],
        replicas: vec![replica("w1", "m", "2", ReplicaState::Ready, 0)],
    };
    assert!(retirements(&state).is_empty(), "v2 has 1 of 2 ready");
    state
        .replicas
        .push(replica("w2", "m", "2", ReplicaState::Ready, 0));
    let next = retirements(&state);
    assert_eq!(next.len(), 1);
    let versions: Vec<&str> = next[0]
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(versions, ["2"]);
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
