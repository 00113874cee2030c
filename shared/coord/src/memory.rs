//! In-memory [`Coordinator`] for the single-process embedded mode.
//!
//! It reproduces etcd's semantics that Kiln relies on: one global revision bumped once per write
//! (or per transaction), per-key create/mod revisions and versions, leases that delete their keys
//! when they expire, and watches that replay retained history from a revision and then follow live
//! changes. History is bounded ([`MemoryCoordinator::HISTORY_LIMIT`] events): a watch asking for
//! older revisions, or one that falls too far behind, gets [`CoordError::Compacted`] and must list
//! again, exactly as with etcd after a compaction. Time is `tokio::time`, so tests may pause it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;

use crate::types::{
    Compare, Coordinator, EventKind, KeyValue, LeaseId, Listing, TxnOp, TxnOutcome, TxnRequest,
    WatchEvent, WatchStream,
};
use crate::{CoordError, Result};

/// A batch of events that share one revision.
type Batch = Arc<(i64, Vec<WatchEvent>)>;

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

#[derive(Default)]
struct State {
    revision: i64,
    kvs: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    history: VecDeque<Batch>,
    /// Oldest revision a watch can still start from.
    oldest: i64,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Batch>,
}

/// The in-memory coordinator. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct MemoryCoordinator {
    inner: Arc<Inner>,
}

impl Default for MemoryCoordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCoordinator {
    /// Number of revisions of history kept for watches to replay.
    pub const HISTORY_LIMIT: usize = 10_000;
    /// Live events buffered per watcher before it is told to resync.
    const WATCH_BUFFER: usize = 4_096;
    /// How often expired leases are reaped when nobody touches the store.
    const REAP_INTERVAL: Duration = Duration::from_millis(100);

    /// Creates an empty store. Must be called inside a tokio runtime (a reaper task expires
    /// leases; it stops when the last clone is dropped).
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(Self::WATCH_BUFFER);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_lease: 0x6b69_6c6e_0000,
                oldest: 1,
                ..State::default()
            }),
            events,
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
    expire(&mut state, inner);
    state
}

async fn reap(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(MemoryCoordinator::REAP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        drop(lock(&inner));
    }
}

/// Deletes the keys of every lease whose deadline has passed, one revision per lease.
fn expire(state: &mut State, inner: &Inner) {
    let now = Instant::now();
    let expired: Vec<LeaseId> = state
        .leases
        .iter()
        .filter(|(_, l)| l.deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        revoke(state, inner, id);
    }
}

fn revoke(state: &mut State, inner: &Inner, id: LeaseId) -> bool {
    let Some(lease) = state.leases.remove(&id) else {
        return false;
    };
    let mut keys: Vec<_> = lease.keys.into_iter().collect();
    keys.sort();
    let ops = keys.into_iter().map(TxnOp::Delete).collect::<Vec<_>>();
    apply(state, inner, &ops);
    true
}

/// Applies writes atomically under one new revision (if any write changes something) and
/// publishes their events.
fn apply(state: &mut State, inner: &Inner, ops: &[TxnOp]) -> i64 {
    let revision = state.revision + 1;
    let mut events = Vec::new();
    for op in ops {
        match op {
            TxnOp::Put { key, value, lease } => {
                let prev = state.kvs.get(key);
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: prev.map_or(1, |p| p.version + 1),
                    lease: *lease,
                };
                if let Some(old) = prev.map(|p| p.lease).filter(|l| *l != 0 && l != lease)
                    && let Some(l) = state.leases.get_mut(&old)
                {
                    l.keys.remove(key);
                }
                if *lease != 0
                    && let Some(l) = state.leases.get_mut(lease)
                {
                    l.keys.insert(key.clone());
                }
                state.kvs.insert(key.clone(), kv.clone());
                events.push(WatchEvent {
                    kind: EventKind::Put,
                    kv,
                });
            }
            TxnOp::Delete(key) => {
                if let Some(old) = state.kvs.remove(key) {
                    if let Some(l) = state.leases.get_mut(&old.lease) {
                        l.keys.remove(key);
                    }
                    events.push(WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: revision,
                            version: 0,
                            lease: 0,
                        },
                    });
                }
            }
        }
    }
    if events.is_empty() {
        return state.revision;
    }
    state.revision = revision;
    let batch: Batch = Arc::new((revision, events));
    state.history.push_back(batch.clone());
    while state.history.len() > MemoryCoordinator::HISTORY_LIMIT {
        state.history.pop_front();
        state.oldest = state.history.front().map_or(revision + 1, |b| b.0);
    }
    // No receivers is fine: nobody is watching.
    let _ = inner.events.send(batch);
    revision
}

fn holds(state: &State, cmp: &Compare) -> bool {
    match cmp {
        Compare::Absent(k) => !state.kvs.contains_key(k),
        Compare::ModRevision(k, r) => state.kvs.get(k).is_some_and(|kv| kv.mod_revision == *r),
        Compare::Value(k, v) => state.kvs.get(k).is_some_and(|kv| &kv.value == v),
    }
}

fn check_lease(state: &State, lease: LeaseId) -> Result<()> {
    if lease != 0 && !state.leases.contains_key(&lease) {
        return Err(CoordError::LeaseExpired(lease));
    }
    Ok(())
}

fn filter_batch(batch: &Batch, prefix: &str, from: i64) -> Option<Vec<WatchEvent>> {
    if batch.0 < from {
        return None;
    }
    let events: Vec<_> = batch
        .1
        .iter()
        .filter(|e| e.kv.key.starts_with(prefix))
        .cloned()
        .collect();
    (!events.is_empty()).then_some(events)
}

#[async_trait]
impl Coordinator for MemoryCoordinator {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let state = self.lock();
        let kvs = state
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Listing {
            kvs,
            revision: state.revision,
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        let mut state = self.lock();
        check_lease(&state, lease)?;
        let op = TxnOp::Put {
            key: key.to_string(),
            value,
            lease,
        };
        Ok(apply(&mut state, &self.inner, &[op]))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut state = self.lock();
        let existed = state.kvs.contains_key(key);
        apply(&mut state, &self.inner, &[TxnOp::Delete(key.to_string())]);
        Ok(existed)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let mut state = self.lock();
        let ops: Vec<_> = state
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| TxnOp::Delete(k.clone()))
            .collect();
        apply(&mut state, &self.inner, &ops);
        Ok(ops.len() as u64)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut state = self.lock();
        state.next_lease += 1;
        let id = state.next_lease;
        state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.lock();
        let l = state
            .leases
            .get_mut(&lease)
            .ok_or(CoordError::LeaseExpired(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.lock();
        if revoke(&mut state, &self.inner, lease) {
            Ok(())
        } else {
            Err(CoordError::LeaseExpired(lease))
        }
    }

    async fn watch_prefix(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let state = self.lock();
        let from = if from_revision <= 0 {
            state.revision + 1
        } else {
            from_revision
        };
        if from < state.oldest {
            return Err(CoordError::Compacted {
                requested: from,
                compacted: state.oldest,
            });
        }
        // Subscribe while holding the lock, so no batch falls between replay and live.
        let live = BroadcastStream::new(self.inner.events.subscribe());
        let replay: Vec<Result<Vec<WatchEvent>>> = state
            .history
            .iter()
            .filter_map(|b| filter_batch(b, prefix, from))
            .map(Ok)
            .collect();
        let oldest = state.oldest;
        drop(state);
        let prefix = prefix.to_string();
        let live = live
            .map(move |item| match item {
                Ok(batch) => filter_batch(&batch, &prefix, from).map(Ok),
                Err(_lagged) => Some(Err(CoordError::Compacted {
                    requested: from,
                    compacted: oldest,
                })),
            })
            .filter_map(futures::future::ready)
            // Stop after the first error: the caller must resync.
            .scan(false, |failed, item| {
                let stop = *failed;
                *failed = item.is_err();
                futures::future::ready((!stop).then_some(item))
            });
        Ok(Box::pin(futures::stream::iter(replay).chain(live)))
    }

    async fn txn(&self, txn: TxnRequest) -> Result<TxnOutcome> {
        let mut state = self.lock();
        let succeeded = txn.compare.iter().all(|c| holds(&state, c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let TxnOp::Put { lease, .. } = op {
                check_lease(&state, *lease)?;
            }
        }
        let revision = apply(&mut state, &self.inner, ops);
        Ok(TxnOutcome {
            succeeded,
            revision,
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
