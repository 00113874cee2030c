//! kiln-monitor: Kiln's control plane.
//!
//! A monitor instance serves the `kiln.v1.Admin` and `kiln.v1.Telemetry` APIs (plus gRPC health
//! and reflection; every instance accepts profile pushes, see [`telemetry`]) and the
//! HTTP endpoints (`/metrics`, `/healthz`, `/readyz`), and runs a leader-elected controller:
//! several instances may run, exactly one reconciles at a time ([`Running::leader`]), turning
//! deployments into assignments with the pure placement function [`plan()`].
//!
//! ```no_run
//! # async fn demo(coord: kiln_coord::SharedCoordinator) -> anyhow::Result<()> {
//! let running = kiln_monitor::start(kiln_monitor::Config::default(), coord).await?;
//! println!("admin API on {}", running.grpc_addr);
//! kiln_telemetry::shutdown_signal().await;
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Shutdown follows the protocol of every Kiln service: health NOT_SERVING → stop accepting →
//! drain in-flight requests within the grace period → stop the controller (resign, revoke the
//! lease, so a standby leads at once).

mod admin;
mod config;
mod controller;
pub mod dashboard;
pub mod drift;
mod error;
mod metrics;
pub mod plan;
mod reconcile;
pub mod reference;
mod state;
mod task;
pub mod telemetry;
pub mod watch;
mod watch_metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kiln_coord::SharedCoordinator;
use kiln_proto::kiln::v1::admin_server::AdminServer;
use kiln_proto::kiln::v1::telemetry_server::TelemetryServer;
use kiln_telemetry::{HttpEndpoints, Registry};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch as signal};
use tonic::transport::Server;

pub use admin::AdminService;
pub use config::Config;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use plan::{Assignment, ClusterState, Plan, PlanIssue, plan, retirements};
pub use telemetry::{ProfileStore, TelemetryService};
pub use watch::{Watch, WatchConfig};

use controller::{Controller, ControllerSettings};
use task::Task;

/// A running monitor instance. Call [`Running::shutdown`] to stop it gracefully; dropping it
/// aborts its tasks (the election lease then expires after its TTL).
pub struct Running {
    /// The bound gRPC address (Admin, health, reflection).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address (/metrics, /healthz, /readyz, the dashboard at /).
    pub http_addr: SocketAddr,
    /// What the watch loop judged last (drift, SLOs, alerts).
    pub watch: Arc<Watch>,
    stop_watch: signal::Sender<bool>,
    watcher: Task,
    leader: signal::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    ready: signal::Sender<bool>,
    stop_server: oneshot::Sender<()>,
    server: Task,
    _health_listener: Option<Task>,
    controller: Controller,
    http: HttpEndpoints,
    grace: Duration,
}

/// What each monitor method needs: kiln.v1.Admin changes the cluster (an admin token when
/// tokens are on), the rest is for Kiln's own processes (client certificates) or open (health).
fn method_requirement(path: &str) -> kiln_security::Requirement {
    if path.starts_with("/kiln.v1.Admin/") {
        kiln_security::Requirement::Role(kiln_security::Role::Admin)
    } else {
        kiln_security::auth::open_health_else_peer(path)
    }
}

/// Starts a monitor: binds both ports first (port 0 picks free ones), then serves and campaigns
/// in the background.
pub async fn start(config: Config, coord: SharedCoordinator) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the monitor gRPC address {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let tls = config.tls.start().context("loading the TLS certificates")?;
    let tokens = config.tokens.start().context("loading the bearer tokens")?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let (ready, ready_rx) = signal::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    health
        .set_serving::<TelemetryServer<TelemetryService>>()
        .await;
    let profiles = Arc::new(
        ProfileStore::new(
            config.telemetry_window_secs.max(1).saturating_mul(1000),
            config.telemetry_windows,
            config.telemetry_versions,
        )
        .with_max_bytes(config.telemetry_max_bytes),
    );
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kiln_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let admin_service = AdminService::new(coord.clone(), config.package_root.clone())
        .with_repository(config.repository.clone())
        .with_profiles(profiles.clone());
    let watch_state = Arc::new(Watch::default());
    watch_metrics::register(&mut registry, watch_state.clone());
    let dashboard = dashboard::router(dashboard::Dashboard {
        coord: coord.clone(),
        profiles: profiles.clone(),
        references: admin_service.references(),
        watch: watch_state.clone(),
    });
    let http = HttpEndpoints::serve_with(
        config.http_addr,
        Arc::new(Mutex::new(registry)),
        ready_rx,
        dashboard,
    )
    .await
    .with_context(|| format!("binding the monitor HTTP address {}", config.http_addr))?;
    let http_addr = http.addr;
    let admin = AdminServer::new(admin_service.clone())
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let telemetry = TelemetryServer::new(TelemetryService::new(
        profiles.clone(),
        metrics.telemetry_store_bytes.clone(),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);

    let (stop_server, stop_rx) = oneshot::channel::<()>();
    let health_listener = match config.health_addr {
        Some(addr) => Some(Task::from_handle(
            kiln_security::serve::serve_health(
                addr,
                health_service.clone(),
                std::future::pending(),
            )
            .await
            .with_context(|| format!("binding the health address {addr}"))?
            .1,
        )),
        None => None,
    };
    let auth = kiln_security::AuthPolicy {
        client_cert_required: tls
            .as_ref()
            .is_some_and(kiln_security::TlsReloader::requires_client_cert),
        tokens,
        rule: method_requirement,
    };
    // Explicit limits; no max_connection_age (setting it needs the grace too: tonic panic trap).
    let router = Server::builder()
        .timeout(Duration::from_secs(config.request_timeout_secs.max(1)))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(kiln_security::AuthLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(admin)
        .add_service(telemetry);
    let server = Task::spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = kiln_security::serve::serve(router, listener, tls, shutdown).await {
            tracing::error!(error = %e, "monitor gRPC server failed");
        }
    });

    let settings = ControllerSettings {
        name: config
            .instance_name
            .clone()
            .unwrap_or_else(|| grpc_addr.to_string()),
        lease_ttl: config.lease_ttl(),
        interval: config.reconcile_interval(),
    };
    let controller = Controller::spawn(coord.clone(), settings, metrics);
    let leader = controller.leader();
    let (stop_watch, stop_watch_rx) = signal::channel(false);
    let watcher = watch::spawn(
        config.watch(),
        watch::Deps {
            coord,
            profiles,
            references: admin_service.references(),
            admin: admin_service,
            admin_url: format!("http://{grpc_addr}"),
            leader: leader.clone(),
        },
        watch_state.clone(),
        stop_watch_rx,
    );
    ready.send_replace(true);
    tracing::info!(%grpc_addr, %http_addr, "monitor started");
    Ok(Running {
        grpc_addr,
        http_addr,
        watch: watch_state,
        stop_watch,
        watcher,
        leader,
        health,
        ready,
        stop_server,
        server,
        _health_listener: health_listener,
        controller,
        http,
        grace: Duration::from_secs(config.shutdown_grace_secs),
    })
}

impl Running {
    /// Whether this instance leads the controller, as it changes.
    pub fn leader(&self) -> signal::Receiver<bool> {
        self.leader.clone()
    }

    /// Whether this instance leads the controller right now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Graceful shutdown: health NOT_SERVING → stop accepting → drain in-flight requests within
    /// the grace period → stop the controller (resign and revoke the election lease).
    pub async fn shutdown(self) {
        tracing::info!("monitor shutting down");
        self.ready.send_replace(false);
        self.health
            .set_not_serving::<AdminServer<AdminService>>()
            .await;
        self.health
            .set_not_serving::<TelemetryServer<TelemetryService>>()
            .await;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = self.stop_server.send(());
        self.server.join(self.grace).await;
        let _ = self.stop_watch.send(true);
        self.watcher.join(Duration::from_secs(1)).await;
        self.controller.stop().await;
        self.http.stop();
        tracing::info!("monitor stopped");
    }
}
