//! The gateway's link to the monitor's control API (`kiln.v1.Admin`), used by the Triton
//! repository extension (RepositoryModelLoad/Unload).
//!
//! Guarantees:
//! - The monitor called is `--admin` when given; otherwise the controller leader found in etcd:
//!   among the keys under `/kiln/v1/election/controller/` the one with the lowest create
//!   revision, whose value (the monitor's instance name, by default its gRPC `host:port`) must
//!   be a socket address.
//! - Channels are lazy with the connect timeout: nothing is dialled before the first call, and
//!   an unreachable monitor costs at most the connect timeout per call.
//! - A call that got no answer (connection refused or reset, monitor UNAVAILABLE) forgets the
//!   channel, so the next call connects (and, without `--admin`, discovers the leader) afresh;
//!   without `--admin` the call is retried once when the leader moved to another address.
//! - Every call carries the caller's remaining time as its `grpc-timeout` and is abandoned at
//!   the caller's deadline.
//! - Failures are [`Error`]s: no monitor → [`Error::AdminUnavailable`], a monitor's refusal →
//!   [`Error::Admin`] (its code kept), deadline → [`Error::DeadlineExceeded`].

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use kiln_coord::{Election, SharedCoordinator, keys};
use kiln_proto::kiln::v1::admin_client::AdminClient;
use kiln_security::{Bearer, TlsReloader};
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

use crate::config::{Config, admin_url};
use crate::error::Error;
use crate::forward::{Outcome, classify};

/// The Admin client the link hands out: the gateway's own admin token on every call.
pub type AdminApi = AdminClient<InterceptedService<Channel, Bearer>>;

/// A lazily connected Admin client; see the module docs. Shared by every repository request.
pub struct AdminLink {
    /// `--admin`, as a URL; `None`: discover the controller leader in etcd.
    configured: Option<String>,
    coord: SharedCoordinator,
    connect_timeout: Duration,
    tls: Option<TlsReloader>,
    bearer: Bearer,
    current: Mutex<Option<Link>>,
}

/// One monitor address and its channel.
#[derive(Clone)]
struct Link {
    url: String,
    client: AdminApi,
}

impl AdminLink {
    /// A link following `config.admin` (or, without it, the controller election in `coord`).
    /// `tls` secures the calls; `config.admin_token` authenticates them.
    pub fn new(
        config: &Config,
        coord: SharedCoordinator,
        tls: Option<TlsReloader>,
    ) -> anyhow::Result<Self> {
        let configured = config.admin.as_deref().map(admin_url).transpose()?;
        Ok(Self {
            configured,
            coord,
            connect_timeout: config.connect_timeout(),
            tls,
            bearer: Bearer::new(config.admin_token.as_ref())?,
            current: Mutex::new(None),
        })
    }

    /// The URL of the monitor the link uses now: `--admin`, else the current controller
    /// leader's (looked up in etcd when not yet known).
    pub async fn url(&self) -> Result<String, Error> {
        Ok(self.link().await?.url)
    }

    /// Runs `send(client, remaining_time)` against the monitor (see the module docs for
    /// re-discovery and the one retry). `send` must put `remaining_time` on its request as its
    /// timeout. `op` names the Admin operation in errors.
    pub async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        deadline: Instant,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(AdminApi, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut attempts = 0;
        let mut failed: Option<String> = None;
        loop {
            let link = self.link().await?;
            if let Some(failed) = failed.take() {
                if link.url == failed {
                    return Err(Error::AdminUnavailable(format!(
                        "the monitor at {failed} did not answer {op}"
                    )));
                }
                tracing::info!(from = %failed, to = %link.url, "controller leader moved; retrying");
            }
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::DeadlineExceeded { attempts });
            }
            let status = match tokio::time::timeout_at(deadline, send(link.client, remaining)).await
            {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_elapsed) => return Err(Error::DeadlineExceeded { attempts }),
            };
            match classify(&status, Instant::now() >= deadline) {
                Outcome::Answered => return Err(Error::Admin { op, status }),
                Outcome::DeadlinePassed => return Err(Error::DeadlineExceeded { attempts }),
                Outcome::NoAnswer => {
                    tracing::warn!(
                        url = %link.url,
                        op,
                        code = ?status.code(),
                        message = status.message(),
                        "the monitor did not answer"
                    );
                    self.forget(&link.url);
                    if self.configured.is_some() || attempts > 1 {
                        return Err(Error::AdminUnavailable(format!(
                            "the monitor at {} could not serve {op}: {}",
                            link.url,
                            status.message()
                        )));
                    }
                    failed = Some(link.url);
                }
            }
        }
    }

    /// The current link, connecting (lazily) to the configured or discovered monitor.
    async fn link(&self) -> Result<Link, Error> {
        if let Some(link) = self.lock().clone() {
            return Ok(link);
        }
        let url = match &self.configured {
            Some(url) => url.clone(),
            None => self.discover().await?,
        };
        let endpoint = Endpoint::from_shared(kiln_security::wire_url(&url))
            .map_err(|e| Error::AdminUnavailable(format!("monitor address {url:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let channel = kiln_security::channel(endpoint, self.tls.as_ref());
        let link = Link {
            url,
            client: AdminClient::with_interceptor(channel, self.bearer.clone()),
        };
        *self.lock() = Some(link.clone());
        Ok(link)
    }

    /// The controller leader's URL, read from the election keys in etcd.
    async fn discover(&self) -> Result<String, Error> {
        let leader = Election::new(self.coord.clone(), keys::CONTROLLER_ELECTION)
            .leader()
            .await
            .map_err(|e| {
                Error::AdminUnavailable(format!("cannot read the controller election: {e}"))
            })?
            .ok_or_else(|| {
                Error::AdminUnavailable("no monitor leads the controller election".into())
            })?;
        let url = leader_url(&leader)?;
        tracing::info!(%url, "found the monitor through the controller election");
        Ok(url)
    }

    /// Drops the channel to `url` unless another call replaced it already.
    fn forget(&self, url: &str) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|l| l.url == url) {
            *current = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Link>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The URL of a controller leader whose election value is `value` (`host:port` as a socket
/// address; an explicit `http(s)://` URL is taken as is).
pub fn leader_url(value: &str) -> Result<String, Error> {
    kiln_proto::edge::advertised_url(value).ok_or_else(|| {
        Error::AdminUnavailable(format!(
            "the controller leader is named {:?}, which is not a host:port address",
            value.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kiln_coord::{Coordinator, MemoryCoordinator};
    use kiln_proto::kiln::v1::ListModelsRequest;
    use tonic::Code;

    use super::*;

    #[test]
    fn leader_values_become_urls() {
        assert_eq!(
            leader_url("127.0.0.1:8101").unwrap(),
            "http://127.0.0.1:8101"
        );
        assert_eq!(leader_url("[::1]:8101").unwrap(), "http://[::1]:8101");
        assert_eq!(
            leader_url("http://monitor-0:8101").unwrap(),
            "http://monitor-0:8101"
        );
        let err = Status::from(leader_url("monitor-0").unwrap_err());
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("--admin"), "{}", err.message());
    }

    async fn list(link: &AdminLink) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(5);
        link.call("ListModels", deadline, |mut client, timeout| {
            let mut request = tonic::Request::new(ListModelsRequest::default());
            request.set_timeout(timeout);
            async move { client.list_models(request).await }
        })
        .await
        .map(|_| ())
    }

    #[tokio::test]
    async fn discovery_takes_the_oldest_election_key_and_follows_it() {
        let coord = Arc::new(MemoryCoordinator::new());
        let link = AdminLink::new(&Config::default(), coord.clone(), None).unwrap();
        let err = Status::from(list(&link).await.unwrap_err());
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("no monitor leads"), "{err:?}");

        // Two candidates; the first one written leads. Nothing listens on either port.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let first = dead.local_addr().unwrap();
        drop(dead);
        let election = format!("{}/", keys::CONTROLLER_ELECTION);
        coord
            .put(&format!("{election}2"), first.to_string().into_bytes(), 0)
            .await
            .unwrap();
        coord
            .put(&format!("{election}1"), b"127.0.0.1:1".to_vec(), 0)
            .await
            .unwrap();
        assert_eq!(link.url().await.unwrap(), format!("http://{first}"));

        // The leader does not answer; the other candidate takes over and is found again.
        coord.delete(&format!("{election}2")).await.unwrap();
        let err = Status::from(list(&link).await.unwrap_err());
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("127.0.0.1:1"), "{err:?}");
    }

    #[tokio::test]
    async fn a_configured_monitor_is_used_as_is() {
        let coord = Arc::new(MemoryCoordinator::new());
        let config = Config {
            admin: Some("127.0.0.1:1".into()),
            ..Config::default()
        };
        let link = AdminLink::new(&config, coord, None).unwrap();
        assert_eq!(link.url().await.unwrap(), "http://127.0.0.1:1");
        let err = Status::from(list(&link).await.unwrap_err());
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("--admin"), "{err:?}");
    }
}
