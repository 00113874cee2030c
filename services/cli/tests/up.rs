//! `kiln up` end to end in-process: monitor, two workers and the gateway on free ports over the
//! in-memory store; register and deploy the demo model through the Admin API; predict through
//! the gateway; check the answer against onnxruntime's; shut down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln::args::parse_model_version;
use kiln::commands::predict::predict;
use kiln::commands::status;
use kiln::commands::up::{Cluster, ClusterConfig, packages};
use kiln::input::{first_rows, parse_values};
use kiln_coord::{MemoryCoordinator, SharedCoordinator};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .canonicalize()
        .unwrap()
}

#[test]
fn finds_the_demo_packages() {
    let found = packages(&models()).unwrap();
    assert!(found.iter().any(|p| p.ends_with("digits/1")), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_deploys_digits_and_predicts_through_the_gateway() {
    let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
    let config = ClusterConfig {
        workers: 2,
        ephemeral_ports: true,
        backend: kiln_model::Backend::Flex,
        models: models(),
        compute_threads: None,
        no_dynamic_batching: false,
        retrain_command: None,
        shared_memory: true,
    };
    let cluster = Cluster::start(&config, coord).await.unwrap();
    let deployed = cluster
        .prepare(
            &models(),
            &[parse_model_version("digits:1").unwrap()],
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert_eq!(deployed.len(), 1);
    assert!(cluster.describe().contains("worker-2"));

    let heldout = std::fs::read_to_string(models().join("digits/testdata/heldout.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&heldout).unwrap();
    let values = first_rows(parse_values(&heldout).unwrap(), 4).unwrap();
    let gateway = format!("http://{}", cluster.gateway.grpc_addr);
    // The gateway learns of the ready replica from its own watch: allow it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let prediction = loop {
        match predict(
            &gateway,
            "digits",
            "",
            Some(values.clone()),
            &Default::default(),
        )
        .await
        {
            Ok(p) => break p,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("retrying: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    assert_eq!(prediction.batch, 4);
    let labels = &prediction
        .outputs
        .iter()
        .find(|o| o.name == "label")
        .unwrap()
        .data;
    let want: Vec<f64> = expected["ort_label"].as_array().unwrap()[..4]
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(labels, &want);
    // `kiln up --shared-memory` reaches the gateway.
    let mut client =
        kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            gateway.clone(),
        )
        .await
        .unwrap();
    let meta = client
        .server_metadata(kiln_proto::inference::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        meta.extensions.iter().any(|e| e == "system_shared_memory"),
        "{meta:?}"
    );

    let mut admin =
        kiln::admin::connect(&cluster.monitor.grpc_addr.to_string(), &Default::default())
            .await
            .unwrap();
    let s = status::fetch(&mut admin).await.unwrap();
    assert_eq!(s.workers.len(), 2);
    assert!(status::render(&s).contains("digits"));
    cluster.shutdown().await;
}
