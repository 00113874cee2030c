//! The controller places replicas on live workers and replaces those of dead ones (in-memory store).

mod common;

use common::*;
use kiln_coord::keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_on_distinct_workers_and_replaces_dead_ones() {
    let coord = memory();
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    let mut leases = Vec::new();
    for id in ["w1", "w2", "w3"] {
        leases.push(fake_worker(&coord, id).await);
    }
    registered(&coord, "digits", "1").await;
    deployed(&coord, "digits", "1", 2).await;

    eventually(WITHIN, "two assignments", || async {
        assigned_workers(&coord, "digits", "1").await.len() == 2
    })
    .await;
    let before = assigned_workers(&coord, "digits", "1").await;
    assert_eq!(before, ["w1", "w2"], "fewest assignments first, ties by id");

    // w1's lease goes (the worker died): its assignment moves to w3, w2's stays.
    coord.revoke_lease(leases[0]).await.unwrap();
    eventually(WITHIN, "replacement on w3", || async {
        assigned_workers(&coord, "digits", "1").await == ["w2", "w3"]
    })
    .await;
    assert!(
        coord
            .list(&keys::assignments_of("w1"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );

    // Scale down and undeploy.
    deployed(&coord, "digits", "1", 1).await;
    eventually(WITHIN, "one assignment", || async {
        assigned_workers(&coord, "digits", "1").await.len() == 1
    })
    .await;
    coord.delete(&keys::deployment("digits")).await.unwrap();
    eventually(WITHIN, "no assignments", || async {
        assignments(&coord).await.is_empty()
    })
    .await;
    monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_versions_get_no_assignments() {
    let coord = memory();
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    fake_worker(&coord, "w1").await;
    deployed(&coord, "ghost", "1", 1).await;
    registered(&coord, "digits", "1").await;
    deployed(&coord, "digits", "1", 1).await;
    eventually(WITHIN, "digits placed", || async {
        assigned_workers(&coord, "digits", "1").await.len() == 1
    })
    .await;
    assert!(assigned_workers(&coord, "ghost", "1").await.is_empty());
    // Registering it later places it (the models watch triggers a pass).
    registered(&coord, "ghost", "1").await;
    eventually(WITHIN, "ghost placed", || async {
        assigned_workers(&coord, "ghost", "1").await.len() == 1
    })
    .await;
    monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_continues() {
    let coord = memory();
    let a = kiln_monitor::start(fast_config("a"), coord.clone())
        .await
        .unwrap();
    eventually(WITHIN, "a leads", || async { a.is_leader() }).await;
    let b = kiln_monitor::start(fast_config("b"), coord.clone())
        .await
        .unwrap();
    let w1 = fake_worker(&coord, "w1").await;
    fake_worker(&coord, "w2").await;
    registered(&coord, "digits", "1").await;
    deployed(&coord, "digits", "1", 1).await;
    eventually(WITHIN, "placed", || async {
        assigned_workers(&coord, "digits", "1").await == ["w1"]
    })
    .await;
    a.shutdown().await;
    eventually(WITHIN, "b leads", || async { b.is_leader() }).await;
    coord.revoke_lease(w1).await.unwrap();
    eventually(WITHIN, "b reassigns", || async {
        assigned_workers(&coord, "digits", "1").await == ["w2"]
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_read_removes_no_replica() {
    // A deployment or worker record overwritten with something undecodable (a hand edit, a
    // newer writer) reads as missing: that must not unassign the replicas it describes.
    let coord = memory();
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    for id in ["w1", "w2"] {
        fake_worker(&coord, id).await;
    }
    registered(&coord, "digits", "1").await;
    deployed(&coord, "digits", "1", 2).await;
    eventually(WITHIN, "two assignments", || async {
        assigned_workers(&coord, "digits", "1").await.len() == 2
    })
    .await;
    coord
        .put(&keys::deployment("digits"), b"{not json".to_vec(), 0)
        .await
        .unwrap();
    let lease = coord.get(&keys::worker("w1")).await.unwrap().unwrap().lease;
    coord
        .put(&keys::worker("w1"), b"\x00garbage".to_vec(), lease)
        .await
        .unwrap();
    // Another deployment: once it is placed, passes have run over the unreadable records.
    registered(&coord, "other", "1").await;
    deployed(&coord, "other", "1", 1).await;
    eventually(WITHIN, "other placed", || async {
        assigned_workers(&coord, "other", "1").await.len() == 1
    })
    .await;
    assert_eq!(
        assigned_workers(&coord, "digits", "1").await,
        ["w1", "w2"],
        "kept"
    );
    monitor.shutdown().await;
}
