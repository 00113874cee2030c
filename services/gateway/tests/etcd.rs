//! The routing table against a real etcd: it follows puts and deletes, and when etcd dies the
//! gateway keeps serving from its last table.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_coord::testing::EtcdServer;
use kiln_coord::{Coordinator, keys};

#[tokio::test]
async fn the_table_follows_etcd_and_outlives_it() {
    let mut etcd = EtcdServer::start().await;
    let coord = Arc::new(etcd.connect().await);
    let a = FakeWorker::start("wa", Behaviour::Echo).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 1).await;

    // Changes after the initial listing arrive through the watch.
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    deploy(&*coord, "m", &[("1", 100)]).await;
    wait_ready(&gw, "m", "1", 2).await;
    coord.delete(&keys::replica("m", "1", "wa")).await.unwrap();
    wait_ready(&gw, "m", "1", 1).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    wait_ready(&gw, "m", "1", 2).await;
    eventually(Duration::from_secs(5), "deployment seen", || async {
        gw.routing_table()
            .model("m")
            .is_some_and(|m| m.weights.is_some())
    })
    .await;

    let mut client = client(&gw).await;
    for _ in 0..20 {
        client
            .model_infer(request("m", "", four_floats()))
            .await
            .unwrap();
    }

    etcd.kill();
    // The watch notices the loss (keep-alive), the table stays as it was.
    eventually(Duration::from_secs(30), "watch lost", || async {
        metrics_text(&gw).contains("kiln_routing_watch_connected 0")
    })
    .await;
    assert_eq!(
        gw.routing_table()
            .model("m")
            .map(|m| m.versions["1"].ready.len()),
        Some(2)
    );
    assert!(gw.is_ready());
    let before = a.calls() + b.calls();
    for _ in 0..40 {
        client
            .model_infer(request("m", "", four_floats()))
            .await
            .unwrap();
    }
    assert_eq!(a.calls() + b.calls() - before, 40);
    gw.shutdown().await;
}
