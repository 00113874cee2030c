//! Starting and stopping the gateway.
//!
//! [`start`] binds both endpoints first (port 0 works; the real addresses are in [`Running`]),
//! then spawns the routing watcher and the gRPC server. Health (`grpc.health.v1`), `/readyz` and
//! ServerReady say NOT_SERVING until the routing table has synced once. [`Running::shutdown`]
//! follows the shutdown protocol (STYLE.md habit 3): NOT_SERVING → stop accepting → drain
//! in-flight requests within the grace period → stop the watcher. The gateway holds no lease.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kiln_coord::SharedCoordinator;
use kiln_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use kiln_security::{AuthLayer, AuthPolicy, Requirement, Role};
use kiln_telemetry::{HttpEndpoints, Registry};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::util::MapResponseLayer;

use crate::admin::AdminLink;
use crate::balancer::{Backends, ChannelOptions};
use crate::config::Config;
use crate::forward::{Forwarder, RetryBudget};
use crate::limits::{ClientLimitLayer, ClientLimits};
use crate::metrics::Metrics;
use crate::repository::Repository;
use crate::routing::RoutingTable;
use crate::service::Gateway;
use crate::watcher::Watcher;

type InferenceServer = GrpcInferenceServiceServer<Gateway>;

/// A running gateway. Dropping it without [`Running::shutdown`] leaves its tasks running until
/// the runtime ends.
pub struct Running {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address (/metrics, /healthz, /readyz).
    pub http_addr: SocketAddr,
    table: watch::Receiver<Arc<RoutingTable>>,
    ready: watch::Sender<bool>,
    health: HealthReporter,
    registry: Arc<Mutex<Registry>>,
    gateway: Gateway,
    stop: oneshot::Sender<()>,
    stop_health: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    watcher: JoinHandle<()>,
    readiness: JoinHandle<()>,
    http: HttpEndpoints,
    grace: Duration,
}

/// Binds the endpoints, starts the routing watcher over `coord` and serves.
pub async fn start(config: Config, coord: SharedCoordinator) -> anyhow::Result<Running> {
    config.validate()?;
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("bind gRPC address {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let tls = config.tls.start().context("loading the TLS certificates")?;
    let tokens = config.tokens.start().context("loading the bearer tokens")?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));
    let (ready, ready_rx) = watch::channel(false);
    let http = HttpEndpoints::serve(config.http_addr, registry.clone(), ready_rx.clone())
        .await
        .with_context(|| format!("bind HTTP address {}", config.http_addr))?;

    let backends = Arc::new(Backends::new(ChannelOptions {
        connect_timeout: config.connect_timeout(),
        max_message_bytes: config.max_message_bytes,
        tls: tls.clone(),
    }));
    let admin = AdminLink::new(&config, coord.clone(), tls.clone())?;
    let (table_tx, table) = watch::channel(Arc::new(RoutingTable::default()));
    metrics.register_table(
        &mut registry.lock().unwrap_or_else(|p| p.into_inner()),
        table.clone(),
    );
    let (synced_tx, synced) = watch::channel(false);
    let watcher = Watcher::spawn(
        coord,
        table_tx,
        synced_tx,
        backends.clone(),
        metrics.clone(),
    );

    let budget = RetryBudget::new(config.retry_budget_ratio, config.retry_budget_floor_per_sec);
    let forwarder = Forwarder::new(
        backends,
        budget,
        config.max_attempts,
        metrics.retries.clone(),
    );
    let repository = Repository::new(admin, table.clone());
    let gateway = Gateway::new(
        &config,
        table.clone(),
        ready_rx,
        forwarder,
        metrics,
        repository,
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<InferenceServer>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let readiness = tokio::spawn(mark_ready_when_synced(
        synced,
        ready.clone(),
        health.clone(),
    ));

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kiln_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("build the reflection service")?;
    let inference = InferenceServer::new(gateway.clone())
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (stop_health, stop_health_rx) = oneshot::channel::<()>();
    let health_addr = match config.health_addr {
        Some(addr) => Some(
            kiln_security::serve::serve_health(addr, health_service.clone(), async {
                let _ = stop_health_rx.await;
            })
            .await
            .with_context(|| format!("bind health address {addr}"))?
            .0,
        ),
        None => None,
    };
    let auth = AuthPolicy {
        client_cert_required: tls.as_ref().is_some_and(|t| t.requires_client_cert()),
        tokens,
        rule: method_requirement,
    };
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(MapResponseLayer::new(kiln_proto::edge::reclassify))
        .layer(AuthLayer::new(auth))
        .layer(ClientLimitLayer::new(ClientLimits::from_config(&config)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(inference);
    let server = tokio::spawn(kiln_security::serve::serve(router, listener, tls, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(%grpc_addr, http_addr = %http.addr, ?health_addr, "gateway serving");

    Ok(Running {
        grpc_addr,
        http_addr: http.addr,
        table,
        ready,
        health,
        registry,
        gateway,
        stop,
        stop_health,
        server,
        watcher,
        readiness,
        http,
        grace: config.shutdown_grace(),
    })
}

/// What each gateway method needs: health is open, the repository extension changes the
/// cluster (admin), everything else is inference and metadata (infer).
fn method_requirement(path: &str) -> Requirement {
    if path.starts_with("/inference.GRPCInferenceService/RepositoryModel") {
        Requirement::Role(Role::Admin)
    } else {
        kiln_security::auth::open_health_else(path, Role::Infer)
    }
}

/// Flips readiness (health, /readyz, ServerReady) on once the routing table first synced.
async fn mark_ready_when_synced(
    mut synced: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    health: HealthReporter,
) {
    if synced.wait_for(|s| *s).await.is_err() {
        return;
    }
    ready.send_replace(true);
    health.set_serving::<InferenceServer>().await;
    health.set_service_status("", ServingStatus::Serving).await;
    tracing::info!("gateway ready");
}

impl Running {
    /// The routing table the gateway routes with right now.
    pub fn routing_table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    /// Whether the gateway reports itself ready (routing table synced, not shutting down).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The metrics registry served at `/metrics`.
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// Inference requests being served right now.
    pub fn inflight(&self) -> usize {
        self.gateway.inflight()
    }

    /// Graceful shutdown: NOT_SERVING, stop accepting, drain in-flight requests for up to the
    /// grace period (then cut them), stop the watcher and the HTTP endpoints.
    pub async fn shutdown(self) {
        self.readiness.abort();
        self.ready.send_replace(false);
        self.health.set_not_serving::<InferenceServer>().await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = self.stop.send(());
        let mut server = self.server;
        match tokio::time::timeout(self.grace, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "in-flight requests cut after the grace period");
                server.abort();
            }
        }
        let _ = self.stop_health.send(());
        self.watcher.abort();
        self.http.stop();
        tracing::info!("gateway stopped");
    }
}
