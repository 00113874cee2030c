//! A small in-process `inference.GRPCInferenceService` for integration tests: any model name is
//! a 1-input FP32 model (`x`, per-item dims `[4]`, `max_batch_size` 8) whose output `y` is
//! `2 * x`. It can stall every call once (a global pause, as wrk2's demo does) and counts the
//! inferences of each model.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use kiln_proto::inference::model_infer_response::InferOutputTensor;
use kiln_proto::inference::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Per-item input size.
pub const FEATURES: usize = 4;

#[derive(Default)]
struct State {
    /// `(after, length)`: the first call arms a stall starting `after` later.
    stall: Option<(Duration, Duration)>,
    /// The armed stall: calls in `[from, until)` wait until `until`.
    armed: Option<(Instant, Instant)>,
    /// Inferences per model name.
    calls: BTreeMap<String, u64>,
    /// Every input value received, in order (only kept when `keep_inputs`).
    inputs: Vec<f32>,
    keep_inputs: bool,
}

/// The service; clone it to look at its counts while it serves.
#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<State>>);

/// A running fake server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub fake: Fake,
    stop: Option<oneshot::Sender<()>>,
}

impl Fake {
    /// Stalls every call for `length` once, `after` the first inference arrives.
    pub fn stall_once(self, after: Duration, length: Duration) -> Self {
        self.0.lock().unwrap().stall = Some((after, length));
        self
    }

    /// Keeps every input value received.
    pub fn keep_inputs(self) -> Self {
        self.0.lock().unwrap().keep_inputs = true;
        self
    }

    /// Inferences per model.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().calls.clone()
    }

    /// Every input value received (with `keep_inputs`).
    pub fn inputs(&self) -> Vec<f32> {
        self.0.lock().unwrap().inputs.clone()
    }

    /// Serves on 127.0.0.1, port 0.
    pub async fn serve(self) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = GrpcInferenceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            fake: self,
            stop: Some(stop),
        }
    }

    /// How long a call arriving now waits (the stall), arming it on the first call.
    fn stall_for(&self, model: &str, values: &[f32]) -> Duration {
        let mut state = self.0.lock().unwrap();
        *state.calls.entry(model.to_string()).or_default() += 1;
        if state.keep_inputs {
            state.inputs.extend_from_slice(values);
        }
        let now = Instant::now();
        if state.armed.is_none()
            && let Some((after, length)) = state.stall
        {
            state.armed = Some((now + after, now + after + length));
        }
        match state.armed {
            Some((from, until)) if from <= now && now < until => until - now,
            _ => Duration::ZERO,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn floats(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Fake {
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
        let tensor = |name: &str| model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![-1, FEATURES as i64],
        };
        Ok(Response::new(ModelMetadataResponse {
            name: request.into_inner().name,
            versions: vec!["1".into()],
            platform: "fake".into(),
            inputs: vec![tensor("x")],
            outputs: vec![tensor("y")],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let req = request.into_inner();
        let (Some(input), Some(raw)) = (req.inputs.first(), req.raw_input_contents.first()) else {
            return Err(Status::invalid_argument("input x: missing"));
        };
        let values = floats(raw);
        let stall = self.stall_for(&req.model_name, &values);
        if !stall.is_zero() {
            tokio::time::sleep(stall).await;
        }
        let doubled: Vec<u8> = values
            .iter()
            .flat_map(|v| (2.0 * v).to_le_bytes())
            .collect();
        Ok(Response::new(ModelInferResponse {
            model_name: req.model_name,
            model_version: "1".into(),
            id: req.id,
            outputs: vec![InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: input.shape.clone(),
                ..Default::default()
            }],
            raw_output_contents: vec![doubled.into()],
            ..Default::default()
        }))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        Ok(Response::new(ModelConfigResponse {
            config: Some(ModelConfig {
                name: request.into_inner().name,
                max_batch_size: 8,
                input: vec![ModelInput {
                    name: "x".into(),
                    dims: vec![FEATURES as i64],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }))
    }

    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Ok(Response::new(ModelStatisticsResponse::default()))
    }

    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Ok(Response::new(RepositoryIndexResponse::default()))
    }
}
