//! The `--tls-*` flags shared by the gateway, the workers, the monitor and the CLI.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::tls::{TlsError, TlsFiles, TlsReloader};

/// Whether a server asks its clients for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuth {
    /// No client certificates (server-side TLS only).
    None,
    /// A client may present a certificate; one that does not chain to `--tls-ca` fails the
    /// handshake, none at all is let through (tokens may still be required).
    Optional,
    /// Every call but health checks needs a client certificate that chains to `--tls-ca`;
    /// calls without one get UNAUTHENTICATED.
    Required,
}

/// TLS for one process: the identity it presents (as a server and, on its outgoing gRPC hops,
/// as a client) and the CA bundle that verifies its peers.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct TlsArgs {
    /// PEM certificate chain this process presents (server and client). Enables TLS.
    #[arg(long = "tls-cert", env = "KILN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long = "tls-key", env = "KILN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that verifies peers: the servers this process calls and, with
    /// `--tls-client-auth`, the clients that call it.
    #[arg(long = "tls-ca", env = "KILN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates on this process's server: none, optional or required (default:
    /// required when `--tls-ca` is given, else none).
    #[arg(long = "tls-client-auth", env = "KILN_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<ClientAuth>,
    /// How often the certificate files are checked for changes, in seconds (0: never reload).
    #[arg(
        long = "tls-reload-secs",
        env = "KILN_TLS_RELOAD_SECS",
        default_value_t = DEFAULT_RELOAD_SECS
    )]
    pub tls_reload_secs: u64,
}

/// How often certificate files are checked by default, in seconds.
pub const DEFAULT_RELOAD_SECS: u64 = 10;

impl Default for TlsArgs {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_auth: None,
            tls_reload_secs: DEFAULT_RELOAD_SECS,
        }
    }
}

impl TlsArgs {
    /// The files, or `None` when TLS is off (no `--tls-cert` and no `--tls-ca`).
    pub fn files(&self) -> Option<TlsFiles> {
        if self.tls_cert.is_none() && self.tls_ca.is_none() {
            return None;
        }
        let client_auth = self.tls_client_auth.unwrap_or(if self.tls_ca.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::None
        });
        Some(TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
            client_auth,
        })
    }

    /// Loads the files once and starts reloading them, or `None` when TLS is off.
    pub fn start(&self) -> Result<Option<TlsReloader>, TlsError> {
        self.files()
            .map(|files| TlsReloader::start(files, Duration::from_secs(self.tls_reload_secs)))
            .transpose()
    }
}
