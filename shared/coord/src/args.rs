//! The `--etcd*` flags every etcd-backed process shares.

use std::path::PathBuf;

use clap::Args;

use crate::etcd::{EtcdConfig, EtcdCoordinator, EtcdTls};

/// How to reach etcd: endpoints, TLS and etcd auth.
#[derive(Clone, Args)]
pub struct EtcdArgs {
    /// etcd client endpoints, comma separated (`https://` with TLS).
    #[arg(
        long = "etcd",
        env = "KILN_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// PEM CA bundle that verifies etcd's server certificate.
    #[arg(long = "etcd-ca", env = "KILN_ETCD_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for etcd's `--client-cert-auth`.
    #[arg(long = "etcd-cert", env = "KILN_ETCD_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `--etcd-cert`.
    #[arg(long = "etcd-key", env = "KILN_ETCD_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// etcd user (etcd auth); the password comes from `--etcd-password` / KILN_ETCD_PASSWORD.
    #[arg(long = "etcd-user", env = "KILN_ETCD_USER", requires = "password")]
    pub user: Option<String>,
    /// etcd password. Prefer the environment variable: command lines are visible to every
    /// user of the host.
    #[arg(
        long = "etcd-password",
        env = "KILN_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// How often the `--etcd-ca/--etcd-cert/--etcd-key` files are checked for changes, seconds
    /// (0: never); new connections to etcd use the current ones.
    #[arg(
        long = "etcd-tls-reload-secs",
        env = "KILN_ETCD_TLS_RELOAD_SECS",
        default_value_t = kiln_security::args::DEFAULT_RELOAD_SECS
    )]
    pub etcd_tls_reload_secs: u64,
}

impl std::fmt::Debug for EtcdArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config().fmt(f)
    }
}

impl EtcdArgs {
    /// The connection settings these flags describe.
    pub fn config(&self) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.endpoints.clone());
        config.credentials = self.user.clone().zip(self.password.clone());
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if self.ca.is_some() || self.cert.is_some() || https {
            config.tls = Some(EtcdTls {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                reload: std::time::Duration::from_secs(self.etcd_tls_reload_secs),
            });
        }
        config
    }

    /// Connects (lazily: etcd may come up later).
    pub async fn connect(&self) -> anyhow::Result<EtcdCoordinator> {
        use anyhow::Context;
        EtcdCoordinator::connect(&self.config())
            .await
            .with_context(|| format!("connecting to etcd at {:?}", self.endpoints))
    }
}
