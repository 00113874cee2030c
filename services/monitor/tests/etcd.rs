//! The monitor against a real etcd: election failover and placement with real leases.

mod common;

use std::sync::Arc;

use common::*;
use kiln_coord::SharedCoordinator;
use kiln_coord::testing::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_places_and_fails_over_on_etcd() {
    let etcd = EtcdServer::start().await;
    let coord: SharedCoordinator = Arc::new(etcd.connect().await);
    let a = kiln_monitor::start(fast_config("a"), coord.clone())
        .await
        .unwrap();
    let b = kiln_monitor::start(fast_config("b"), coord.clone())
        .await
        .unwrap();
    eventually(WITHIN, "one leader", || async {
        a.is_leader() ^ b.is_leader()
    })
    .await;

    let mut leases = Vec::new();
    for id in ["w1", "w2", "w3"] {
        leases.push(fake_worker(&coord, id).await);
    }
    registered(&coord, "digits", "1").await;
    deployed(&coord, "digits", "1", 2).await;
    eventually(WITHIN, "two assignments", || async {
        assigned_workers(&coord, "digits", "1").await == ["w1", "w2"]
    })
    .await;

    // The leader goes; the standby takes over and replaces a dead worker's replica.
    let (leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };
    leader.shutdown().await;
    eventually(WITHIN, "standby leads", || async { standby.is_leader() }).await;
    coord.revoke_lease(leases[1]).await.unwrap();
    eventually(WITHIN, "replacement on w3", || async {
        assigned_workers(&coord, "digits", "1").await == ["w1", "w3"]
    })
    .await;
    standby.shutdown().await;
}
