//! How a client reaches a cluster that runs TLS and tokens: `--tls-ca`, `--tls-cert`,
//! `--tls-key` and `--token` (each also from the environment), applied to every gRPC call it
//! makes. The `kiln` CLI (Admin API and gateway alike) and kiln-loadtest take these flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::tls::TlsFiles;
use crate::{Bearer, ClientAuth, Secret, TlsReloader};
use anyhow::Context;
use clap::Args;

/// Credentials and trust for a client's calls.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// Bearer token sent on every call (`kiln token new` makes one).
    #[arg(long, global = true, env = "KILN_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// PEM CA bundle that verifies the servers (turns TLS on).
    #[arg(long = "tls-ca", global = true, env = "KILN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    #[arg(
        long = "tls-cert",
        global = true,
        env = "KILN_TLS_CERT",
        requires = "tls_ca"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(
        long = "tls-key",
        global = true,
        env = "KILN_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl ClientArgs {
    /// The TLS client config, or `None` without `--tls-ca`.
    pub fn tls(&self) -> anyhow::Result<Option<TlsReloader>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: Some(ca.clone()),
            client_auth: ClientAuth::None,
        };
        Ok(Some(
            TlsReloader::start(files, Duration::ZERO).context("loading --tls-ca/--tls-cert")?,
        ))
    }

    /// The interceptor adding `--token`.
    pub fn bearer(&self) -> anyhow::Result<Bearer> {
        Bearer::new(self.token.as_ref())
    }
}
