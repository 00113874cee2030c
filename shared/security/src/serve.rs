//! Serving a tonic router over plain TCP or TLS, and the plaintext health listener.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tower::{Layer, Service};

use crate::incoming::incoming;
use crate::tls::TlsReloader;

/// Serves `router` on `listener` until `signal`: TLS with `tls` (it must hold a server
/// certificate), else plain TCP. TCP_NODELAY either way (tonic's `Server::tcp_nodelay` does not
/// reach sockets accepted from a stream; without it unary responses wait ~40 ms for delayed
/// ACKs).
pub async fn serve<L, ResBody, F>(
    router: Router<L>,
    listener: TcpListener,
    tls: Option<TlsReloader>,
    signal: F,
) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = ()>,
    L: Layer<Routes>,
    L::Service:
        Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send,
    <L::Service as Service<http::Request<Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(incoming(listener, tls), signal)
                .await
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, signal).await
        }
    }
}

/// A plaintext listener serving only `grpc.health.v1` (`--health-addr`): kubelet's gRPC probes
/// do not speak TLS, and health carries nothing secret. Returns the bound address; the server
/// stops with `signal`.
pub async fn serve_health<S, F>(
    addr: SocketAddr,
    health: S,
    signal: F,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = Server::builder().add_service(health);
    let task = tokio::spawn(async move {
        if let Err(e) = serve(router, listener, None, signal).await {
            tracing::error!(error = %e, "health listener failed");
        }
    });
    Ok((bound, task))
}
