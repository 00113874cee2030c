//! Connections to workers and the choice of a replica for each attempt.
//!
//! [`Backends`] holds one lazily connected tonic `Channel` (and its client) per worker address.
//! The watcher adds an address before publishing a table that routes to it and drops it once no
//! replica references it, so the pool never outgrows the cluster (STYLE.md: tonic's own
//! balancer never forgets dead endpoints). Attempts already running keep their `Arc<Backend>`.
//!
//! [`Backends::pick`] balances with power-of-two-choices on outstanding requests: two distinct
//! random candidates, the one with fewer requests in flight wins. A backend whose last attempt
//! failed without an answer is set aside for a short, growing period (passive health), so one
//! dead worker costs one retry, not one retry per request; when every candidate is set aside
//! they are used anyway rather than failing the request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rand::Rng;
use tonic::transport::{Channel, Endpoint};

use crate::routing::ReadyReplica;

/// How a backend's channel is configured.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Timeout to open the TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Largest message sent to or accepted from a worker.
    pub max_message_bytes: usize,
    /// TLS to the workers (`--tls-ca`, and `--tls-cert` as the client certificate).
    pub tls: Option<kiln_security::TlsReloader>,
}

/// First period a backend is set aside after a failure; doubles per consecutive failure.
const EJECT_BASE: Duration = Duration::from_millis(250);
/// Longest period a backend is set aside.
const EJECT_MAX: Duration = Duration::from_secs(5);

/// One worker endpoint: its client and its load.
#[derive(Debug)]
pub struct Backend {
    /// `host:port` of the worker.
    pub address: String,
    client: GrpcInferenceServiceClient<Channel>,
    inflight: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since [`epoch`] before which this backend is avoided.
    ejected_until_ms: AtomicU64,
}

/// Counts one attempt in flight on a backend until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Backend>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Backend {
    /// A backend for `address` with a lazily connected channel (nothing is dialled until the
    /// first request). Must be called inside a tokio runtime.
    pub fn new(address: &str, options: &ChannelOptions) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = kiln_security::channel(endpoint, options.tls.as_ref());
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(options.max_message_bytes)
            .max_encoding_message_size(options.max_message_bytes);
        Ok(Self {
            address: address.to_owned(),
            client,
            inflight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        })
    }

    /// A client for one call (cheap: clones share the channel).
    pub fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        self.client.clone()
    }

    /// Requests currently in flight on this backend.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Marks one more request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }

    /// The worker answered (whatever the status): it is healthy again.
    pub fn record_answer(&self) {
        // Load first: the common healthy case writes nothing to the shared cache line.
        if self.failures.load(Ordering::Relaxed) != 0
            && self.failures.swap(0, Ordering::Relaxed) != 0
        {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// An attempt got no answer: avoid this backend for a while (longer after each failure).
    pub fn record_failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let period = EJECT_BASE.saturating_mul(1 << failures).min(EJECT_MAX);
        self.ejected_until_ms
            .store(now_ms() + period.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the backend is being avoided after a failure.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms()
    }
}

/// Index, among `items`, of the power-of-two-choices winner: two distinct random items, the one
/// with the lower `load` (the first drawn on a tie). `None` when `items` is empty.
pub fn p2c<T>(items: &[T], load: impl Fn(&T) -> usize, rng: &mut impl Rng) -> Option<usize> {
    match items.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            Some(if load(&items[b]) < load(&items[a]) {
                b
            } else {
                a
            })
        }
    }
}

/// The pool of worker connections, keyed by address.
#[derive(Debug)]
pub struct Backends {
    options: ChannelOptions,
    by_address: RwLock<HashMap<String, Arc<Backend>>>,
}

impl Backends {
    /// An empty pool whose channels use `options`.
    pub fn new(options: ChannelOptions) -> Self {
        Self {
            options,
            by_address: RwLock::new(HashMap::new()),
        }
    }

    /// The backend of `address`, if a replica references it.
    pub fn get(&self, address: &str) -> Option<Arc<Backend>> {
        self.read().get(address).cloned()
    }

    /// Number of addresses in the pool.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Makes the pool hold exactly `addresses`: adds the new ones (lazily connected), drops the
    /// ones no replica references any more. Returns (added, removed).
    pub fn sync<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
        let wanted: HashSet<&str> = addresses.into_iter().collect();
        let mut map = self.by_address.write().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|address, _| wanted.contains(address.as_str()));
        let removed = before - map.len();
        let mut added = 0;
        for address in wanted {
            if map.contains_key(address) {
                continue;
            }
            match Backend::new(address, &self.options) {
                Ok(backend) => {
                    map.insert(address.to_owned(), Arc::new(backend));
                    added += 1;
                }
                Err(e) => tracing::warn!(address, error = %e, "ignoring unusable worker address"),
            }
        }
        (added, removed)
    }

    /// Chooses the backend for the next attempt among `replicas`, skipping the addresses in
    /// `tried` and any that left the pool: p2c over the healthy ones, or over the set-aside
    /// ones when no healthy one is left. `None` when nothing is left to try.
    pub fn pick(
        &self,
        replicas: &[ReadyReplica],
        tried: &[Arc<Backend>],
        rng: &mut impl Rng,
    ) -> Option<Arc<Backend>> {
        let (mut healthy, mut ejected) = (Vec::new(), Vec::new());
        {
            let map = self.read();
            for replica in replicas {
                if tried.iter().any(|b| b.address == replica.address) {
                    continue;
                }
                if let Some(backend) = map.get(&replica.address) {
                    if backend.is_ejected() {
                        ejected.push(backend.clone());
                    } else {
                        healthy.push(backend.clone());
                    }
                }
            }
        }
        let pool = if healthy.is_empty() {
            &mut ejected
        } else {
            &mut healthy
        };
        let index = p2c(pool, |b| b.inflight(), rng)?;
        Some(pool.swap_remove(index))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Backend>>> {
        self.by_address.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn options() -> ChannelOptions {
        ChannelOptions {
            connect_timeout: Duration::from_millis(100),
            max_message_bytes: 1 << 20,
            tls: None,
        }
    }

    fn replicas(addresses: &[&str]) -> Vec<ReadyReplica> {
        addresses
            .iter()
            .map(|a| ReadyReplica {
                worker_id: format!("w-{a}"),
                address: (*a).to_owned(),
            })
            .collect()
    }

    #[test]
    fn p2c_prefers_the_less_loaded_of_two() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(p2c(&[] as &[usize], |l| *l, &mut rng), None);
        assert_eq!(p2c(&[5], |l| *l, &mut rng), Some(0));
        // With two items both are always compared: the idle one wins every time.
        for _ in 0..100 {
            assert_eq!(p2c(&[3, 0], |l| *l, &mut rng), Some(1));
        }
        // With many, the most loaded item can never win (it only wins against itself).
        let loads = [1, 1, 1, 9];
        let mut wins = [0; 4];
        for _ in 0..4000 {
            wins[p2c(&loads, |l| *l, &mut rng).unwrap()] += 1;
        }
        assert_eq!(wins[3], 0);
        assert!(wins[..3].iter().all(|w| *w > 1000), "{wins:?}");
        // Equal loads spread evenly.
        let mut wins = [0; 3];
        for _ in 0..3000 {
            wins[p2c(&[2, 2, 2], |l| *l, &mut rng).unwrap()] += 1;
        }
        assert!(wins.iter().all(|w| (800..1200).contains(w)), "{wins:?}");
    }

    #[tokio::test]
    async fn sync_adds_and_drops_addresses() {
        let pool = Backends::new(options());
        assert_eq!(pool.sync(["a:1", "b:2"]), (2, 0));
        let a = pool.get("a:1").unwrap();
        assert_eq!(pool.sync(["a:1", "c:3"]), (1, 1));
        assert!(
            Arc::ptr_eq(&a, &pool.get("a:1").unwrap()),
            "kept, not rebuilt"
        );
        assert!(pool.get("b:2").is_none());
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.sync([]), (0, 2));
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn pick_balances_on_inflight_and_skips_tried_and_ejected() {
        let pool = Backends::new(options());
        pool.sync(["a:1", "b:2"]);
        let ready = replicas(&["a:1", "b:2", "gone:3"]);
        let mut rng = StdRng::seed_from_u64(9);
        let a = pool.get("a:1").unwrap();
        let busy = a.begin();
        for _ in 0..50 {
            assert_eq!(pool.pick(&ready, &[], &mut rng).unwrap().address, "b:2");
        }
        // Retrying excludes what was tried; the address without a backend is never chosen.
        let b = pool.get("b:2").unwrap();
        assert_eq!(
            pool.pick(&ready, std::slice::from_ref(&b), &mut rng)
                .unwrap()
                .address,
            "a:1"
        );
        assert!(
            pool.pick(&ready, &[a.clone(), b.clone()], &mut rng)
                .is_none()
        );
        // A failed backend is avoided while another is healthy, used when it is the only one.
        b.record_failure();
        assert!(b.is_ejected());
        for _ in 0..50 {
            assert_eq!(pool.pick(&ready, &[], &mut rng).unwrap().address, "a:1");
        }
        assert_eq!(
            pool.pick(&ready, std::slice::from_ref(&a), &mut rng)
                .unwrap()
                .address,
            "b:2"
        );
        b.record_answer();
        assert!(!b.is_ejected());
        drop(busy);
        assert_eq!(a.inflight(), 0);
    }
}
