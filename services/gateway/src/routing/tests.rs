use kiln_coord::codec::{DeploymentVersion, encode};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn kv(key: String, value: Vec<u8>) -> KeyValue {
    KeyValue {
        key,
        value,
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }
}

fn replica(model: &str, version: &str, worker: &str, state: ReplicaState) -> KeyValue {
    let record = ReplicaRecord {
        model: model.into(),
        version: version.into(),
        worker_id: worker.into(),
        address: format!("{worker}.local:9001"),
        state: state as i32,
        reason: if state == ReplicaState::Failed {
            "boom".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    kv(keys::replica(model, version, worker), encode(&record))
}

fn deployment(model: &str, weights: &[(&str, u32)]) -> KeyValue {
    let record = DeploymentRecord {
        model: model.into(),
        versions: weights
            .iter()
            .map(|(v, w)| DeploymentVersion {
                version: (*v).into(),
                replicas: 1,
                traffic_weight: *w,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    kv(keys::deployment(model), encode(&record))
}

fn put(kv: KeyValue) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        kv,
    }
}

fn delete(key: String) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: kv(key, Vec::new()),
    }
}

fn ready_workers(table: &RoutingTable, model: &str, version: &str) -> Vec<String> {
    table.model(model).unwrap().versions[version]
        .ready
        .iter()
        .map(|r| r.worker_id.clone())
        .collect()
}

#[test]
fn events_add_update_and_remove_replicas() {
    let mut state = RoutingState::default();
    state.apply(&put(replica("m", "1", "w1", ReplicaState::Ready)));
    state.apply(&put(replica("m", "1", "w2", ReplicaState::Loading)));
    let table = state.table();
    assert_eq!(ready_workers(&table, "m", "1"), ["w1"]);
    assert_eq!(table.ready_replicas(), 1);
    let routes = &table.model("m").unwrap().versions["1"];
    assert_eq!(routes.not_ready.len(), 1);
    assert_eq!(routes.addresses, ["w1.local:9001", "w2.local:9001"]);

    state.apply(&put(replica("m", "1", "w2", ReplicaState::Ready)));
    assert_eq!(ready_workers(&state.table(), "m", "1"), ["w1", "w2"]);
    assert_eq!(
        state.table().model("m").unwrap().versions["1"].ready[1].address,
        "w2.local:9001"
    );

    state.apply(&delete(keys::replica("m", "1", "w1")));
    assert_eq!(ready_workers(&state.table(), "m", "1"), ["w2"]);
    state.apply(&delete(keys::replica("m", "1", "w2")));
    assert!(
        state.table().model("m").is_none(),
        "a model with no records disappears"
    );
}

#[test]
fn deployments_add_versions_and_weights() {
    let mut state = RoutingState::default();
    state.apply(&put(deployment("m", &[("1", 90), ("2", 10)])));
    let table = state.table();
    let m = table.model("m").unwrap();
    assert_eq!(
        m.weights.as_deref(),
        Some(&[("1".into(), 90), ("2".into(), 10)][..])
    );
    assert!(m.versions["1"].ready.is_empty());
    state.apply(&delete(keys::deployment("m")));
    assert!(state.table().model("m").is_none());
}

#[test]
fn malformed_keys_and_values_are_ignored_or_removed() {
    let mut state = RoutingState::default();
    state.apply(&put(kv("/kiln/v1/replicas/m/1".into(), b"{}".to_vec())));
    state.apply(&put(kv("/kiln/v1/replicas/m/1/w/x".into(), b"{}".to_vec())));
    state.apply(&put(kv("/kiln/v1/workers/w1".into(), b"{}".to_vec())));
    assert_eq!(state, RoutingState::default());

    state.apply(&put(replica("m", "1", "w1", ReplicaState::Ready)));
    state.apply(&put(kv(
        keys::replica("m", "1", "w1"),
        b"not json".to_vec(),
    )));
    assert!(
        state.table().model("m").is_none(),
        "unreadable record is not routed to"
    );
}

#[test]
fn reset_replaces_everything() {
    let mut state = RoutingState::default();
    state.apply(&put(replica("old", "1", "w1", ReplicaState::Ready)));
    state.apply(&put(deployment("old", &[("1", 1)])));
    state.reset_replicas(&[replica("new", "3", "w9", ReplicaState::Ready)]);
    state.reset_deployments(&[]);
    let table = state.table();
    assert!(table.model("old").is_none());
    assert_eq!(ready_workers(&table, "new", "3"), ["w9"]);
    assert_eq!(
        table.addresses().into_iter().collect::<Vec<_>>(),
        ["w9.local:9001"]
    );
}

#[test]
fn versions_compare_numerically_when_both_are_numbers() {
    assert_eq!(compare_versions("10", "9"), Ordering::Greater);
    assert_eq!(compare_versions("2", "2"), Ordering::Equal);
    assert_eq!(compare_versions("b", "a"), Ordering::Greater);
    assert_eq!(
        compare_versions("10", "9a"),
        Ordering::Less,
        "string order otherwise"
    );
}

#[test]
fn resolve_errors_name_what_is_missing() {
    let mut state = RoutingState::default();
    state.apply(&put(replica("m", "1", "w1", ReplicaState::Loading)));
    state.apply(&put(deployment("d", &[("1", 100)])));
    let table = state.table();
    let mut rng = StdRng::seed_from_u64(1);
    assert!(matches!(
        table.resolve("x", "", &mut rng),
        Err(Error::UnknownModel(_))
    ));
    assert!(matches!(
        table.resolve("m", "2", &mut rng),
        Err(Error::UnknownVersion { .. })
    ));
    let err = table.resolve("m", "1", &mut rng).unwrap_err();
    assert_eq!(err.to_string(), "no ready replica of model m version 1");
    assert!(matches!(
        table.resolve("m", "", &mut rng),
        Err(Error::NoReadyReplica { .. })
    ));
    assert!(matches!(
        table.resolve("d", "", &mut rng),
        Err(Error::NoReadyReplica { .. })
    ));
    assert!(matches!(
        table.resolve("d", "1", &mut rng),
        Err(Error::NoReadyReplica { .. })
    ));
}

#[test]
fn without_deployment_the_highest_ready_version_wins() {
    let mut state = RoutingState::default();
    state.apply(&put(replica("m", "9", "w1", ReplicaState::Ready)));
    state.apply(&put(replica("m", "10", "w2", ReplicaState::Ready)));
    state.apply(&put(replica("m", "11", "w3", ReplicaState::Loading)));
    let table = state.table();
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..20 {
        assert_eq!(table.resolve("m", "", &mut rng).unwrap().version, "10");
    }
    let explicit = table.resolve("m", "9", &mut rng).unwrap();
    assert_eq!(explicit.version, "9");
    assert_eq!(explicit.replicas[0].worker_id, "w1");
    assert_eq!(table.resolve_stable("m", "").unwrap().version, "10");
}

#[test]
fn weights_split_traffic_among_ready_versions() {
    let mut state = RoutingState::default();
    state.apply(&put(replica("m", "1", "w1", ReplicaState::Ready)));
    state.apply(&put(replica("m", "2", "w2", ReplicaState::Ready)));
    state.apply(&put(deployment("m", &[("1", 80), ("2", 20)])));
    let table = state.table();
    let mut rng = StdRng::seed_from_u64(3);
    let draws = 10_000;
    let v2 = (0..draws)
        .filter(|_| table.resolve("m", "", &mut rng).unwrap().version == "2")
        .count();
    let share = v2 as f64 / draws as f64;
    assert!((0.17..0.23).contains(&share), "v2 share {share}");
    assert_eq!(table.resolve_stable("m", "").unwrap().version, "1");
    // An explicit version bypasses the weights.
    for _ in 0..100 {
        assert_eq!(table.resolve("m", "2", &mut rng).unwrap().version, "2");
    }
}

#[test]
fn weights_only_go_to_ready_versions_and_fall_back_to_the_highest_ready() {
    let mut state = RoutingState::default();
    state.apply(&put(replica("m", "1", "w1", ReplicaState::Ready)));
    state.apply(&put(replica("m", "2", "w2", ReplicaState::Loading)));
    state.apply(&put(deployment("m", &[("1", 50), ("2", 50)])));
    let mut rng = StdRng::seed_from_u64(4);
    let table = state.table();
    for _ in 0..200 {
        assert_eq!(table.resolve("m", "", &mut rng).unwrap().version, "1");
    }
    // Every weighted version lost its replicas; an unweighted ready one still serves.
    state.apply(&put(deployment("m", &[("2", 100), ("1", 0)])));
    let table = state.table();
    for _ in 0..50 {
        assert_eq!(table.resolve("m", "", &mut rng).unwrap().version, "1");
    }
    assert_eq!(table.resolve_stable("m", "").unwrap().version, "1");
}
