//! Resync: when the watch breaks, the gateway serves from its last table, and once the store
//! answers again it lists afresh, so changes made during the outage are not missed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_coord::testing::Faulty;
use kiln_coord::{Coordinator, keys};

use common::*;

#[tokio::test]
async fn serves_from_the_last_table_while_cut_off_then_relists() {
    let flaky = Arc::new(Faulty::default());
    let a = FakeWorker::start("wa", Behaviour::Echo).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*flaky, "m", "1", &a, ReplicaState::Ready).await;
    let gw = gateway(flaky.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 1).await;
    let mut client = client(&gw).await;

    flaky.cut(true);
    eventually(Duration::from_secs(5), "watch lost", || async {
        metric_value(&gw, "kiln_routing_watch_connected") == 0.0
    })
    .await;
    // The cluster changes while the gateway cannot see it.
    register(&*flaky, "m", "1", &b, ReplicaState::Ready).await;
    flaky.delete(&keys::replica("m", "1", "wa")).await.unwrap();
    for _ in 0..10 {
        let r = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
        assert_eq!(
            served_by(&r.into_inner()),
            "wa",
            "served from the last table"
        );
    }
    assert!(gw.is_ready(), "still ready with the last table");

    flaky.cut(false);
    eventually(Duration::from_secs(10), "relisted", || async {
        let table = gw.routing_table();
        let ready = &table.model("m").unwrap().versions["1"].ready;
        ready.len() == 1 && ready[0].worker_id == "wb"
    })
    .await;
    assert_eq!(metric_value(&gw, "kiln_routing_watch_connected"), 1.0);
    for _ in 0..10 {
        let r = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
        assert_eq!(served_by(&r.into_inner()), "wb");
    }
    // And the new watch follows changes again.
    flaky.delete(&keys::replica("m", "1", "wb")).await.unwrap();
    eventually(Duration::from_secs(5), "replica gone", || async {
        gw.routing_table().model("m").is_none()
    })
    .await;
    gw.shutdown().await;
}
