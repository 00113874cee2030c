//! Routing over fake workers with the in-memory coordinator: spreading, following replica
//! changes, version choice and the NOT_FOUND / UNAVAILABLE answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_coord::{Coordinator, MemoryCoordinator, keys};
use kiln_proto::inference::{ModelReadyRequest, RepositoryIndexRequest};
use tonic::Code;

#[tokio::test]
async fn spreads_requests_over_ready_replicas_and_follows_deletes() {
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start("wa", Behaviour::Echo).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 2).await;
    let mut client = client(&gw).await;

    for _ in 0..100 {
        let response = client
            .model_infer(request("m", "", four_floats()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.model_version, "1");
    }
    assert_eq!(a.calls() + b.calls(), 100);
    assert!(
        a.calls() >= 20 && b.calls() >= 20,
        "a={} b={}",
        a.calls(),
        b.calls()
    );

    coord.delete(&keys::replica("m", "1", "wa")).await.unwrap();
    wait_ready(&gw, "m", "1", 1).await;
    let before = a.calls();
    for _ in 0..30 {
        let response = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(served_by(&response), "wb");
    }
    assert_eq!(a.calls(), before, "no traffic to the deleted replica");
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_model_and_version_are_not_found_and_unready_is_unavailable() {
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start("wa", Behaviour::Echo).await;
    register(&*coord, "m", "1", &a, ReplicaState::Loading).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    eventually(Duration::from_secs(5), "model m in the table", || async {
        gw.routing_table().model("m").is_some()
    })
    .await;
    let mut client = client(&gw).await;

    let err = client
        .model_infer(request("nope", "", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = client
        .model_infer(request("m", "7", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "no ready replica of model m version 1");
    let err = client
        .model_infer(request("m", "", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(a.calls(), 0);

    assert!(!is_ready(&mut client, "m", "").await);
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), 1);
    assert_eq!(index.models[0].state, "LOADING");
    assert_eq!(index.models[0].reason, "wa: loading; not deployed");

    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    wait_ready(&gw, "m", "1", 1).await;
    assert!(is_ready(&mut client, "m", "").await);
    assert!(is_ready(&mut client, "m", "1").await);
    assert!(!is_ready(&mut client, "m", "2").await);
    assert!(!is_ready(&mut client, "x", "").await);
    client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap();
    gw.shutdown().await;
}

#[tokio::test]
async fn empty_version_follows_weights_and_the_chosen_version_is_forwarded() {
    let coord = Arc::new(MemoryCoordinator::new());
    let v1 = FakeWorker::start("w1", Behaviour::Echo).await;
    let v2 = FakeWorker::start("w2", Behaviour::Echo).await;
    register(&*coord, "m", "1", &v1, ReplicaState::Ready).await;
    register(&*coord, "m", "2", &v2, ReplicaState::Ready).await;
    deploy(&*coord, "m", &[("1", 100), ("2", 0)]).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "2", 1).await;
    eventually(
        Duration::from_secs(5),
        "deployment in the table",
        || async {
            gw.routing_table()
                .model("m")
                .is_some_and(|m| m.weights.is_some())
        },
    )
    .await;
    let mut client = client(&gw).await;

    for _ in 0..20 {
        let r = client
            .model_infer(request("m", "", four_floats()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (served_by(&r).as_str(), r.model_version.as_str()),
            ("w1", "1")
        );
    }
    assert_eq!(v1.last().0, "1", "the worker was told the version");

    // An explicit version bypasses the weights.
    let r = client
        .model_infer(request("m", "2", four_floats()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served_by(&r), "w2");
    assert_eq!(v2.last().0, "2");

    // Traffic moves with the weights.
    deploy(&*coord, "m", &[("1", 0), ("2", 100)]).await;
    eventually(Duration::from_secs(5), "weights moved", || async {
        gw.routing_table()
            .model("m")
            .and_then(|m| m.weights.clone())
            .is_some_and(|w| w.contains(&("2".to_owned(), 100)))
    })
    .await;
    let before = v1.calls();
    for _ in 0..20 {
        let r = client
            .model_infer(request("m", "", four_floats()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.model_version, "2");
    }
    assert_eq!(v1.calls(), before);
    gw.shutdown().await;
}

/// Asks the gateway's ModelReady.
async fn is_ready(
    client: &mut kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::transport::Channel,
    >,
    name: &str,
    version: &str,
) -> bool {
    let request = ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    client
        .model_ready(request)
        .await
        .unwrap()
        .into_inner()
        .ready
}
