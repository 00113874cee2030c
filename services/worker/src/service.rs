//! `inference.GRPCInferenceService` as a worker serves it: thin handlers over the
//! [`ModelStore`], the inference flow ([`crate::infer`]) and the descriptions
//! ([`crate::describe`]). Errors go through [`WorkerError`] and its one mapping to statuses.
//!
//! RepositoryModelLoad/Unload are UNIMPLEMENTED on a worker: what it holds is decided by the
//! cluster's controller through assignments. ModelStreamInfer runs each request of the stream in
//! order and answers each with a `ModelStreamInferResponse`, errors in `error_message` (as Triton
//! does), so one bad request does not end the stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use kiln_model::Backend;
use kiln_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use kiln_proto::inference::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::describe;
use crate::error::WorkerError;
use crate::infer::{deadline_from, infer};
use crate::store::{ModelStore, VersionState};

/// The name ServerMetadata reports.
pub const SERVER_NAME: &str = "kiln-worker";
/// Shared memory is the gateway's (`--shared-memory`): it is local to the caller's host, and a
/// worker takes tensors only in the request.
fn no_shared_memory() -> Status {
    WorkerError::Unimplemented(
        "workers take tensors in the request; shared memory is served by the gateway \
         (kiln-gateway --shared-memory) on the caller's host"
            .into(),
    )
    .into()
}

/// The protocol extensions this worker implements.
pub const EXTENSIONS: [&str; 5] = [
    "classification",
    "logging",
    "model_configuration",
    "schedule_policy",
    "statistics",
];

/// The worker's inference service.
#[derive(Clone)]
pub struct InferenceService {
    store: Arc<ModelStore>,
    backend: Backend,
    max_message_bytes: usize,
    draining: Arc<AtomicBool>,
}

impl InferenceService {
    /// A service over `store`; `draining` turns ServerReady false during shutdown.
    pub fn new(
        store: Arc<ModelStore>,
        backend: Backend,
        max_message_bytes: usize,
        draining: Arc<AtomicBool>,
    ) -> Self {
        Self {
            store,
            backend,
            max_message_bytes,
            draining,
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
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
        let ready = !self.draining.load(Ordering::Relaxed);
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self.store.resolve(&r.name, &r.version).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let model = self.store.resolve(&r.name, &r.version)?;
        Ok(Response::new(describe::metadata(&model)))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = deadline_from(request.metadata());
        let resp = infer(
            &self.store,
            request.into_inner(),
            deadline,
            self.max_message_bytes,
        )
        .await?;
        Ok(Response::new(resp))
    }

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let deadline = deadline_from(request.metadata());
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let answer = match next {
                    Ok(req) => {
                        let id = req.id.clone();
                        match infer(&svc.store, req, deadline, svc.max_message_bytes).await {
                            Ok(resp) => Ok(ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(resp),
                            }),
                            Err(e) => Ok(ModelStreamInferResponse {
                                error_message: e.to_string(),
                                infer_response: Some(ModelInferResponse {
                                    id,
                                    ..ModelInferResponse::default()
                                }),
                            }),
                        }
                    }
                    Err(status) => Err(kiln_proto::edge::reclassify_status(status)),
                };
                let end = answer.is_err();
                if tx.send(answer).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let model = self.store.resolve(&r.name, &r.version)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(describe::config(&model, self.backend)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let models = if r.version.is_empty() {
            self.store.loaded(&r.name)
        } else {
            self.store
                .resolve(&r.name, &r.version)
                .into_iter()
                .collect()
        };
        // An assigned version that is not loaded (yet) has no statistics, which is not an error.
        if models.is_empty() && !r.name.is_empty() && !self.store.knows(&r.name, &r.version) {
            return Err(WorkerError::ModelNotFound {
                model: r.name,
                version: r.version,
            }
            .into());
        }
        let model_stats = models
            .iter()
            .map(|m| m.stats.snapshot(m.name(), m.version()))
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let ready_only = request.into_inner().ready;
        let models = self
            .store
            .states()
            .into_iter()
            .filter(|(_, _, state)| !ready_only || *state == VersionState::Ready)
            .map(|(m, v, state)| describe::index_entry(m, v, state))
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(WorkerError::Unimplemented(
            "a worker loads what the cluster assigns to it; deploy models through the \
             kiln Admin API (`kiln deploy`) instead"
                .into(),
        )
        .into())
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(WorkerError::Unimplemented(
            "a worker unloads what the cluster unassigns; undeploy models through the \
             kiln Admin API (`kiln undeploy`) instead"
                .into(),
        )
        .into())
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        Err(no_shared_memory())
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        Err(no_shared_memory())
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        Err(no_shared_memory())
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        Err(no_shared_memory())
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(no_shared_memory())
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Err(no_shared_memory())
    }

    async fn log_settings(
        &self,
        request: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        kiln_telemetry::logs::update(request.get_ref())
            .map(Response::new)
            .map_err(|e| WorkerError::InvalidRequest(e.to_string()).into())
    }
}
