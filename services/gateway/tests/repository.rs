//! Triton's repository extension against a real monitor (in process, MemoryCoordinator):
//! RepositoryModelLoad deploys and answers once the gateway can route to a READY replica,
//! RepositoryModelUnload undeploys, the NOT_FOUND / INVALID_ARGUMENT / UNAVAILABLE /
//! DEADLINE_EXCEEDED answers, and finding the monitor through the controller election.
//! The test plays the worker: it writes the replica record once the deployment appears.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kiln_coord::codec::{self, DeploymentRecord, ModelVersionRecord, ReplicaState};
use kiln_coord::conformance::eventually;
use kiln_coord::{Coordinator, MemoryCoordinator, SharedCoordinator, keys};
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::model_repository_parameter::ParameterChoice;
use kiln_proto::inference::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Writes a registered model version, as `kiln deploy --package` would through the monitor.
async fn register_version(coord: &dyn Coordinator, model: &str, version: &str) {
    let record = ModelVersionRecord {
        model: model.into(),
        version: version.into(),
        package_uri: format!("/packages/{model}/{version}"),
        sha256: "0".repeat(64),
        format: "onnx".into(),
        ..Default::default()
    };
    codec::put(coord, &keys::model_version(model, version), &record, 0)
        .await
        .unwrap();
}

async fn deployment(coord: &dyn Coordinator, model: &str) -> Option<DeploymentRecord> {
    codec::get(coord, &keys::deployment(model)).await.unwrap()
}

async fn monitor(coord: &SharedCoordinator) -> kiln_monitor::Running {
    let monitor = kiln_monitor::start(kiln_monitor::Config::ephemeral(), coord.clone())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "monitor leads", || async {
        monitor.is_leader()
    })
    .await;
    monitor
}

fn int(n: i64) -> ModelRepositoryParameter {
    ModelRepositoryParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(n)),
    }
}

fn string(s: &str) -> ModelRepositoryParameter {
    ModelRepositoryParameter {
        parameter_choice: Some(ParameterChoice::StringParam(s.into())),
    }
}

async fn load(
    client: &mut GrpcInferenceServiceClient<Channel>,
    model: &str,
    parameters: &[(&str, ModelRepositoryParameter)],
    timeout: Duration,
) -> Result<(), Status> {
    let mut request = tonic::Request::new(RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: model.into(),
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<HashMap<_, _>>(),
    });
    request.set_timeout(timeout);
    client.repository_model_load(request).await.map(|_| ())
}

async fn unload(
    client: &mut GrpcInferenceServiceClient<Channel>,
    model: &str,
    parameters: &[(&str, ModelRepositoryParameter)],
) -> Result<(), Status> {
    let request = RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: model.into(),
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    };
    client.repository_model_unload(request).await.map(|_| ())
}

async fn index(client: &mut GrpcInferenceServiceClient<Channel>) -> Vec<(String, String, String)> {
    client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| (format!("{}/{}", m.name, m.version), m.state, m.reason))
        .collect()
}

#[tokio::test]
async fn load_deploys_the_highest_version_and_answers_once_a_replica_is_ready() {
    let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
    let monitor = monitor(&coord).await;
    register_version(&*coord, "m", "2").await;
    register_version(&*coord, "m", "10").await;
    let worker = FakeWorker::start("wa", Behaviour::Echo).await;
    let admin = monitor.grpc_addr.to_string();
    let gw = gateway(coord.clone(), |c| c.admin = Some(admin)).await;
    let mut client = client(&gw).await;

    let mut loading = {
        let mut client = client.clone();
        tokio::spawn(async move {
            load(
                &mut client,
                "m",
                &[("replicas", int(2))],
                Duration::from_secs(30),
            )
            .await
        })
    };
    // The highest version (numerically: 10 > 2) is deployed with the replicas asked for.
    eventually(Duration::from_secs(10), "deployment of m/10", || async {
        deployment(&*coord, "m").await.is_some()
    })
    .await;
    let deployed = deployment(&*coord, "m").await.unwrap();
    assert_eq!(deployed.versions.len(), 1);
    assert_eq!(deployed.versions[0].version, "10");
    assert_eq!(deployed.versions[0].replicas, 2);
    assert_eq!(deployed.versions[0].traffic_weight, 100, "first version");
    eventually(Duration::from_secs(10), "index shows m/10 loading", || {
        let mut client = client.clone();
        async move {
            index(&mut client).await
                == [(
                    "m/10".to_owned(),
                    "LOADING".to_owned(),
                    "deployed; no replica placed on a worker yet".to_owned(),
                )]
        }
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut loading)
            .await
            .is_err(),
        "the load must wait for a ready replica"
    );

    // The worker loads it: first LOADING, then READY.
    register(&*coord, "m", "10", &worker, ReplicaState::Loading).await;
    eventually(Duration::from_secs(10), "index shows wa loading", || {
        let mut client = client.clone();
        async move { index(&mut client).await[0].2 == "wa: loading" }
    })
    .await;
    register(&*coord, "m", "10", &worker, ReplicaState::Ready).await;
    loading.await.unwrap().unwrap();
    let ready = gw.routing_table();
    assert_eq!(ready.model("m").unwrap().versions["10"].ready.len(), 1);
    client
        .model_infer(request("m", "", four_floats()))
        .await
        .unwrap();
    assert_eq!(
        index(&mut client).await,
        [("m/10".to_owned(), "READY".to_owned(), String::new())]
    );

    // An explicit version nobody loads: DEADLINE_EXCEEDED at the caller's deadline, deployed
    // beside the first one without traffic.
    let err = load(
        &mut client,
        "m",
        &[("version", string("2"))],
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("version 2"), "{err:?}");
    let deployed = deployment(&*coord, "m").await.unwrap();
    let versions: Vec<_> = deployed
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v.replicas, v.traffic_weight))
        .collect();
    assert_eq!(versions, [("10", 2, 100), ("2", 1, 0)]);

    // Loading again keeps the replica count already deployed.
    load(&mut client, "m", &[], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        deployment(&*coord, "m").await.unwrap().versions[0].replicas,
        2
    );

    gw.shutdown().await;
    monitor.shutdown().await;
}

#[tokio::test]
async fn unknown_models_versions_and_uploads_are_refused() {
    let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
    let monitor = monitor(&coord).await;
    register_version(&*coord, "m", "1").await;
    let admin = format!("http://{}", monitor.grpc_addr);
    let gw = gateway(coord.clone(), |c| c.admin = Some(admin)).await;
    let mut client = client(&gw).await;
    let timeout = Duration::from_secs(5);

    let err = load(&mut client, "nope", &[], timeout).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("kiln deploy --package"), "{err:?}");
    let err = load(&mut client, "m", &[("version", string("7"))], timeout)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = load(&mut client, "m", &[("config", string("{}"))], timeout)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not supported"), "{err:?}");
    // The monitor's own refusal keeps its code.
    let err = load(&mut client, "m", &[("replicas", int(1000))], timeout)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("monitor refused Deploy"), "{err:?}");
    assert!(deployment(&*coord, "m").await.is_none());

    let err = unload(&mut client, "m", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = unload(&mut client, "", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    gw.shutdown().await;
    monitor.shutdown().await;
}

#[tokio::test]
async fn unload_removes_the_deployment() {
    let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
    let monitor = monitor(&coord).await;
    register_version(&*coord, "m", "1").await;
    register_version(&*coord, "m", "2").await;
    let worker = FakeWorker::start("wa", Behaviour::Echo).await;
    register(&*coord, "m", "1", &worker, ReplicaState::Ready).await;
    register(&*coord, "m", "2", &worker, ReplicaState::Ready).await;
    let admin = monitor.grpc_addr.to_string();
    let gw = gateway(coord.clone(), |c| c.admin = Some(admin)).await;
    let mut client = client(&gw).await;
    let timeout = Duration::from_secs(10);
    load(&mut client, "m", &[("version", int(1))], timeout)
        .await
        .unwrap();
    load(&mut client, "m", &[("version", int(2))], timeout)
        .await
        .unwrap();
    assert_eq!(deployment(&*coord, "m").await.unwrap().versions.len(), 2);

    // One version, then the whole model; `unload_dependents` is accepted and ignored.
    unload(&mut client, "m", &[("version", string("1"))])
        .await
        .unwrap();
    let left = deployment(&*coord, "m").await.unwrap();
    assert_eq!(left.versions.len(), 1);
    assert_eq!(left.versions[0].version, "2");
    let dependents = ModelRepositoryParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(false)),
    };
    unload(&mut client, "m", &[("unload_dependents", dependents)])
        .await
        .unwrap();
    assert!(deployment(&*coord, "m").await.is_none());
    let err = unload(&mut client, "m", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    gw.shutdown().await;
    monitor.shutdown().await;
}

#[tokio::test]
async fn without_admin_the_gateway_finds_the_monitor_through_the_election() {
    let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
    register_version(&*coord, "m", "1").await;
    let worker = FakeWorker::start("wa", Behaviour::Echo).await;
    register(&*coord, "m", "1", &worker, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    let mut client = client(&gw).await;
    let timeout = Duration::from_secs(10);

    // No monitor yet.
    let err = load(&mut client, "m", &[], timeout).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("--admin"), "{err:?}");

    let first = monitor(&coord).await;
    load(&mut client, "m", &[], timeout).await.unwrap();
    assert_eq!(
        deployment(&*coord, "m").await.unwrap().versions[0].version,
        "1"
    );

    // The leader goes away and another monitor takes over: the gateway follows.
    first.shutdown().await;
    let second = monitor(&coord).await;
    unload(&mut client, "m", &[]).await.unwrap();
    assert!(deployment(&*coord, "m").await.is_none());

    gw.shutdown().await;
    second.shutdown().await;
}
