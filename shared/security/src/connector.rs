//! The client side of TLS: tonic channels whose connections dial TLS themselves.
//!
//! Every new connection takes the client config current at that moment, so a reconnect after a
//! rotation presents the new certificate. The server name checked against the certificate is
//! the URL's host (a DNS name or an IP address: `kiln certs dev` puts both in its certificates).
//! URLs keep the `http://` scheme on the wire (TLS is below tonic here); `https://` is accepted
//! and means the same.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::tls::TlsReloader;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Dials TCP, then TLS with the reloader's current client config.
#[derive(Clone)]
pub struct TlsConnector {
    tls: TlsReloader,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.client_config();
        Box::pin(async move {
            let config = config.ok_or("TLS to a server needs a CA bundle (--tls-ca)")?;
            let host = uri.host().ok_or("URL without a host")?;
            let port = uri.port_u16().unwrap_or(443);
            Ok(TokioIo::new(dial(host, port, config).await?))
        })
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// TCP, then TLS verifying the server's certificate against `host` (a DNS name or an IP).
async fn dial(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<TlsStream, BoxError> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_owned())?;
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?)
}

/// Dials one of several members (host, port) of a cluster over TLS, all at once, and keeps
/// the first that answers: a reconnect after its member failed lands on a live one. Each new
/// connection takes the reloader's current client config.
#[derive(Clone)]
pub struct FailoverConnector {
    tls: TlsReloader,
    members: Arc<[(String, u16)]>,
    timeout: Duration,
}

impl tower::Service<Uri> for FailoverConnector {
    type Response = TokioIo<TlsStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let config = self.tls.client_config();
        let (members, timeout) = (self.members.clone(), self.timeout);
        Box::pin(async move {
            let config = config.ok_or("TLS to a server needs a CA bundle")?;
            let attempts = members.iter().map(|(host, port)| {
                let (host, port, config) = (host.clone(), *port, config.clone());
                Box::pin(async move {
                    match tokio::time::timeout(timeout, dial(&host, port, config)).await {
                        Ok(dialed) => dialed.map_err(|e| format!("{host}:{port}: {e}").into()),
                        Err(_) => Err(BoxError::from(format!("{host}:{port}: connect timed out"))),
                    }
                })
            });
            let (stream, _) = futures::future::select_ok(attempts).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A lazily connected channel to the first live member of `members` over TLS with `tls`
/// ([`FailoverConnector`]); `endpoint` gives the HTTP/2 settings (its URL only names the
/// channel), `timeout` bounds each dial.
pub fn failover_channel(
    endpoint: Endpoint,
    tls: &TlsReloader,
    members: Vec<(String, u16)>,
    timeout: Duration,
) -> Channel {
    endpoint.connect_with_connector_lazy(FailoverConnector {
        tls: tls.clone(),
        members: members.into(),
        timeout,
    })
}

/// `url` with an `https://` scheme turned into `http://` (TLS is ours, not tonic's).
pub fn wire_url(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_owned(),
    }
}

/// A lazily connected channel: TLS with `tls`, plain TCP (tonic's own connector) without.
pub fn channel(endpoint: Endpoint, tls: Option<&TlsReloader>) -> Channel {
    match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnector { tls: tls.clone() }),
        None => endpoint.connect_lazy(),
    }
}

/// An eagerly connected channel (fails now if the server cannot be reached or verified).
pub async fn connect(
    endpoint: Endpoint,
    tls: Option<&TlsReloader>,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some(tls) => {
            endpoint
                .connect_with_connector(TlsConnector { tls: tls.clone() })
                .await
        }
        None => endpoint.connect().await,
    }
}
