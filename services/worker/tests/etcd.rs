//! The same lifecycle against a real etcd (watch semantics, leases): ready, serve, unassign,
//! reassign, shut down with every key gone.

mod common;

use std::sync::Arc;

use common::*;
use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_coord::testing::EtcdServer;
use kiln_coord::{SharedCoordinator, keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_real_etcd() {
    let etcd = EtcdServer::start().await;
    let coord: SharedCoordinator = Arc::new(etcd.connect().await);
    register(&coord, &digits_record()).await;
    assign(&coord, "w-etcd", "digits", "1").await;
    let worker = kiln_worker::start(config("w-etcd"), coord.clone())
        .await
        .unwrap();
    wait_replica(&coord, "digits", "1", "w-etcd", ReplicaState::Ready).await;
    let mut client = client(&worker).await;
    let data = heldout();
    let resp = client
        .model_infer(raw_request(&data.inputs[..8]))
        .await
        .unwrap()
        .into_inner();
    let (labels, probs) = raw_outputs(&resp);
    assert_parity(&data, 0, &labels, &probs);

    coord
        .delete(&keys::assignment("w-etcd", "digits", "1"))
        .await
        .unwrap();
    eventually(WITHIN, "replica key removed", || async {
        replica(&coord, "digits", "1", "w-etcd").await.is_none()
    })
    .await;
    assign(&coord, "w-etcd", "digits", "1").await;
    wait_replica(&coord, "digits", "1", "w-etcd", ReplicaState::Ready).await;

    worker.shutdown().await;
    assert!(coord.get(&keys::worker("w-etcd")).await.unwrap().is_none());
    assert!(replica(&coord, "digits", "1", "w-etcd").await.is_none());
}
