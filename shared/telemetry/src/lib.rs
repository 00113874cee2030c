//! Process plumbing every Kiln service shares.
//!
//! - [`init_tracing`]: one `tracing` subscriber, filtered by `RUST_LOG` (default `info`) and
//!   by the log settings that Triton's `LogSettings` RPC reads and changes ([`logs`]).
//! - [`HttpEndpoints`]: the HTTP side every service serves: `/metrics` (Prometheus text from a
//!   shared [`Registry`]), `/healthz` (the process is up) and `/readyz` (the service says it can
//!   take traffic, from a `watch` flag); [`HttpEndpoints::serve_with`] mounts a service's own
//!   routes beside them.
//! - [`shutdown_signal`]: resolves on SIGINT or SIGTERM, the start of the shutdown protocol.
//! - [`profile`]: the mergeable traffic profiles (feature sketches, output histograms, latency)
//!   that workers push to the monitor.

pub mod logs;
pub mod profile;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
pub use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Installs the global tracing subscriber (idempotent: later calls are ignored); see [`logs`].
pub fn init_tracing() {
    logs::init();
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Mutex<Registry>>,
    ready: watch::Receiver<bool>,
}

/// The running HTTP endpoints of a service.
pub struct HttpEndpoints {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpEndpoints {
    /// Binds `addr` and serves `/metrics`, `/healthz`, `/readyz` until dropped or stopped.
    pub async fn serve(
        addr: SocketAddr,
        registry: Arc<Mutex<Registry>>,
        ready: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        Self::serve_with(addr, registry, ready, Router::new()).await
    }

    /// Like [`HttpEndpoints::serve`], plus the routes of `extra` (a service's own pages, such
    /// as the monitor's dashboard). `extra` must not route `/metrics`, `/healthz` or `/readyz`
    /// (axum panics on overlapping routes).
    pub async fn serve_with(
        addr: SocketAddr,
        registry: Arc<Mutex<Registry>>,
        ready: watch::Receiver<bool>,
        extra: Router,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(Shared { registry, ready })
            .merge(extra);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http endpoint failed");
            }
        });
        Ok(Self { addr, task })
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for HttpEndpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    let registry = s.registry.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
