//! Unit tests of the placement rules that read replica states and worker constraints: make
//! before break, failed loads, backend and selector, memory capacity, holders, retirements.

use kiln_proto::kiln::v1::{BatchingOverrides, ReplicaState};

use super::tests::{
    a, apply, deployment, draining, model, plan_of, replica, worker, workers, workers_of,
};
use super::*;

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
    dep.versions[0].batching = Some(BatchingOverrides {
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
    assert!(
        retirements(&state, &plan(&state)).is_empty(),
        "v2 has 1 of 2 ready"
    );
    state
        .replicas
        .push(replica("w2", "m", "2", ReplicaState::Ready, 0));
    let next = retirements(&state, &plan(&state));
    assert_eq!(next.len(), 1);
    let versions: Vec<&str> = next[0]
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(versions, ["2"]);
}

#[test]
fn a_promote_the_old_version_blocks_retires_it_once_the_new_one_is_as_ready_as_it_can_be() {
    // Three workers; v1 (retiring, no traffic) holds all three, v2 wants three. v2's load on w3
    // failed (w3 had no room beside v1): v2 cannot be placed anywhere else, so waiting for its
    // third replica would keep v1 forever; v1 goes once nothing of v2 is still loading.
    let mut dep = deployment("m", &[("1", 3), ("2", 3)]);
    dep.versions[0].retiring = true;
    dep.versions[0].traffic_weight = 0;
    let mut assignments = Vec::new();
    for w in ["w1", "w2", "w3"] {
        assignments.push(a(w, "m", "1"));
        assignments.push(a(w, "m", "2"));
    }
    let mut state = ClusterState {
        workers: workers(&["w1", "w2", "w3"]),
        deployments: vec![dep],
        models: vec![model("m", "1"), model("m", "2")],
        assignments,
        replicas: vec![
            replica("w1", "m", "2", ReplicaState::Ready, 0),
            replica("w2", "m", "2", ReplicaState::Loading, 0),
            replica("w3", "m", "2", ReplicaState::Failed, 0),
        ],
    };
    assert!(
        retirements(&state, &plan(&state)).is_empty(),
        "v2 is still loading on w2"
    );
    state.replicas[1].state = ReplicaState::Ready as i32;
    let p = plan(&state);
    assert!(
        p.issues
            .iter()
            .any(|i| matches!(i, PlanIssue::Unplaced { placed: 2, .. })),
        "{:?}",
        p.issues
    );
    let next = retirements(&state, &p);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].versions.len(), 1);
    assert_eq!(next[0].versions[0].version, "2");

    // With a fourth worker to place it on, v2 gets its third replica first.
    state.workers = workers(&["w1", "w2", "w3", "w4"]);
    let p = plan(&state);
    assert_eq!(p.create, vec![a("w4", "m", "2")]);
    assert!(retirements(&state, &p).is_empty());
}

#[test]
fn a_scale_down_keeps_the_ready_replica_and_drops_the_loading_one() {
    // w1 serves m/1 and is the more loaded; w2's copy is still loading. Scaling to one replica
    // must not leave the version with none serving.
    let state = ClusterState {
        workers: workers(&["w1", "w2"]),
        deployments: vec![deployment("m", &[("1", 1)]), deployment("o", &[("1", 1)])],
        models: vec![model("m", "1"), model("o", "1")],
        assignments: vec![a("w1", "m", "1"), a("w2", "m", "1"), a("w1", "o", "1")],
        replicas: vec![
            replica("w1", "m", "1", ReplicaState::Ready, 0),
            replica("w2", "m", "1", ReplicaState::Loading, 0),
            replica("w1", "o", "1", ReplicaState::Ready, 0),
        ],
    };
    let p = plan(&state);
    assert_eq!(p.delete, vec![a("w2", "m", "1")]);
    assert!(p.create.is_empty());
}
