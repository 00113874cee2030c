//! Kiln's inference worker.
//!
//! A worker registers itself in the coordination store under a lease
//! (`/kiln/v1/workers/{id}`), loads the model versions the controller assigns to it
//! (`/kiln/v1/assignments/{id}/{m}/{v}`), publishes each replica's state
//! (`/kiln/v1/replicas/{m}/{v}/{id}`: LOADING → READY or FAILED) and serves them over
//! `inference.GRPCInferenceService`, the Triton-compatible Open Inference Protocol v2, plus
//! `grpc.health.v1` and server reflection, with `/metrics`, `/healthz`, `/readyz` over HTTP.
//!
//! [`start`] binds both ports first (port 0 works; [`Running`] has the real addresses), then
//! spawns the server and the control task ([`agent`]). [`Running::shutdown`] follows the
//! shutdown protocol, built so that a rolling restart loses no request:
//! 1. health NOT_SERVING, and the worker record says `draining`: the controller places a
//!    replacement of every replica elsewhere and unassigns the one here once the replacement is
//!    READY (the agent withdraws and unloads it as for any unassignment);
//! 2. that wait is bounded by `--drain-timeout-secs`, and skipped when no other worker is live;
//! 3. the replicas still here are withdrawn (their keys deleted) and keep serving for
//!    `--unload-delay-ms`, so gateways stop routing here before the server stops;
//! 4. stop accepting, finish in-flight requests (bounded by the grace period), revoke the lease.
//!
//! Modules: [`config`] (flags), [`agent`] (cluster side), [`overrides`] (deployment batching
//! overrides), [`package`] (verify and load),
//! [`store`] (loaded versions), [`executor`] (the dynamic batcher: queue + compute threads), [`batch`] (its batch-forming
//! policy), [`tensors`] (request
//! decoding and validation), [`classify`] (Triton's classification outputs), [`infer`] (one request end to end), [`service`] (the gRPC
//! handlers), [`describe`] (metadata and config), [`stats`] and [`metrics`] (counters),
//! [`limits`] (size error classification), [`priority`] (intake below compute), [`error`] (the one status mapping), [`telemetry`]
//! (traffic profiles pushed to the monitors; stopped, after a last flush, once the server has
//! stopped in step 4).

pub mod agent;
pub mod batch;
pub mod classify;
pub mod config;
pub mod describe;
pub mod error;
pub mod executor;
pub mod infer;
pub mod metrics;
pub mod overrides;
pub mod package;
pub mod priority;
pub mod service;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tensors;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kiln_coord::codec::{self, WorkerRecord};
use kiln_coord::{LeaseSession, SharedCoordinator, keys};
use kiln_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use kiln_telemetry::{HttpEndpoints, Registry};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

pub use config::Config;
pub use error::WorkerError;

use crate::agent::{Agent, AgentConfig};
use crate::metrics::WorkerMetrics;
use crate::service::InferenceService;
use crate::store::ModelStore;
use crate::telemetry::push::PushTask;
use crate::telemetry::{MAX_CLOSED, ProfilerSettings, ProfilingThread, Telemetry};
use kiln_security::serve::{serve, serve_health};
use kiln_security::{AuthLayer, AuthPolicy, TlsReloader};

type InferenceServer = GrpcInferenceServiceServer<InferenceService>;

/// The gRPC services a worker serves (and advertises through reflection).
pub const SERVED: [&str; 3] = [
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

/// A started worker. Dropping it without [`Running::shutdown`] stops it abruptly: the server
/// stops accepting, the lease is no longer kept alive, and the keys vanish when it expires.
pub struct Running {
    /// The worker id (as registered).
    pub id: String,
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The address advertised in the coordination store.
    pub advertise_addr: String,
    coord: SharedCoordinator,
    session: LeaseSession,
    health: HealthReporter,
    ready: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    store: Arc<ModelStore>,
    http: HttpEndpoints,
    stop_agent: watch::Sender<bool>,
    drain_agent: watch::Sender<bool>,
    agent: JoinHandle<()>,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    health_listener: Option<JoinHandle<()>>,
    grace: Duration,
    drain_timeout: Duration,
    unload_delay: Duration,
    telemetry: Option<TelemetryTasks>,
}

/// The telemetry side of a running worker.
struct TelemetryTasks {
    stop: watch::Sender<bool>,
    push: JoinHandle<()>,
    profiling: ProfilingThread,
}

impl TelemetryTasks {
    async fn stop(self) {
        self.stop.send_replace(true);
        let flush = telemetry::push::FLUSH_TIMEOUT + Duration::from_millis(500);
        if tokio::time::timeout(flush, self.push).await.is_err() {
            tracing::debug!("telemetry push task did not stop in time");
        }
        let profiling = self.profiling;
        let _ = tokio::task::spawn_blocking(move || profiling.stop()).await;
    }
}

/// Starts the profiling thread and the push task when telemetry is on.
fn start_telemetry(
    config: &Config,
    id: &str,
    coord: &SharedCoordinator,
    registry: &Arc<Mutex<Registry>>,
    tls: Option<TlsReloader>,
) -> anyhow::Result<Option<(Arc<Telemetry>, TelemetryTasks)>> {
    let Some(period) = config.telemetry_interval() else {
        return Ok(None);
    };
    let rate = config.telemetry_sample_rate;
    anyhow::ensure!(
        (0.0..=1.0).contains(&rate),
        "--telemetry-sample-rate {rate} must be between 0 and 1"
    );
    let settings = ProfilerSettings {
        period,
        max_closed: MAX_CLOSED,
        sample_rate: rate,
        max_rows_per_sec: config.telemetry_max_rows_per_sec,
        buffer_rows: config.telemetry_buffer_rows,
        buffer_bytes: config.telemetry_buffer_bytes,
    };
    let telemetry = Telemetry::new(id, settings, registry);
    let push = PushTask::new(
        telemetry.clone(),
        coord.clone(),
        config.monitors.clone(),
        tls,
    )?;
    let profiling =
        ProfilingThread::start(telemetry.clone()).context("cannot start the profiling thread")?;
    let (stop, stop_rx) = watch::channel(false);
    let push = push.spawn(stop_rx);
    Ok(Some((
        telemetry,
        TelemetryTasks {
            stop,
            push,
            profiling,
        },
    )))
}

/// Starts a worker: binds, registers, follows assignments, serves.
pub async fn start(config: Config, coord: SharedCoordinator) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot bind gRPC address {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let tls = config
        .tls
        .start()
        .context("cannot load the TLS certificates")?;
    let id = config
        .id
        .clone()
        .unwrap_or_else(|| config::default_worker_id(grpc_addr.port()));
    anyhow::ensure!(
        keys::valid_segment(&id),
        "worker id {id:?} must be letters, digits, '-', '_' or '.'"
    );
    // Fail early on a backend that is not compiled in, rather than at the first load.
    config
        .backend
        .device()
        .with_context(|| format!("backend {}", config.backend))?;
    let advertise_addr = config
        .advertise_addr
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());

    let store = Arc::new(ModelStore::default());
    let registry = Arc::new(Mutex::new(Registry::default()));
    let metrics = WorkerMetrics::register(&registry, store.clone());
    let session_metrics = kiln_coord::SessionMetrics::register(
        &mut registry.lock().unwrap_or_else(|p| p.into_inner()),
    );
    let (telemetry, telemetry_tasks) =
        match start_telemetry(&config, &id, &coord, &registry, tls.clone())? {
            Some((t, tasks)) => (Some(t), Some(tasks)),
            None => (None, None),
        };
    let (ready, ready_rx) = watch::channel(true);
    let http = HttpEndpoints::serve(config.http_addr, registry, ready_rx)
        .await
        .with_context(|| format!("cannot bind HTTP address {}", config.http_addr))?;

    let draining = Arc::new(AtomicBool::new(false));
    let service = InferenceService::new(
        store.clone(),
        config.backend,
        config.max_message_bytes,
        draining.clone(),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<InferenceServer>().await;
    // Advertise what this server serves, not every service of kiln-proto's descriptor set.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kiln_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVED[0])
        .with_service_name(SERVED[1])
        .with_service_name(SERVED[2])
        .build_v1()
        .context("cannot build the reflection service")?;
    let inference = GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let (stop_server, stopped) = oneshot::channel::<()>();
    let health_listener = match config.health_addr {
        Some(addr) => Some(
            serve_health(addr, health_service.clone(), std::future::pending())
                .await
                .with_context(|| format!("cannot bind health address {addr}"))?
                .1,
        ),
        None => None,
    };
    let auth = AuthPolicy {
        client_cert_required: tls.as_ref().is_some_and(TlsReloader::requires_client_cert),
        tokens: None,
        rule: |path| kiln_security::auth::open_health_else_peer(path),
    };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(1024))
        .layer(tower::util::MapResponseLayer::new(
            kiln_proto::edge::reclassify::<tonic::body::Body>,
        ))
        .layer(AuthLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(inference);
    let server = tokio::spawn(serve(router, listener, tls, async {
        let _ = stopped.await;
    }));

    let record = WorkerRecord {
        id: id.clone(),
        address: advertise_addr.clone(),
        backend: config.backend.name().to_string(),
        device: config.backend.device_description(),
        capacity_bytes: config
            .capacity_bytes
            .unwrap_or_else(config::host_memory_bytes),
        labels: config.labels.iter().cloned().collect(),
        draining: false,
    };
    let session = LeaseSession::start(coord.clone(), config.lease_ttl());
    session_metrics.follow(session.subscribe());
    let agent = Agent::new(
        coord.clone(),
        AgentConfig {
            id: id.clone(),
            record,
            backend: config.backend,
            compute_threads: config.compute_threads,
            dynamic_batching: !config.no_dynamic_batching,
            package_root: config.package_root.clone(),
            unload_delay: config.unload_delay(),
            telemetry,
        },
        store.clone(),
        metrics,
    );
    let (stop_agent, agent_stop_rx) = watch::channel(false);
    let (drain_agent, agent_drain_rx) = watch::channel(false);
    let agent = tokio::spawn(agent.run(session.subscribe(), agent_drain_rx, agent_stop_rx));
    tracing::info!(
        id,
        grpc = %grpc_addr,
        http = %http.addr,
        advertise = advertise_addr,
        backend = config.backend.name(),
        coordinator = coord.kind(),
        "worker started"
    );
    Ok(Running {
        id,
        grpc_addr,
        http_addr: http.addr,
        advertise_addr,
        coord,
        session,
        health,
        ready,
        draining,
        store,
        http,
        stop_agent,
        drain_agent,
        agent,
        stop_server,
        server,
        health_listener,
        grace: config.shutdown_grace(),
        drain_timeout: config.drain_timeout(),
        unload_delay: config.unload_delay(),
        telemetry: telemetry_tasks,
    })
}

impl Running {
    /// Shuts down gracefully, following the protocol in the crate docs.
    pub async fn shutdown(self) {
        tracing::info!(id = self.id, "shutting down");
        self.health.set_not_serving::<InferenceServer>().await;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.ready.send_replace(false);

        // 1-2: let the controller move the replicas away while this worker keeps serving.
        self.drain_agent.send_replace(true);
        self.wait_for_replacements().await;
        // The agent would re-register under a new lease; from here on the worker only leaves.
        let _ = self.stop_agent.send(true);
        let mut agent = self.agent;
        if tokio::time::timeout(Duration::from_secs(1), &mut agent)
            .await
            .is_err()
        {
            // Stuck on a slow store: stop it here, or a write it is making (a drain's or a
            // load's READY) could put replica keys back after step 3 withdraws them.
            agent.abort();
            let _ = agent.await;
        }

        // 3: withdraw what is left and give gateways time to see it.
        let left = self.store.states();
        for (model, version, _) in &left {
            let key = keys::replica(model, version, &self.id);
            if let Err(e) = self.coord.delete(&key).await {
                tracing::warn!(error = %e, key, "cannot withdraw replica; its lease ends it");
            }
        }
        if !left.is_empty() && !self.unload_delay.is_zero() {
            tracing::info!(replicas = left.len(), delay = ?self.unload_delay, "withdrew replicas; serving on until gateways stop routing here");
            tokio::time::sleep(self.unload_delay).await;
        }
        self.draining.store(true, Ordering::Relaxed);

        let _ = self.stop_server.send(());
        if let Some(health) = &self.health_listener {
            health.abort();
        }
        let mut server = self.server;
        match tokio::time::timeout(self.grace, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "in-flight requests cut off after the grace period");
                server.abort();
            }
        }

        // Every request is answered: the last window is complete.
        if let Some(t) = self.telemetry {
            t.stop().await;
        }
        self.session.close().await;
        self.http.stop();
        self.store.clear();
        tracing::info!(id = self.id, "worker stopped");
    }

    /// Whether another live worker that is not draining exists.
    async fn others_can_take_over(&self) -> bool {
        match codec::list::<WorkerRecord>(self.coord.as_ref(), keys::WORKERS).await {
            Ok(ws) => ws.iter().any(|w| w.id != self.id && !w.draining),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list workers; not waiting for replacements");
                false
            }
        }
    }

    /// Waits until the controller has moved every replica away (the store is empty), the drain
    /// timeout passes, or no other worker is there to take them.
    async fn wait_for_replacements(&self) {
        if self.drain_timeout.is_zero() || self.store.states().is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for n in 0u64.. {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if self.store.states().is_empty() {
                tracing::info!("every replica moved to another worker");
                return;
            }
            // Every second: with no other worker left to take them (all gone or draining too,
            // e.g. the whole pool stops), waiting is pointless.
            if n % 20 == 0 && !self.others_can_take_over().await {
                tracing::info!("no other worker to take the replicas; not waiting");
                return;
            }
            tick.tick().await;
        }
        tracing::warn!(timeout = ?self.drain_timeout, left = self.store.states().len(), "drain timed out; leaving with replicas still here");
    }
}
