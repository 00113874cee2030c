//! The push task: sends closed profile windows to every monitor over
//! `kiln.v1.Telemetry/PushProfile`.
//!
//! Guarantees:
//! - the monitors are `--monitor` when given; otherwise every monitor in the controller election
//!   (each key under `/kiln/v1/election/controller/` whose value is a `host:port` or an
//!   `http(s)://` URL), re-discovered after any failure and every [`REDISCOVER_EVERY`]; each
//!   window goes to every monitor, so any of them can answer drift questions;
//! - while no monitor is known, closed windows stay in the versions' bounded histories;
//!   each monitor has its own queue of at most [`MAX_CLOSED`] batches (oldest dropped);
//! - channels are lazy with a connect timeout and every call has a timeout; a failing monitor
//!   is retried with exponential backoff (one period up to [`MAX_BACKOFF`]); failures are logged
//!   (warn on the first of a streak, debug after) and never reach the request path;
//! - on stop, the current windows are closed and pushed once more, bounded by [`FLUSH_TIMEOUT`].

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kiln_coord::{SharedCoordinator, keys};
use kiln_proto::kiln::v1::ProfileBatch;
use kiln_proto::kiln::v1::telemetry_client::TelemetryClient;
use kiln_security::TlsReloader;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::{MAX_CLOSED, Telemetry};

/// How often the monitors are looked up again even when all is well.
pub const REDISCOVER_EVERY: Duration = Duration::from_secs(30);
/// Longest wait before retrying a failing monitor.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long shutdown's last push may take.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL of a monitor named `value` (`host:port`, or an `http(s)://` URL taken as is).
pub fn monitor_url(value: &str) -> Option<String> {
    kiln_proto::edge::advertised_url(value)
}

/// The URL of a configured `--monitor` value (`host:port` may be a host name here).
pub fn configured_url(value: &str) -> anyhow::Result<String> {
    kiln_proto::edge::endpoint_url(value).map_err(|e| anyhow::anyhow!("--monitor {e}"))
}

/// Every monitor in the controller election.
pub async fn discover(coord: &SharedCoordinator) -> kiln_coord::Result<Vec<String>> {
    let prefix = format!("{}/", keys::CONTROLLER_ELECTION);
    let listing = coord.list(&prefix).await?;
    let mut urls: Vec<String> = listing
        .kvs
        .iter()
        .filter_map(|kv| {
            let value = String::from_utf8_lossy(&kv.value);
            let url = monitor_url(&value);
            if url.is_none() {
                tracing::debug!(key = kv.key, %value, "election value is not an address; skipped");
            }
            url
        })
        .collect();
    urls.sort();
    urls.dedup();
    Ok(urls)
}

struct Monitor {
    client: TelemetryClient<Channel>,
    queue: VecDeque<ProfileBatch>,
    retry_at: Instant,
    backoff: Duration,
    failures: u32,
}

impl Monitor {
    fn new(url: &str, tls: Option<&TlsReloader>) -> Option<Self> {
        let endpoint = Endpoint::from_shared(kiln_security::wire_url(url))
            .ok()?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let channel = kiln_security::channel(endpoint, tls);
        Some(Self {
            client: TelemetryClient::new(channel),
            queue: VecDeque::new(),
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
            failures: 0,
        })
    }

    /// Pushes the queue in order; stops at the first failure. Returns (ok, failed) calls.
    async fn push(&mut self, url: &str, period: Duration, deadline: Option<Instant>) -> (u32, u32) {
        let mut ok = 0;
        while let Some(batch) = self.queue.front() {
            let mut request = tonic::Request::new(batch.clone());
            let timeout = deadline
                .map_or(CALL_TIMEOUT, |d| {
                    d.saturating_duration_since(Instant::now())
                })
                .min(CALL_TIMEOUT);
            request.set_timeout(timeout);
            let result = tokio::time::timeout(timeout, self.client.push_profile(request)).await;
            match result {
                Ok(Ok(_)) => {
                    self.queue.pop_front();
                    ok += 1;
                    self.failures = 0;
                    self.backoff = Duration::ZERO;
                }
                failed => {
                    let why = match failed {
                        Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                        _ => "timed out".to_string(),
                    };
                    self.failures += 1;
                    self.backoff = (self.backoff * 2).max(period).min(MAX_BACKOFF.max(period));
                    self.retry_at = Instant::now() + self.backoff;
                    if self.failures == 1 {
                        tracing::warn!(
                            url,
                            error = why,
                            waiting = self.queue.len(),
                            "cannot push profiles; backing off"
                        );
                    } else {
                        tracing::debug!(url, error = why, failures = self.failures, backoff = ?self.backoff, "cannot push profiles");
                    }
                    return (ok, 1);
                }
            }
        }
        (ok, 0)
    }
}

/// Where the profiles go.
pub struct PushTask {
    telemetry: Arc<Telemetry>,
    coord: SharedCoordinator,
    configured: Option<Vec<String>>,
    tls: Option<TlsReloader>,
    monitors: BTreeMap<String, Monitor>,
    discovered_at: Option<Instant>,
    failed: bool,
}

impl PushTask {
    /// Pushes to `configured` URLs, or (empty) to the monitors found in `coord`.
    pub fn new(
        telemetry: Arc<Telemetry>,
        coord: SharedCoordinator,
        configured: Vec<String>,
        tls: Option<TlsReloader>,
    ) -> anyhow::Result<Self> {
        let configured = if configured.is_empty() {
            None
        } else {
            Some(
                configured
                    .iter()
                    .map(|v| configured_url(v))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            )
        };
        Ok(Self {
            telemetry,
            coord,
            configured,
            tls,
            monitors: BTreeMap::new(),
            discovered_at: None,
            failed: false,
        })
    }

    /// Runs every period until `stop` turns true, then flushes.
    pub fn spawn(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let period = self.telemetry.period();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.cycle(false, None).await,
                    changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                }
            }
            let deadline = Instant::now() + FLUSH_TIMEOUT;
            let flush = async {
                let t = self.telemetry.clone();
                let _ = tokio::task::spawn_blocking(move || t.fold_all(true)).await;
                self.cycle(true, Some(deadline)).await;
            };
            if tokio::time::timeout_at(deadline, flush).await.is_err() {
                tracing::debug!("telemetry flush cut off at shutdown");
            }
        })
    }

    async fn refresh(&mut self) {
        let urls = match &self.configured {
            Some(urls) => urls.clone(),
            None => {
                let stale = self
                    .discovered_at
                    .is_none_or(|t| t.elapsed() >= REDISCOVER_EVERY);
                if !(self.failed || self.monitors.is_empty() || stale) {
                    return;
                }
                self.discovered_at = Some(Instant::now());
                match discover(&self.coord).await {
                    Ok(urls) => urls,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot list the monitors; keeping the known ones");
                        return;
                    }
                }
            }
        };
        self.failed = false;
        self.monitors.retain(|url, _| urls.contains(url));
        for url in urls {
            if let Entry::Vacant(slot) = self.monitors.entry(url) {
                let url = slot.key().clone();
                match Monitor::new(&url, self.tls.as_ref()) {
                    Some(m) => {
                        tracing::info!(url, "pushing profiles to this monitor");
                        slot.insert(m);
                    }
                    None => tracing::warn!(url, "not a usable monitor address"),
                }
            }
        }
    }

    /// Collects the closed windows and pushes what each monitor has waiting (all of them when
    /// `flush`, ignoring backoff).
    async fn cycle(&mut self, flush: bool, deadline: Option<Instant>) {
        self.refresh().await;
        if self.monitors.is_empty() {
            return; // the closed windows wait (bounded) in the versions' histories
        }
        let t = self.telemetry.clone();
        let batches = tokio::task::spawn_blocking(move || t.take_batches())
            .await
            .unwrap_or_default();
        let period = self.telemetry.period();
        let now = Instant::now();
        let pushes = self.monitors.iter_mut().map(|(url, m)| {
            m.queue.extend(batches.iter().cloned());
            while m.queue.len() > MAX_CLOSED {
                m.queue.pop_front();
            }
            let due = flush || m.retry_at <= now;
            async move {
                if due && !m.queue.is_empty() {
                    m.push(url, period, deadline).await
                } else {
                    (0, 0)
                }
            }
        });
        let results = futures::future::join_all(pushes).await;
        for (ok, failed) in results {
            (0..ok).for_each(|_| self.telemetry.count_push(true));
            (0..failed).for_each(|_| self.telemetry.count_push(false));
            self.failed |= failed > 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_values_become_urls() {
        assert_eq!(
            monitor_url("127.0.0.1:8101").as_deref(),
            Some("http://127.0.0.1:8101")
        );
        assert_eq!(
            monitor_url("[::1]:8101").as_deref(),
            Some("http://[::1]:8101")
        );
        assert_eq!(
            monitor_url("http://m:8101").as_deref(),
            Some("http://m:8101")
        );
        assert_eq!(monitor_url("monitor-0"), None);
        assert_eq!(configured_url("m0:8101").unwrap(), "http://m0:8101");
        assert!(configured_url("ftp://m0").is_err());
    }

    #[tokio::test]
    async fn discovery_finds_every_monitor() {
        use kiln_coord::MemoryCoordinator;
        let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
        let e = format!("{}/", keys::CONTROLLER_ELECTION);
        for (k, v) in [("a", "127.0.0.1:1"), ("b", "127.0.0.1:2"), ("c", "name")] {
            coord
                .put(&format!("{e}{k}"), v.as_bytes().to_vec(), 0)
                .await
                .unwrap();
        }
        assert_eq!(
            discover(&coord).await.unwrap(),
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
    }
}
