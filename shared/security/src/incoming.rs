//! The server side of TLS: accepted TCP connections → completed TLS sessions, for tonic's
//! `serve_with_incoming_shutdown`.
//!
//! Handshakes run on their own tasks (a slow or silent client never stalls the accept loop),
//! each bounded by a timeout, and at most [`MAX_HANDSHAKES`] at once (a handshake flood costs a
//! bounded amount of memory; further connections wait in the kernel's backlog). Each handshake
//! uses the server config current when the connection arrived, so reloaded certificates apply
//! to new connections at once. A failed handshake is logged at debug level and dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

use crate::tls::TlsReloader;

/// A TLS connection as tonic serves it (tonic reads the peer's certificates from it).
pub type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Handshakes in progress at most, per listener.
pub const MAX_HANDSHAKES: usize = 256;

/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completed TLS connections from one listener. Dropping it stops the accept loop.
pub struct Incoming {
    rx: mpsc::Receiver<std::io::Result<TlsConn>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for Incoming {
    type Item = std::io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Serves TLS on `listener` with `tls`'s server config (which must exist: `--tls-cert`).
pub fn incoming(listener: TcpListener, tls: TlsReloader) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(accept_loop(listener, tls, tx));
    Incoming { rx, task }
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsReloader,
    tx: mpsc::Sender<std::io::Result<TlsConn>>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(config) = tls.server_config() else {
            tracing::error!("TLS listener without a server certificate; closing the connection");
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = TlsAcceptor::from(config).accept(tcp);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(conn)) => {
                    drop(permit);
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
