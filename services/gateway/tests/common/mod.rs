//! Test support: a fake v2 worker on the other side of the wire, and helpers to start the
//! gateway, register replicas and build requests.
//!
//! The fake is a test double for `kiln-worker` (which the gateway must not depend on): a tonic
//! `GrpcInferenceService` on a loopback port 0 that echoes its inputs, counts calls and can be
//! told to fail, sleep, wait on a gate or stop. Real workers are exercised end to end elsewhere.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kiln_coord::codec::{self, DeploymentRecord, DeploymentVersion, ReplicaRecord, ReplicaState};
use kiln_coord::conformance::eventually;
use kiln_coord::{Coordinator, MemoryCoordinator, SharedCoordinator, keys};
use kiln_gateway::{Config, Running};
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use kiln_proto::inference::model_infer_request::InferInputTensor;
use kiln_proto::inference::model_infer_response::InferOutputTensor;
use kiln_proto::inference::*;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};

/// How the fake answers ModelInfer.
#[derive(Clone)]
pub enum Behaviour {
    /// Echo every input as an output, raw bytes included.
    Echo,
    /// Answer with this status.
    Fail(Code),
    /// Answer with this status to the first `n` calls, then echo.
    FailFirst(Code, usize),
    /// Sleep, then echo.
    Sleep(Duration),
    /// Wait for a permit of the semaphore, then echo.
    Gate(Arc<Semaphore>),
}

struct FakeState {
    name: String,
    behaviour: Mutex<Behaviour>,
    calls: AtomicUsize,
    /// `model_version` of the last ModelInfer, and its `grpc-timeout` header.
    last: Mutex<(String, Option<String>)>,
    /// inference_count reported by ModelStatistics for ("m", "1").
    stats_count: u64,
}

#[derive(Clone)]
struct FakeService(Arc<FakeState>);

/// A running fake worker.
pub struct FakeWorker {
    /// Worker id.
    pub name: String,
    /// Its bound address.
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeWorker {
    /// Starts a fake worker named `name` on a free loopback port.
    pub async fn start(name: &str, behaviour: Behaviour) -> Self {
        Self::start_with_stats(name, behaviour, 0).await
    }

    /// Like [`FakeWorker::start`], reporting `stats_count` inferences of model m version 1.
    pub async fn start_with_stats(name: &str, behaviour: Behaviour, stats_count: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState {
            name: name.to_owned(),
            behaviour: Mutex::new(behaviour),
            calls: AtomicUsize::new(0),
            last: Mutex::new((String::new(), None)),
            stats_count,
        });
        let (stop, stop_rx) = oneshot::channel::<()>();
        let service = GrpcInferenceServiceServer::new(FakeService(state.clone()))
            .max_decoding_message_size(usize::MAX);
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            name: name.to_owned(),
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// ModelInfer calls received so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The `model_version` and `grpc-timeout` of the last ModelInfer received.
    pub fn last(&self) -> (String, Option<String>) {
        self.state.last.lock().unwrap().clone()
    }

    /// Changes how ModelInfer is answered.
    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Stops the server (its port then refuses connections) and waits until it is down.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

fn echo(state: &FakeState, req: ModelInferRequest) -> ModelInferResponse {
    let outputs = req
        .inputs
        .iter()
        .map(|i: &InferInputTensor| InferOutputTensor {
            name: i.name.clone(),
            datatype: i.datatype.clone(),
            shape: i.shape.clone(),
            ..Default::default()
        })
        .collect();
    let mut parameters = std::collections::HashMap::new();
    parameters.insert(
        "worker".to_owned(),
        InferParameter {
            parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(
                state.name.clone(),
            )),
        },
    );
    ModelInferResponse {
        model_name: req.model_name,
        model_version: req.model_version,
        id: req.id,
        parameters,
        outputs,
        raw_output_contents: req.raw_input_contents,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for FakeService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        _: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse::default()))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(ModelMetadataResponse {
            name: req.name,
            versions: vec![req.version],
            platform: format!("fake:{}", self.0.name),
            inputs: vec![model_metadata_response::TensorMetadata {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 4],
            }],
            outputs: Vec::new(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let call = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap().to_owned());
        let req = request.into_inner();
        *self.0.last.lock().unwrap() = (req.model_version.clone(), timeout);
        let behaviour = self.0.behaviour.lock().unwrap().clone();
        match behaviour {
            Behaviour::Echo => {}
            Behaviour::FailFirst(code, n) if call <= n => {
                return Err(Status::new(code, format!("fake {} says no", self.0.name)));
            }
            Behaviour::FailFirst(..) => {}
            Behaviour::Fail(code) => {
                return Err(Status::new(code, format!("fake {} says no", self.0.name)));
            }
            Behaviour::Sleep(d) => tokio::time::sleep(d).await,
            Behaviour::Gate(gate) => {
                let _permit = gate.acquire().await.unwrap();
            }
        }
        Ok(Response::new(echo(&self.0, req)))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(ModelConfigResponse {
            config: Some(ModelConfig {
                name: req.name,
                platform: format!("fake:{}:{}", self.0.name, req.version),
                max_batch_size: 8,
                ..Default::default()
            }),
        }))
    }

    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let n = self.0.stats_count;
        let d = |count, ns| Some(StatisticDuration { count, ns });
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: vec![ModelStatistics {
                name: "m".into(),
                version: "1".into(),
                last_inference: n,
                inference_count: n,
                execution_count: n,
                inference_stats: Some(InferStatistics {
                    success: d(n, n * 1000),
                    queue: d(n, n * 10),
                    ..Default::default()
                }),
                batch_stats: vec![InferBatchStatistics {
                    batch_size: 1,
                    compute_infer: d(n, n * 100),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }))
    }

    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Ok(Response::new(RepositoryIndexResponse::default()))
    }
}

/// Writes the replica record of `worker` for `model`/`version`.
pub async fn register(
    coord: &dyn Coordinator,
    model: &str,
    version: &str,
    worker: &FakeWorker,
    state: ReplicaState,
) {
    register_at(
        coord,
        model,
        version,
        &worker.name,
        &worker.addr.to_string(),
        state,
    )
    .await;
}

/// Writes a replica record with an explicit address.
pub async fn register_at(
    coord: &dyn Coordinator,
    model: &str,
    version: &str,
    worker_id: &str,
    address: &str,
    state: ReplicaState,
) {
    let record = ReplicaRecord {
        model: model.into(),
        version: version.into(),
        worker_id: worker_id.into(),
        address: address.into(),
        state: state as i32,
        reason: String::new(),
        ..Default::default()
    };
    codec::put(coord, &keys::replica(model, version, worker_id), &record, 0)
        .await
        .unwrap();
}

/// Writes the deployment of `model` with these (version, weight) pairs.
pub async fn deploy(coord: &dyn Coordinator, model: &str, weights: &[(&str, u32)]) {
    let record = DeploymentRecord {
        model: model.into(),
        versions: weights
            .iter()
            .map(|(v, w)| DeploymentVersion {
                version: (*v).into(),
                replicas: 1,
                traffic_weight: *w,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    codec::put(coord, &keys::deployment(model), &record, 0)
        .await
        .unwrap();
}

/// Starts the gateway on port 0 with `config` tweaks and waits until it is ready.
pub async fn gateway(coord: SharedCoordinator, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::ephemeral();
    tweak(&mut config);
    let running = kiln_gateway::start(config, coord).await.unwrap();
    eventually(Duration::from_secs(10), "gateway ready", || async {
        running.is_ready()
    })
    .await;
    running
}

/// Waits until the routing table has `n` ready replicas of `model` version `version`.
pub async fn wait_ready(running: &Running, model: &str, version: &str, n: usize) {
    eventually(
        Duration::from_secs(15),
        &format!("{n} ready replicas of {model}/{version}"),
        || async {
            running
                .routing_table()
                .model(model)
                .and_then(|m| m.versions.get(version))
                .map_or(0, |v| v.ready.len())
                == n
        },
    )
    .await;
}

/// A client of the gateway.
pub async fn client(running: &Running) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
}

/// The most common setup: one echoing fake worker `wa` holding `m`/`1`, a gateway (configured
/// by `tweak`) that routes to it, and a client of the gateway.
pub struct EchoSetup {
    /// The coordinator both registered with.
    pub coord: Arc<MemoryCoordinator>,
    /// The worker (it stops when dropped: bind it, as `worker: _worker`, not `..`).
    pub worker: FakeWorker,
    /// The gateway.
    pub gw: Running,
    /// A client of the gateway.
    pub client: GrpcInferenceServiceClient<Channel>,
}

/// Starts an [`EchoSetup`].
pub async fn echo_setup(tweak: impl FnOnce(&mut Config)) -> EchoSetup {
    let coord = Arc::new(MemoryCoordinator::new());
    let worker = FakeWorker::start("wa", Behaviour::Echo).await;
    register(&*coord, "m", "1", &worker, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), tweak).await;
    wait_ready(&gw, "m", "1", 1).await;
    let client = client(&gw).await;
    EchoSetup {
        coord,
        worker,
        gw,
        client,
    }
}

/// A request for `model`/`version` with one raw FP32 input `x` holding `raw`.
pub fn request(model: &str, version: &str, raw: Bytes) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        id: "req-1".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, (raw.len() / 4) as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

/// Four FP32 values as raw little-endian bytes.
pub fn four_floats() -> Bytes {
    Bytes::from(
        [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

/// The worker that served a response (the fake's `worker` parameter).
pub fn served_by(response: &ModelInferResponse) -> String {
    match &response.parameters["worker"].parameter_choice {
        Some(infer_parameter::ParameterChoice::StringParam(s)) => s.clone(),
        other => panic!("no worker parameter: {other:?}"),
    }
}

/// The text of the gateway's `/metrics`.
pub fn metrics_text(running: &Running) -> String {
    let registry = running.registry();
    let registry = registry.lock().unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// The value of an unlabelled metric in the gateway's registry (0 when absent).
pub fn metric_value(running: &Running, name: &str) -> f64 {
    metrics_text(running)
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
