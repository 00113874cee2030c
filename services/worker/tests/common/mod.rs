//! Shared fixtures: the digits demo package, its held-out data, and a worker started in-process
//! on ephemeral ports over an in-memory coordinator.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiln_coord::codec::{self, AssignmentRecord, ModelVersionRecord, ReplicaRecord, TensorSpec};
use kiln_coord::conformance::eventually;
use kiln_coord::{MemoryCoordinator, SharedCoordinator, keys};
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::model_infer_request::InferInputTensor;
use kiln_proto::inference::{ModelInferRequest, ModelInferResponse};
use kiln_worker::{Config, Running};
use serde::Deserialize;
use tonic::transport::Channel;

/// How long a test waits for the cluster to converge.
pub const WITHIN: Duration = Duration::from_secs(60);

/// The repository's `models/` directory, found above the crate being tested (this module is also
/// included by kiln-loadtest's tests, which sit at another depth).
pub fn models_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join("models"))
        .find(|m| m.join("digits/1/kiln.toml").is_file())
        .expect("models/digits/1 above the crate")
}

/// The demo package directory.
pub fn package_dir() -> PathBuf {
    models_dir()
        .join("digits/1")
        .canonicalize()
        .expect("the digits package exists")
}

/// `models/digits/testdata/heldout.json`.
#[derive(Deserialize)]
pub struct Heldout {
    /// Rows of 64 pixel intensities.
    pub inputs: Vec<Vec<f32>>,
    /// True labels.
    pub labels: Vec<i64>,
    /// onnxruntime's labels.
    pub ort_label: Vec<i64>,
    /// onnxruntime's probabilities, 10 per row.
    pub ort_probabilities: Vec<Vec<f32>>,
}

/// The held-out data.
pub fn heldout() -> Heldout {
    let path = models_dir().join("digits/testdata/heldout.json");
    serde_json::from_slice(&std::fs::read(path).expect("heldout.json")).expect("valid json")
}

/// The record of digits/1 with the model file's real checksum.
pub fn digits_record() -> ModelVersionRecord {
    let dir = package_dir();
    let bytes = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
    let spec = |name: &str, datatype: &str, dims: Vec<i64>| TensorSpec {
        name: name.into(),
        datatype: datatype.into(),
        dims,
    };
    ModelVersionRecord {
        model: "digits".into(),
        version: "1".into(),
        package_uri: dir.display().to_string(),
        sha256: kiln_worker::package::sha256_hex(&bytes),
        format: "onnx".into(),
        inputs: vec![spec("input", "FP32", vec![64])],
        outputs: vec![
            spec("label", "INT64", vec![]),
            spec("probabilities", "FP32", vec![10]),
        ],
        reference_profile_uri: String::new(),
        size_bytes: bytes.len() as u64,
    }
}

/// A fresh in-memory coordinator.
pub fn coordinator() -> SharedCoordinator {
    Arc::new(MemoryCoordinator::new())
}

/// A test configuration: ephemeral ports, id `id`.
pub fn config(id: &str) -> Config {
    Config {
        id: Some(id.into()),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        compute_threads: 2,
        shutdown_grace_secs: 5,
        ..Config::default()
    }
}

/// Writes a model version record.
pub async fn register(coord: &SharedCoordinator, record: &ModelVersionRecord) {
    let key = keys::model_version(&record.model, &record.version);
    codec::put(coord.as_ref(), &key, record, 0).await.unwrap();
}

/// Assigns `model/version` to `worker`.
pub async fn assign(coord: &SharedCoordinator, worker: &str, model: &str, version: &str) {
    let record = AssignmentRecord {
        worker_id: worker.into(),
        model: model.into(),
        version: version.into(),
        ..Default::default()
    };
    codec::put(
        coord.as_ref(),
        &keys::assignment(worker, model, version),
        &record,
        0,
    )
    .await
    .unwrap();
}

/// The replica record of `model/version` on `worker`, if any.
pub async fn replica(
    coord: &SharedCoordinator,
    model: &str,
    version: &str,
    worker: &str,
) -> Option<ReplicaRecord> {
    codec::get(coord.as_ref(), &keys::replica(model, version, worker))
        .await
        .unwrap()
}

/// Waits until the replica is in `state` and returns it.
pub async fn wait_replica(
    coord: &SharedCoordinator,
    model: &str,
    version: &str,
    worker: &str,
    state: codec::ReplicaState,
) -> ReplicaRecord {
    eventually(
        WITHIN,
        &format!("replica {model}/{version} {state:?}"),
        || async {
            replica(coord, model, version, worker)
                .await
                .is_some_and(|r| r.state == state as i32)
        },
    )
    .await;
    replica(coord, model, version, worker).await.unwrap()
}

/// A gRPC client of the worker.
pub async fn client(running: &Running) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect to the worker")
        .max_decoding_message_size(256 << 20)
}

/// A worker with digits/1 assigned and READY.
pub struct Fixture {
    /// The coordinator.
    pub coord: SharedCoordinator,
    /// The worker.
    pub worker: Running,
    /// A client of it.
    pub client: GrpcInferenceServiceClient<Channel>,
}

/// Starts a worker with `config`, registers and assigns digits/1, waits until it is READY.
pub async fn ready_worker(config: Config) -> Fixture {
    let coord = coordinator();
    register(&coord, &digits_record()).await;
    let id = config.id.clone().unwrap();
    assign(&coord, &id, "digits", "1").await;
    let worker = kiln_worker::start(config, coord.clone()).await.unwrap();
    wait_replica(&coord, "digits", "1", &id, codec::ReplicaState::Ready).await;
    let client = client(&worker).await;
    Fixture {
        coord,
        worker,
        client,
    }
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Bytes {
    values
        .into_iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// A raw-input request of digits over `rows`.
pub fn raw_request(rows: &[Vec<f32>]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "digits".into(),
        model_version: "1".into(),
        id: "req-1".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows.len() as i64, 64],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![f32_bytes(rows.iter().flatten().copied())],
        ..ModelInferRequest::default()
    }
}

/// Decodes little-endian raw output bytes.
pub fn decode_i64(raw: &[u8]) -> Vec<i64> {
    raw.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Decodes little-endian raw output bytes.
pub fn decode_f32(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Asserts labels equal and probabilities within 1e-5 of onnxruntime's for rows `start..`.
pub fn assert_parity(data: &Heldout, start: usize, labels: &[i64], probs: &[f32]) {
    for (i, label) in labels.iter().enumerate() {
        let row = start + i;
        assert_eq!(*label, data.ort_label[row], "label of row {row}");
        for (k, (got, want)) in probs[i * 10..(i + 1) * 10]
            .iter()
            .zip(&data.ort_probabilities[row])
            .enumerate()
        {
            assert!(
                (got - want).abs() <= 1e-5,
                "row {row} class {k}: got {got}, onnxruntime {want}"
            );
        }
    }
}

/// The raw outputs of a response: (labels, probabilities).
pub fn raw_outputs(resp: &ModelInferResponse) -> (Vec<i64>, Vec<f32>) {
    assert_eq!(resp.outputs.len(), 2);
    assert_eq!(resp.raw_output_contents.len(), 2);
    assert_eq!(resp.outputs[0].name, "label");
    assert_eq!(resp.outputs[1].name, "probabilities");
    (
        decode_i64(&resp.raw_output_contents[0]),
        decode_f32(&resp.raw_output_contents[1]),
    )
}

/// A minimal HTTP/1.1 GET; returns the whole response.
#[allow(dead_code)]
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
