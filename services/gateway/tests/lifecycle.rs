//! Lifecycle: not ready before the first sync, and graceful shutdown that drains in-flight
//! requests before the port closes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_coord::{EtcdConfig, EtcdCoordinator, MemoryCoordinator};
use kiln_gateway::Config;
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::{ServerLiveRequest, ServerReadyRequest};
use tokio::sync::Semaphore;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn not_ready_until_the_routing_table_synced() {
    // Nothing listens on this port: the coordinator connects lazily and every listing fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let coord = EtcdCoordinator::connect(&EtcdConfig::new([format!("http://127.0.0.1:{port}")]))
        .await
        .unwrap();
    let gw = kiln_gateway::start(Config::ephemeral(), Arc::new(coord))
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel.clone());
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        !client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::NotServing);
    assert!(!gw.is_ready());
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_inflight_requests_then_closes() {
    let coord = Arc::new(MemoryCoordinator::new());
    let gate = Arc::new(Semaphore::new(0));
    let a = FakeWorker::start("wa", Behaviour::Gate(gate.clone())).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 1).await;
    let addr = gw.grpc_addr;
    let mut client = client(&gw).await;
    let held =
        tokio::spawn(async move { client.model_infer(request("m", "1", four_floats())).await });
    eventually(Duration::from_secs(5), "request in flight", || async {
        a.calls() == 1
    })
    .await;

    let shutdown = tokio::spawn(gw.shutdown());
    eventually(
        Duration::from_secs(5),
        "no new connections accepted",
        || async { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    assert!(!shutdown.is_finished(), "shutdown waits for the request");
    gate.add_permits(1);
    held.await
        .unwrap()
        .expect("the in-flight request completes");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finishes once drained")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}
