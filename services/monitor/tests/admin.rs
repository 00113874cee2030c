//! The Admin API over real gRPC: register the demo package, deploy it, list, and the error codes.

mod common;

use std::path::PathBuf;

use common::*;
use kiln_proto::kiln::v1::admin_client::AdminClient;
use kiln_proto::kiln::v1::*;
use tonic::Code;
use tonic::transport::Channel;

fn digits_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1")
}

async fn client(m: &kiln_monitor::Running) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", m.grpc_addr))
        .await
        .unwrap()
}

fn register_req(path: &str) -> RegisterModelVersionRequest {
    RegisterModelVersionRequest {
        record: Some(ModelVersionRecord {
            package_uri: path.into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_deploy_and_list() {
    let coord = memory();
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    let mut admin = client(&monitor).await;
    for id in ["w1", "w2", "w3"] {
        fake_worker(&coord, id).await;
    }

    // Deploying before registering is NOT_FOUND.
    let deploy = DeployRequest {
        model: "digits".into(),
        version: "1".into(),
        replicas: 2,
        traffic_weight: 0,
        ..Default::default()
    };
    let err = admin.deploy(deploy.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let dir = digits_dir();
    let uri = format!("file://{}", dir.display());
    let record = admin
        .register_model_version(register_req(&uri))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(
        (record.model.as_str(), record.version.as_str()),
        ("digits", "1")
    );
    assert_eq!(
        record.package_uri,
        dir.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(record.sha256.len(), 64);
    assert_eq!(record.format, "onnx");
    assert_eq!(record.inputs[0].name, "input");
    assert_eq!(record.inputs[0].dims, [64]);
    assert_eq!(record.outputs.len(), 2);
    // The package holds a reference profile (`kiln profile`), preferred over the raw CSV.
    assert!(
        record
            .reference_profile_uri
            .ends_with("reference.profile.pb")
    );
    // Registering the same package again is idempotent.
    let again = admin
        .register_model_version(register_req(dir.to_str().unwrap()))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(again, record);
    // A name that contradicts the manifest is refused.
    let mut wrong = register_req(dir.to_str().unwrap());
    wrong.record.as_mut().unwrap().version = "2".into();
    let err = admin.register_model_version(wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .register_model_version(register_req("/definitely/not/here"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let models = admin
        .list_models(ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(models, [record]);

    // Deploy: validation, then the record and the assignments.
    let err = admin
        .deploy(DeployRequest {
            replicas: 0,
            ..deploy.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .deploy(DeployRequest {
            replicas: 65,
            ..deploy.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // An override may not lift the per-version queue bound.
    let err = admin
        .deploy(DeployRequest {
            batching: Some(kiln_proto::kiln::v1::BatchingOverrides {
                max_queue_size: u32::MAX,
                ..Default::default()
            }),
            ..deploy.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max_queue_size"), "{err:?}");
    let d = admin
        .deploy(deploy)
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(d.versions[0].replicas, 2);
    assert_eq!(d.versions[0].traffic_weight, 100);
    eventually(WITHIN, "two assignments", || async {
        assigned_workers(&coord, "digits", "1").await.len() == 2
    })
    .await;

    let listed = admin
        .list_deployments(ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deployments;
    assert_eq!(listed, [d]);
    let workers = admin
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 3);

    // Replicas are what workers publish; publish one as a worker would.
    let replica = ReplicaRecord {
        model: "digits".into(),
        version: "1".into(),
        worker_id: "w1".into(),
        address: "127.0.0.1:9001".into(),
        state: ReplicaState::Ready as i32,
        reason: String::new(),
        ..Default::default()
    };
    kiln_coord::codec::put(
        coord.as_ref(),
        &kiln_coord::keys::replica("digits", "1", "w1"),
        &replica,
        0,
    )
    .await
    .unwrap();
    let replicas = admin
        .list_replicas(ListReplicasRequest {
            model: "digits".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .replicas;
    assert_eq!(replicas, [replica]);
    let none = admin
        .list_replicas(ListReplicasRequest {
            worker_id: "w2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .replicas;
    assert!(none.is_empty());

    // Scale, then undeploy: the controller removes the assignments.
    let scaled = admin
        .scale(ScaleRequest {
            model: "digits".into(),
            version: "1".into(),
            replicas: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(scaled.versions[0].replicas, 3);
    eventually(WITHIN, "three assignments", || async {
        assigned_workers(&coord, "digits", "1").await.len() == 3
    })
    .await;
    let left = admin
        .undeploy(UndeployRequest {
            model: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .deployment;
    assert_eq!(left, None);
    eventually(WITHIN, "no assignments", || async {
        assignments(&coord).await.is_empty()
    })
    .await;
    monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_versions_and_bad_names_are_refused() {
    let coord = memory();
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    let mut admin = client(&monitor).await;
    let err = admin
        .promote(PromoteRequest {
            model: "digits".into(),
            version: "1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = admin
        .rollback(RollbackRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .drift_report(DriftReportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .drift_report(DriftReportRequest {
            model: "digits".into(),
            version: "1".into(),
            window_secs: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .list_deployments(ListDeploymentsRequest {
            model: "../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .undeploy(UndeployRequest {
            model: "nothing".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_root_confines_registration() {
    let coord = memory();
    let root = tempfile::tempdir().unwrap();
    let config = kiln_monitor::Config {
        package_root: Some(root.path().to_path_buf()),
        ..fast_config("m")
    };
    let monitor = kiln_monitor::start(config, coord).await.unwrap();
    let mut admin = client(&monitor).await;
    let err = admin
        .register_model_version(register_req(digits_dir().to_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serves_then_stops_on_shutdown() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let monitor = kiln_monitor::start(fast_config("m"), memory())
        .await
        .unwrap();
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", monitor.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(HealthCheckRequest {
            service: "kiln.v1.Admin".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let addr = monitor.grpc_addr;
    monitor.shutdown().await;
    // The port is closed after shutdown.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
