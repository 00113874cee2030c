//! PEM files → rustls configs, and their reload.
//!
//! One identity per process (`--tls-cert`/`--tls-key`) serves both directions: it is the server
//! certificate clients verify and the client certificate this process shows on its own calls.
//! One CA bundle (`--tls-ca`) verifies peers both ways. [`TlsReloader`] polls the files' size
//! and modification time and swaps in freshly built configs when they change; a file that fails
//! to load leaves the previous configs in place (and logs why), so a half-written rotation never
//! takes a server down. Connections already open keep the keys they negotiated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;

use crate::args::ClientAuth;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("invalid TLS material: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid CA bundle: {0}")]
    Verifier(String),
    #[error("{0}")]
    Missing(&'static str),
}

/// Where a process's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// The configs built from one reading of the files.
#[derive(Debug)]
pub struct Material {
    /// Present when the process has an identity (`--tls-cert`).
    pub server: Option<Arc<ServerConfig>>,
    /// Present when the process can verify servers (`--tls-ca`).
    pub client: Option<Arc<ClientConfig>>,
    /// How many times the files were (re)loaded successfully, starting at 1.
    pub generation: u64,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

const ALPN_H2: &[u8] = b"h2";

impl TlsFiles {
    /// Reads the files and builds both configs.
    pub fn load(&self, generation: u64) -> Result<Material, TlsError> {
        let roots = self.ca.as_deref().map(roots).transpose()?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key_path)) => Some((certs(cert)?, key(key_path)?)),
            (None, None) => None,
            _ => return Err(TlsError::Missing("--tls-cert and --tls-key go together")),
        };
        let server = identity
            .as_ref()
            .map(|(chain, key)| self.server_config(roots.clone(), chain.clone(), key.clone_key()))
            .transpose()?;
        let client = roots
            .map(|roots| client_config(roots, identity))
            .transpose()?;
        Ok(Material {
            server,
            client,
            generation,
        })
    }

    fn server_config(
        &self,
        roots: Option<Arc<RootCertStore>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match (self.client_auth, roots) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(TlsError::Missing(
                    "--tls-client-auth optional/required needs --tls-ca to verify clients",
                ));
            }
            // The handshake lets a certificate-less client through either way; the auth layer
            // answers it UNAUTHENTICATED when certificates are required, which tells the caller
            // far more than a handshake alert. A certificate that is presented must verify.
            (_, Some(roots)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Loaded TLS configs that follow their files. Cheap to clone; the polling task ends when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    current: watch::Receiver<Arc<Material>>,
}

type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert, &files.key, &files.ca]
        .into_iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

impl TlsReloader {
    /// Loads the files (an error here is a startup error) and, with a non-zero `every`, polls
    /// them on the current tokio runtime.
    pub fn start(files: TlsFiles, every: Duration) -> Result<Self, TlsError> {
        let mut seen = stamp(&files);
        let material = files.load(1)?;
        let (tx, current) = watch::channel(Arc::new(material));
        if !every.is_zero() {
            let watched = files.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tick.tick() => {}
                    }
                    let now = stamp(&watched);
                    if now == seen {
                        continue;
                    }
                    let generation = tx.borrow().generation + 1;
                    match watched.load(generation) {
                        Ok(material) => {
                            seen = now;
                            tx.send_replace(Arc::new(material));
                            tracing::info!(generation, "TLS certificates reloaded");
                        }
                        // Keep `seen` stale: retry on the next tick (a rotation may be half
                        // written).
                        Err(e) => {
                            tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificates")
                        }
                    }
                }
            });
        }
        Ok(Self { files, current })
    }

    /// The files this reloader follows.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configs as of now.
    pub fn current(&self) -> Arc<Material> {
        self.current.borrow().clone()
    }

    /// The server config as of now (`None` without `--tls-cert`).
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.current.borrow().server.clone()
    }

    /// The client config as of now (`None` without `--tls-ca`).
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.current.borrow().client.clone()
    }

    /// Whether this process's server requires client certificates.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_auth == ClientAuth::Required
    }
}
