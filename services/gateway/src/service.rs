//! The gateway's `inference.GRPCInferenceService`: the Open Inference Protocol v2 as Triton
//! serves it, so tritonclient and perf_analyzer work unchanged.
//!
//! ModelInfer (and each message of ModelStreamInfer) is admitted under the global in-flight
//! limit, routed by [`RoutingTable::resolve`], stamped with the chosen `model_version` and
//! forwarded as the same prost message (tensor bytes are `bytes::Bytes`: never decoded, never
//! copied) by the [`Forwarder`]. ModelMetadata and ModelConfig are forwarded to a ready replica
//! of the resolved version, so they describe the package itself; ModelStatistics sums every
//! worker's answer; the repository extension is [`crate::repository`]'s (Admin calls to the
//! monitor); the rest is answered from the routing table.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kiln_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use kiln_proto::inference::*;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::error::Error;
use crate::forward::{Forwarder, deadline_of};
use crate::limits::ClientGate;
use crate::metrics::Metrics;
use crate::repository::{self, Repository};
use crate::routing::{RoutingTable, compare_versions};
use crate::shm::SharedMemory;
use crate::stats;

/// Requests of one ModelStreamInfer stream forwarded at once (answers keep request order).
const STREAM_CONCURRENCY: usize = 64;

/// Extensions announced by ServerMetadata: the Triton extensions the gateway implements.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "logging",
    "model_configuration",
    "model_repository",
    "schedule_policy",
    "statistics",
];

/// The gateway's gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    table: watch::Receiver<Arc<RoutingTable>>,
    ready: watch::Receiver<bool>,
    forwarder: Forwarder,
    metrics: Metrics,
    inflight: AtomicUsize,
    max_inflight: usize,
    request_timeout: Duration,
    deadline_margin: Duration,
    stats_timeout: Duration,
    max_tensor_elements: u64,
    max_batch: u64,
    repository: Repository,
    shm: SharedMemory,
}

/// One admitted inference request; releases its in-flight slot when dropped.
struct Admission<'a>(&'a Inner);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.inflight.dec();
    }
}

impl Gateway {
    /// A service reading tables from `table`, answering ServerReady from `ready` and the
    /// repository extension through `repository`.
    pub fn new(
        config: &Config,
        table: watch::Receiver<Arc<RoutingTable>>,
        ready: watch::Receiver<bool>,
        forwarder: Forwarder,
        metrics: Metrics,
        repository: Repository,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                table,
                ready,
                forwarder,
                metrics,
                inflight: AtomicUsize::new(0),
                max_inflight: config.max_inflight,
                request_timeout: config.request_timeout(),
                deadline_margin: config.deadline_margin(),
                stats_timeout: config.stats_timeout(),
                max_tensor_elements: config.max_tensor_elements,
                max_batch: config.max_batch,
                repository,
                shm: SharedMemory::new(config.shared_memory, config.max_message_bytes),
            }),
        }
    }

    /// Inference requests being served right now.
    pub fn inflight(&self) -> usize {
        self.inner.inflight.load(Ordering::Relaxed)
    }

    fn table(&self) -> Arc<RoutingTable> {
        self.inner.table.borrow().clone()
    }

    fn deadline(&self, metadata: &tonic::metadata::MetadataMap) -> Instant {
        deadline_of(
            metadata,
            self.inner.request_timeout,
            self.inner.deadline_margin,
        )
    }

    fn admit(&self) -> Result<Admission<'_>, Error> {
        let inner = &*self.inner;
        if inner.inflight.fetch_add(1, Ordering::Relaxed) >= inner.max_inflight {
            inner.inflight.fetch_sub(1, Ordering::Relaxed);
            inner.metrics.shed.inc();
            return Err(Error::Overloaded {
                limit: inner.max_inflight,
            });
        }
        inner.metrics.inflight.inc();
        Ok(Admission(inner))
    }

    /// Serves one inference request and records its metrics.
    async fn infer_observed(
        &self,
        request: ModelInferRequest,
        deadline: Instant,
    ) -> Result<ModelInferResponse, Status> {
        let started = Instant::now();
        let model = match self.table().model(&request.model_name) {
            Some(_) => request.model_name.clone(),
            None => "_unknown".to_owned(),
        };
        let mut routed = None;
        let result = self
            .infer(request, deadline, &mut routed)
            .await
            .map_err(Status::from);
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        tracing::debug!(
            model,
            version = routed.as_deref().unwrap_or("-"),
            ?code,
            micros = started.elapsed().as_micros() as u64,
            "inference request"
        );
        self.inner
            .metrics
            .observe_request(&model, routed.as_deref(), code, started.elapsed());
        result
    }

    /// Routes and forwards one request; `routed` gets the version chosen.
    async fn infer(
        &self,
        mut request: ModelInferRequest,
        deadline: Instant,
        routed: &mut Option<String>,
    ) -> Result<ModelInferResponse, Error> {
        let _admission = self.admit()?;
        crate::limits::check_shapes(
            &request,
            self.inner.max_tensor_elements,
            self.inner.max_batch,
        )?;
        let to_shared_memory = self.inner.shm.resolve(&mut request)?;
        let table = self.table();
        let route = table.resolve(
            &request.model_name,
            &request.model_version,
            &mut rand::rng(),
        )?;
        // The worker must run the version the gateway chose, not its own default.
        request.model_version.clear();
        request.model_version.push_str(route.version);
        *routed = Some(route.version.to_owned());
        let request = &request;
        self.inner
            .forwarder
            .call(route, deadline, |mut client, remaining| {
                let mut outgoing = Request::new(request.clone());
                outgoing.set_timeout(remaining);
                async move { client.model_infer(outgoing).await }
            })
            .await
            .and_then(|mut response| {
                SharedMemory::deliver(&to_shared_memory, &mut response)?;
                Ok(response)
            })
    }

    /// The deadline of one message of a stream: the stream's own deadline if it has one, else
    /// the default request timeout from now.
    fn message_deadline(&self, stream_deadline: Option<Instant>) -> Instant {
        let own = Instant::now() + self.inner.request_timeout;
        stream_deadline.map_or(own, |d| d.min(own))
    }

    /// ModelStatistics summed over every worker holding a replica of the requested models;
    /// every (model, version) of the table that matches gets an entry, zero if nobody reported.
    async fn statistics(
        &self,
        req: ModelStatisticsRequest,
    ) -> Result<ModelStatisticsResponse, Error> {
        let table = self.table();
        if !req.name.is_empty() {
            let model = table
                .model(&req.name)
                .ok_or_else(|| Error::UnknownModel(req.name.clone()))?;
            if !req.version.is_empty() && !model.versions.contains_key(&req.version) {
                return Err(Error::UnknownVersion {
                    model: req.name.clone(),
                    version: req.version.clone(),
                });
            }
        }
        let wanted = |name: &str, version: &str| {
            (req.name.is_empty() || name == req.name)
                && (req.version.is_empty() || version == req.version)
        };
        let mut expected: Vec<(&str, &str)> = Vec::new();
        let mut addresses: Vec<&str> = Vec::new();
        for (name, model) in table.models() {
            for (version, routes) in &model.versions {
                if wanted(name, version) {
                    expected.push((name, version));
                    addresses.extend(routes.addresses.iter().map(String::as_str));
                }
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        let backends = addresses
            .into_iter()
            .filter_map(|a| self.inner.forwarder.backends().get(a))
            .collect();
        let answers = stats::gather(backends, req.clone(), self.inner.stats_timeout).await;
        let mut model_stats = stats::merge_responses(answers);
        if !req.name.is_empty() {
            model_stats.retain(|s| wanted(&s.name, &s.version));
        }
        for (name, version) in expected {
            if !model_stats
                .iter()
                .any(|s| s.name == name && s.version == version)
            {
                model_stats.push(stats::empty(name, version));
            }
        }
        model_stats.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| compare_versions(&a.version, &b.version))
        });
        Ok(ModelStatisticsResponse { model_stats })
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Gateway {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = *self.inner.ready.borrow();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let req = request.into_inner();
        let table = self.table();
        let ready = table.model(&req.name).is_some_and(|m| {
            if req.version.is_empty() {
                m.versions.values().any(|v| !v.ready.is_empty())
            } else {
                m.versions
                    .get(&req.version)
                    .is_some_and(|v| !v.ready.is_empty())
            }
        });
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "kiln".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS
                .iter()
                .chain(self.inner.shm.enabled().then_some(&"system_shared_memory"))
                .map(|e| (*e).to_owned())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let mut req = request.into_inner();
        let table = self.table();
        let route = table.resolve_stable(&req.name, &req.version)?;
        req.version = route.version.to_owned();
        let req = &req;
        let mut response = self
            .inner
            .forwarder
            .call(route, deadline, |mut client, remaining| {
                let mut outgoing = Request::new(req.clone());
                outgoing.set_timeout(remaining);
                async move { client.model_metadata(outgoing).await }
            })
            .await?;
        // The worker knows its own version; the gateway knows every ready one.
        if let Some(model) = table.model(route.model) {
            let mut versions: Vec<String> = model
                .versions
                .iter()
                .filter(|(_, v)| !v.ready.is_empty())
                .map(|(v, _)| v.clone())
                .collect();
            versions.sort_by(|a, b| compare_versions(a, b));
            response.versions = versions;
        }
        Ok(Response::new(response))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        self.infer_observed(request.into_inner(), deadline)
            .await
            .map(Response::new)
    }

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let stream_deadline = request
            .metadata()
            .contains_key("grpc-timeout")
            .then(|| self.deadline(request.metadata()));
        let gateway = self.clone();
        // With per-client limits on, each message is admitted under them like a ModelInfer.
        let client_gate = request.extensions().get::<ClientGate>().cloned();
        // A message that does not decode (or is over the size limit) ends the stream with its
        // status, after the answers to the messages before it; a request that fails is
        // answered in the stream with its error and id (Triton's convention), and the stream
        // goes on.
        // Each message is forwarded by its own task, so it finishes (and gives back its
        // admission slot) whether or not the caller reads the answers; at most
        // STREAM_CONCURRENCY answers wait for a caller that does not.
        let answers = request
            .into_inner()
            .map(move |message| {
                let (gateway, client_gate) = (gateway.clone(), client_gate.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let message = message.map_err(kiln_proto::edge::reclassify_status)?;
                    let id = message.id.clone();
                    let deadline = gateway.message_deadline(stream_deadline);
                    let answer = match client_gate.as_ref().map(ClientGate::admit).transpose() {
                        Ok(_slot) => gateway.infer_observed(message, deadline).await,
                        Err(limited) => Err(Status::from(limited)),
                    };
                    Ok(match answer {
                        Ok(response) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        Err(status) => ModelStreamInferResponse {
                            error_message: status.message().to_owned(),
                            infer_response: Some(ModelInferResponse {
                                id,
                                ..ModelInferResponse::default()
                            }),
                        },
                    })
                }))
            })
            .buffered(STREAM_CONCURRENCY)
            .map(|joined| {
                joined
                    .map_err(|e| Status::internal(format!("stream message task failed: {e}")))
                    .flatten()
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let mut req = request.into_inner();
        let table = self.table();
        let route = table.resolve_stable(&req.name, &req.version)?;
        req.version = route.version.to_owned();
        let req = &req;
        let response = self
            .inner
            .forwarder
            .call(route, deadline, |mut client, remaining| {
                let mut outgoing = Request::new(req.clone());
                outgoing.set_timeout(remaining);
                async move { client.model_config(outgoing).await }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Ok(Response::new(self.statistics(request.into_inner()).await?))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let only_ready = request.into_inner().ready;
        let models = repository::index(&self.table(), only_ready);
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        self.inner
            .repository
            .load(request.into_inner(), deadline)
            .await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        self.inner
            .repository
            .unload(request.into_inner(), deadline)
            .await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        let regions = self.inner.shm.status(&request.into_inner().name)?;
        Ok(Response::new(SystemSharedMemoryStatusResponse { regions }))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        self.inner.shm.register(&request.into_inner())?;
        Ok(Response::new(SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        self.inner.shm.unregister(&request.into_inner().name)?;
        Ok(Response::new(SystemSharedMemoryUnregisterResponse {}))
    }

    /// No CUDA regions are ever registered: the status is empty and unregistering is a no-op
    /// (what perf_analyzer does first with `--shared-memory`), registering is refused.
    async fn cuda_shared_memory_status(
        &self,
        request: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        let name = request.into_inner().name;
        if !name.is_empty() {
            return Err(Error::UnknownRegion(name).into());
        }
        Ok(Response::new(CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(Error::Unimplemented(
            "CUDA shared memory is not supported: workers may run on other hosts; use system \
             shared memory (--shared-memory) or send tensors in the request",
        )
        .into())
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Ok(Response::new(CudaSharedMemoryUnregisterResponse {}))
    }

    /// The gateway's own log settings (each worker serves its own).
    async fn log_settings(
        &self,
        request: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        kiln_telemetry::logs::update(request.get_ref())
            .map(Response::new)
            .map_err(|e| Error::InvalidRequest(e.to_string()).into())
    }
}
