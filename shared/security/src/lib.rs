//! Transport security shared by every Kiln process.
//!
//! - [`tls`]: PEM files → rustls server and client configs, re-read when the files change
//!   ([`TlsReloader`]), so certificates rotate without a restart.
//! - [`incoming`]: the server side: a stream of TLS connections for tonic's
//!   `serve_with_incoming*`, handshakes off the accept loop and bounded in time.
//! - [`connector`]: the client side: a tonic channel whose every new connection dials TLS with
//!   the configuration current at that moment.
//! - [`tokens`] and [`auth`]: bearer tokens (SHA-256 at rest, constant-time compare) with roles,
//!   and the tower layer that enforces client certificates and tokens per gRPC method;
//!   [`token_reload`]: the token file followed like the certificates ([`Tokens`]).
//! - [`bearer`]: the client side of tokens, and the server's `--tokens-file` flags; [`client`]:
//!   the flags a client (the CLI, kiln-loadtest) reaches a secure cluster with.
//! - [`devcerts`]: a development CA and per-service certificates (`kiln certs dev`).
//! - [`serve`]: a router over TCP or TLS, and the plaintext health listener (`--health-addr`).
//! - [`args`]: the command-line flags every service shares (`--tls-*`).

pub mod args;
pub mod auth;
pub mod bearer;
pub mod client;
pub mod connector;
pub mod devcerts;
pub mod incoming;
pub mod serve;
pub mod tls;
pub mod token_reload;
pub mod tokens;

pub use args::{ClientAuth, TlsArgs};
pub use auth::{AuthLayer, AuthPolicy, Caller, Requirement};
pub use bearer::{Bearer, TokenArgs};
pub use client::ClientArgs;
pub use connector::{channel, connect, wire_url};
pub use tls::{TlsError, TlsFiles, TlsReloader};
pub use token_reload::Tokens;
pub use tokens::{Role, Secret, TokenBook};

/// Installs ring as rustls' process-wide crypto provider (idempotent). Every config this crate
/// builds names the provider explicitly; this covers libraries (etcd-client through tonic) that
/// ask rustls for the default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
