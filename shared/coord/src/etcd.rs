//! [`Coordinator`] over a real etcd cluster (v3 API, etcd-client).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn,
    WatchOptions,
};
use futures::StreamExt;

use crate::types::{
    Compare, Coordinator, EventKind, KeyValue, LeaseId, Listing, TxnOp, TxnOutcome, TxnRequest,
    WatchEvent, WatchStream,
};
use crate::{CoordError, Result};

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Timeout to establish a connection.
    pub connect_timeout: Duration,
    /// Optional username and password (etcd auth).
    pub credentials: Option<(String, String)>,
    /// TLS to etcd (endpoints then use `https://`).
    pub tls: Option<EtcdTls>,
}

/// PEM files for TLS to etcd: the CA that verifies etcd's certificate and, for etcd's
/// `--client-cert-auth`, this process's client certificate and key. They are re-read every
/// `reload` (zero: never) and each new connection uses the current ones, so a rotated client
/// certificate is presented without a restart.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub reload: Duration,
}

impl Default for EtcdTls {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            reload: Duration::from_secs(kiln_security::args::DEFAULT_RELOAD_SECS),
        }
    }
}

impl EtcdTls {
    /// A lazily connected channel over TLS to the first live member of `config.endpoints`,
    /// with etcd-client's HTTP/2 settings (request timeout, keep-alive).
    fn channel(&self, config: &EtcdConfig) -> Result<tonic::transport::Channel> {
        if self.ca.is_none() {
            return Err(CoordError::Unavailable(
                "TLS to etcd needs the CA bundle that verifies it (--etcd-ca)".into(),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(CoordError::Unavailable(
                "--etcd-cert and --etcd-key go together".into(),
            ));
        }
        let files = kiln_security::TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            client_auth: kiln_security::ClientAuth::None,
        };
        let tls = kiln_security::TlsReloader::start(files, self.reload)
            .map_err(|e| CoordError::Unavailable(format!("etcd TLS files: {e}")))?;
        let members = config
            .endpoints
            .iter()
            .map(|e| member(e))
            .collect::<Result<Vec<_>>>()?;
        let (host, port) = members
            .first()
            .cloned()
            .ok_or_else(|| CoordError::Unavailable("no etcd endpoint given".into()))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
            .map_err(|e| CoordError::Unavailable(format!("etcd endpoint {host}:{port}: {e}")))?
            .timeout(config.request_timeout)
            .http2_keep_alive_interval(KEEP_ALIVE.0)
            .keep_alive_timeout(KEEP_ALIVE.1)
            .keep_alive_while_idle(true);
        Ok(kiln_security::connector::failover_channel(
            endpoint,
            &tls,
            members,
            config.connect_timeout,
        ))
    }
}

/// HTTP/2 keep-alive to etcd: ping interval and how long a ping may go unanswered.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3));

/// (host, port) of an `https://host:port` endpoint (or bare `host:port`; port 2379 by default).
fn member(endpoint: &str) -> Result<(String, u16)> {
    let bad = |why: &str| CoordError::Unavailable(format!("etcd endpoint {endpoint:?}: {why}"));
    if endpoint.starts_with("http://") {
        return Err(bad("TLS to etcd needs https:// endpoints"));
    }
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    Ok((host.to_owned(), uri.port_u16().unwrap_or(2379)))
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish()
    }
}

impl EtcdConfig {
    /// A config for the given endpoints with default timeouts (3 s per request, 2 s to connect).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            credentials: None,
            tls: None,
        }
    }
}

/// The etcd-backed coordinator. Cheap to clone: etcd-client multiplexes over one channel.
#[derive(Clone)]
pub struct EtcdCoordinator {
    client: Client,
}

impl EtcdCoordinator {
    /// Connects lazily: the first request dials etcd, so a process can start while etcd is down.
    pub async fn connect(config: &EtcdConfig) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster's leader answers "no leader" instead of keeping
            // watches open and silent: callers then relist, and see the outage.
            .with_require_leader(true);
        if let Some((user, password)) = &config.credentials {
            // etcd's auth tokens die with a restart of the member (simple tokens) or expire
            // (JWT): log in again then, or every later request fails for good.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        let client = match &config.tls {
            // Our own TLS connector: it re-reads the certificate files (etcd-client's does not).
            Some(tls) => {
                let channel = etcd_client::Channel::Tonic(tls.channel(config)?);
                Client::from_channel(channel, Some(options)).await?
            }
            None => Client::connect(&config.endpoints, Some(options)).await?,
        };
        Ok(Self { client })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client()
    }
}

fn convert(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn lease_error(lease: LeaseId) -> impl Fn(CoordError) -> CoordError {
    move |e| match e {
        CoordError::LeaseExpired(_) => CoordError::LeaseExpired(lease),
        other => other,
    }
}

fn put_options(lease: LeaseId) -> Option<PutOptions> {
    (lease != 0).then(|| PutOptions::new().with_lease(lease))
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self.kv().get(key, None).await?;
        Ok(resp.kvs().first().map(convert))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let resp = self
            .kv()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(Listing {
            kvs: resp.kvs().iter().map(convert).collect(),
            revision: revision_of(resp.header()),
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        let resp = self
            .kv()
            .put(key, value, put_options(lease))
            .await
            .map_err(CoordError::from)
            .map_err(lease_error(lease))?;
        Ok(revision_of(resp.header()))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let resp = self.kv().delete(key, None).await?;
        Ok(resp.deleted() > 0)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let resp = self
            .kv()
            .delete(prefix, Some(DeleteOptions::new().with_prefix()))
            .await?;
        Ok(resp.deleted() as u64)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let resp = self.client.lease_client().grant(secs, None).await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let (mut keeper, mut responses) = self
            .client
            .lease_client()
            .keep_alive(lease)
            .await
            .map_err(CoordError::from)
            .map_err(lease_error(lease))?;
        keeper.keep_alive().await?;
        let answer = responses
            .message()
            .await
            .map_err(CoordError::from)
            .map_err(lease_error(lease))?;
        match answer {
            Some(resp) if resp.ttl() > 0 => Ok(()),
            Some(_) => Err(CoordError::LeaseExpired(lease)),
            None => Err(CoordError::Unavailable("keep-alive stream closed".into())),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.client
            .lease_client()
            .revoke(lease)
            .await
            .map_err(CoordError::from)
            .map_err(lease_error(lease))?;
        Ok(())
    }

    async fn watch_prefix(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let mut options = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            options = options.with_start_revision(from_revision);
        }
        let stream = self
            .client
            .watch_client()
            .watch(prefix, Some(options))
            .await?;
        let stream = stream
            .map(move |msg| {
                let resp = msg?;
                if resp.canceled() {
                    return Err(if resp.compact_revision() > 0 {
                        CoordError::Compacted {
                            requested: from_revision,
                            compacted: resp.compact_revision(),
                        }
                    } else {
                        CoordError::Unavailable(format!("watch canceled: {}", resp.cancel_reason()))
                    });
                }
                Ok(resp
                    .events()
                    .iter()
                    .filter_map(|e| {
                        let kv = convert(e.kv()?);
                        let kind = match e.event_type() {
                            EventType::Put => EventKind::Put,
                            EventType::Delete => EventKind::Delete,
                        };
                        Some(WatchEvent { kind, kv })
                    })
                    .collect::<Vec<_>>())
            })
            // The `created` confirmation carries no events: skip empty batches.
            .filter(|item| futures::future::ready(!matches!(item, Ok(v) if v.is_empty())))
            .scan(false, |failed, item| {
                let stop = *failed;
                *failed = item.is_err();
                futures::future::ready((!stop).then_some(item))
            });
        Ok(Box::pin(stream))
    }

    async fn txn(&self, txn: TxnRequest) -> Result<TxnOutcome> {
        let compare: Vec<_> = txn
            .compare
            .iter()
            .map(|c| match c {
                Compare::Absent(k) => {
                    etcd_client::Compare::version(k.as_str(), CompareOp::Equal, 0)
                }
                Compare::ModRevision(k, r) => {
                    etcd_client::Compare::mod_revision(k.as_str(), CompareOp::Equal, *r)
                }
                Compare::Value(k, v) => {
                    etcd_client::Compare::value(k.as_str(), CompareOp::Equal, v.clone())
                }
            })
            .collect();
        let ops = |ops: &[TxnOp]| -> Vec<etcd_client::TxnOp> {
            ops.iter()
                .map(|op| match op {
                    TxnOp::Put { key, value, lease } => {
                        etcd_client::TxnOp::put(key.as_str(), value.clone(), put_options(*lease))
                    }
                    TxnOp::Delete(key) => etcd_client::TxnOp::delete(key.as_str(), None),
                })
                .collect()
        };
        let request = Txn::new()
            .when(compare)
            .and_then(ops(&txn.success))
            .or_else(ops(&txn.failure));
        let resp = self.kv().txn(request).await?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: revision_of(resp.header()),
        })
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}
