//! The worker's side of the cluster: one owned task that keeps the worker registered, follows
//! its assignments, loads and unloads model versions, and publishes their replica state.
//!
//! Guarantees:
//! - the worker key `/kiln/v1/workers/{id}` and every replica key
//!   `/kiln/v1/replicas/{m}/{v}/{id}` are attached to the session's lease, and are written again
//!   under the new lease whenever the [`LeaseSession`](kiln_coord::LeaseSession) hands one out
//!   (a lost lease deleted them); a failed write is retried every second until it succeeds;
//! - assignments are followed with list + watch from the listing's revision; when the watch fails
//!   or ends, the task backs off, lists again and reconciles (loads what is new, unloads what is
//!   gone), so no change is missed across store outages or compactions;
//! - a replica is published LOADING before its load starts and READY only once the version is
//!   servable (or FAILED with the reason); an unassigned version stops receiving requests at once,
//!   its replica key is deleted, and a load still running for it is discarded when it finishes;
//! - an unassigned version that was serving keeps serving for `unload_delay` after its replica
//!   key is deleted (gateways stop routing to it as soon as they see the delete; requests already
//!   on their way still find it), then it is unloaded;
//! - a draining worker (shutting down) says so in its worker record, under every lease, so the
//!   controller moves its replicas elsewhere before it goes;
//! - each READY replica reports the memory its version holds, and each load applies the
//!   deployment's batching overrides carried by the assignment.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kiln_coord::codec::{
    self, AssignmentRecord, ModelVersionRecord, ReplicaRecord, ReplicaState, WorkerRecord,
};
use kiln_coord::{
    EventKind, LeaseId, SessionState, SharedCoordinator, WatchEvent, WatchStream, keys,
};
use kiln_model::{Backend, Model};
use kiln_proto::kiln::v1::BatchingOverrides;
use kiln_telemetry::profile::OutlierModel;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::batch::Policy;
use crate::executor::{Execution, Executor, Settings};
use crate::metrics::WorkerMetrics;
use crate::overrides::apply_overrides;
use crate::package::{self, LoadError};
use crate::stats::ModelStats;
use crate::store::{LoadedModel, ModelStore, VersionState};
use crate::telemetry::Telemetry;

/// (model, version)
type VersionKey = (String, String);

/// What the agent needs to know about the worker it speaks for.
pub struct AgentConfig {
    /// The worker id.
    pub id: String,
    /// The worker's registration (its `draining` flag is managed by shutdown).
    pub record: WorkerRecord,
    /// Backend to load models on.
    pub backend: Backend,
    /// Compute threads per loaded version.
    pub compute_threads: usize,
    /// Whether requests may be merged into batches.
    pub dynamic_batching: bool,
    /// Directory packages must lie in, if any.
    pub package_root: Option<PathBuf>,
    /// How long an unassigned version keeps serving after its replica key is deleted.
    pub unload_delay: Duration,
    /// Traffic profiles, when telemetry is on.
    pub telemetry: Option<Arc<Telemetry>>,
}

struct Loaded {
    key: VersionKey,
    generation: u64,
    /// The model and its package's reference outlier model, if any.
    result: Result<(Model, Option<Arc<OutlierModel>>), LoadError>,
}

/// A version whose linger after unassignment is over.
struct Linger {
    key: VersionKey,
    generation: u64,
}

/// The control loop's state. Run it with [`Agent::run`].
pub struct Agent {
    coord: SharedCoordinator,
    cfg: AgentConfig,
    store: Arc<ModelStore>,
    metrics: WorkerMetrics,
    lease: Option<LeaseId>,
    /// Assigned versions, with the generation of their current load.
    assigned: HashMap<VersionKey, u64>,
    /// Unassigned versions still serving until their linger ends, with the generation of the
    /// unassignment (only that linger's end unloads them).
    lingering: HashMap<VersionKey, u64>,
    /// Batching overrides each assignment carries.
    overrides: HashMap<VersionKey, BatchingOverrides>,
    next_generation: u64,
    /// Replica records as they should be in the store.
    published: BTreeMap<VersionKey, ReplicaRecord>,
    /// Whether some write failed and everything must be written again.
    dirty: bool,
    /// Replica keys whose deletion failed.
    pending_deletes: Vec<String>,
    loaded_tx: mpsc::UnboundedSender<Loaded>,
    loaded_rx: mpsc::UnboundedReceiver<Loaded>,
    linger_tx: mpsc::UnboundedSender<Linger>,
    linger_rx: mpsc::UnboundedReceiver<Linger>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RETRY_WRITES: Duration = Duration::from_secs(1);

impl Agent {
    /// A new agent; nothing happens until [`Agent::run`].
    pub fn new(
        coord: SharedCoordinator,
        cfg: AgentConfig,
        store: Arc<ModelStore>,
        metrics: WorkerMetrics,
    ) -> Self {
        let (loaded_tx, loaded_rx) = mpsc::unbounded_channel();
        let (linger_tx, linger_rx) = mpsc::unbounded_channel();
        Self {
            coord,
            cfg,
            store,
            metrics,
            lease: None,
            assigned: HashMap::new(),
            lingering: HashMap::new(),
            overrides: HashMap::new(),
            next_generation: 0,
            published: BTreeMap::new(),
            dirty: false,
            pending_deletes: Vec::new(),
            loaded_tx,
            loaded_rx,
            linger_tx,
            linger_rx,
        }
    }

    /// Runs until `stop` turns true (or its sender goes). When `draining` turns true the worker
    /// record says so from then on.
    pub async fn run(
        mut self,
        mut session: watch::Receiver<SessionState>,
        mut draining: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let prefix = keys::assignments_of(&self.cfg.id);
        let mut watch: Option<WatchStream> = None;
        let mut backoff = MIN_BACKOFF;
        let resync = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(resync);
        let mut retry = tokio::time::interval(RETRY_WRITES);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = *session.borrow_and_update();
        self.on_session(state).await;
        loop {
            tokio::select! {
                // Biased: a drain asked for just before a stop is still written.
                biased;
                changed = draining.changed(), if !self.cfg.record.draining => {
                    if changed.is_err() {
                        return; // the worker was dropped without a shutdown: stop with it
                    }
                    if *draining.borrow() {
                        tracing::info!("draining: asking the controller to move every replica away");
                        self.cfg.record.draining = true;
                        self.write_all().await;
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
                changed = session.changed() => {
                    if changed.is_err() {
                        return; // the session is gone: the worker is shutting down
                    }
                    let state = *session.borrow_and_update();
                    self.on_session(state).await;
                }
                Some(done) = self.loaded_rx.recv() => self.on_loaded(done).await,
                Some(done) = self.linger_rx.recv() => self.on_linger_over(done),
                batch = next_batch(&mut watch) => match batch {
                    Some(Ok(events)) => {
                        backoff = MIN_BACKOFF;
                        for e in events {
                            self.on_event(&prefix, e).await;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "assignment watch failed; resyncing");
                        watch = None;
                        resync.as_mut().reset(Instant::now() + backoff);
                    }
                    None => {
                        tracing::warn!("assignment watch ended; resyncing");
                        watch = None;
                        resync.as_mut().reset(Instant::now() + backoff);
                    }
                },
                () = &mut resync, if watch.is_none() => {
                    match self.resync(&prefix).await {
                        Ok(w) => watch = Some(w),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot list assignments; retrying");
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            resync.as_mut().reset(Instant::now() + backoff);
                        }
                    }
                }
                _ = retry.tick(), if self.dirty || !self.pending_deletes.is_empty() => {
                    self.retry_writes().await;
                }
            }
        }
    }

    /// Lists the assignments, reconciles with them, and watches from the listing's revision.
    async fn resync(&mut self, prefix: &str) -> kiln_coord::Result<WatchStream> {
        let listing = self.coord.list(prefix).await?;
        let desired: Vec<VersionKey> = listing
            .kvs
            .iter()
            .filter_map(|kv| {
                let key = parse_assignment(prefix, &kv.key)?;
                self.note_overrides(&key, kv);
                Some(key)
            })
            .collect();
        let gone: Vec<VersionKey> = self
            .assigned
            .keys()
            .filter(|k| !desired.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.unassign(&key).await;
        }
        for key in desired {
            if !self.assigned.contains_key(&key) {
                self.assign(key).await;
            }
        }
        self.coord.watch_prefix(prefix, listing.revision + 1).await
    }

    async fn on_event(&mut self, prefix: &str, event: WatchEvent) {
        let Some(key) = parse_assignment(prefix, &event.kv.key) else {
            tracing::warn!(key = event.kv.key, "ignoring malformed assignment key");
            return;
        };
        if event.kind == EventKind::Put {
            self.note_overrides(&key, &event.kv);
        }
        match event.kind {
            EventKind::Put if !self.assigned.contains_key(&key) => self.assign(key).await,
            EventKind::Put => {} // rewritten, same identity: nothing to do
            EventKind::Delete => self.unassign(&key).await,
        }
    }

    /// Remembers the batching overrides an assignment carries (applied at its next load).
    fn note_overrides(&mut self, key: &VersionKey, kv: &kiln_coord::KeyValue) {
        match codec::decode::<AssignmentRecord>(kv) {
            Ok(a) => {
                self.overrides
                    .insert(key.clone(), a.batching.unwrap_or_default());
            }
            Err(e) => {
                tracing::warn!(error = %e, key = kv.key, "undecodable assignment; no overrides")
            }
        }
    }

    async fn on_session(&mut self, state: SessionState) {
        match state {
            SessionState::Alive(lease) if self.lease != Some(lease) => {
                tracing::info!(
                    lease = format!("{lease:x}"),
                    "registering under a new lease"
                );
                self.lease = Some(lease);
                self.write_all().await;
            }
            SessionState::Alive(_) => {}
            SessionState::Connecting | SessionState::Lost => self.lease = None,
        }
    }

    /// (Re)writes the worker record and every replica record under the current lease.
    async fn write_all(&mut self) {
        let Some(lease) = self.lease else { return };
        let mut ok = codec::put(
            self.coord.as_ref(),
            &keys::worker(&self.cfg.id),
            &self.cfg.record,
            lease,
        )
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "cannot register worker"))
        .is_ok();
        for record in self.published.values() {
            let key = keys::replica(&record.model, &record.version, &self.cfg.id);
            ok &= codec::put(self.coord.as_ref(), &key, record, lease)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, key, "cannot publish replica"))
                .is_ok();
        }
        self.dirty = !ok;
    }

    async fn retry_writes(&mut self) {
        if self.dirty {
            self.write_all().await;
        }
        let mut still = Vec::new();
        for key in std::mem::take(&mut self.pending_deletes) {
            if let Err(e) = self.coord.delete(&key).await {
                tracing::warn!(error = %e, key, "cannot delete replica key; retrying");
                still.push(key);
            }
        }
        self.pending_deletes = still;
    }

    /// Records and writes the state of one replica.
    async fn publish(
        &mut self,
        key: &VersionKey,
        state: ReplicaState,
        reason: String,
        memory_bytes: u64,
    ) {
        let record = ReplicaRecord {
            model: key.0.clone(),
            version: key.1.clone(),
            worker_id: self.cfg.id.clone(),
            address: self.cfg.record.address.clone(),
            state: state as i32,
            reason,
            memory_bytes,
        };
        self.published.insert(key.clone(), record.clone());
        self.pending_deletes
            .retain(|k| *k != keys::replica(&key.0, &key.1, &self.cfg.id));
        let Some(lease) = self.lease else {
            return; // written when the next lease comes
        };
        let replica_key = keys::replica(&key.0, &key.1, &self.cfg.id);
        if let Err(e) = codec::put(self.coord.as_ref(), &replica_key, &record, lease).await {
            tracing::warn!(error = %e, key = replica_key, "cannot publish replica; retrying");
            self.dirty = true;
        }
    }

    /// Starts loading a newly assigned version.
    async fn assign(&mut self, key: VersionKey) {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.assigned.insert(key.clone(), generation);
        self.lingering.remove(&key);
        tracing::info!(model = key.0, version = key.1, "assigned; loading");
        self.store.set_state(&key.0, &key.1, VersionState::Loading);
        self.publish(&key, ReplicaState::Loading, String::new(), 0)
            .await;
        let coord = self.coord.clone();
        let backend = self.cfg.backend;
        let root = self.cfg.package_root.clone();
        let tx = self.loaded_tx.clone();
        tokio::spawn(async move {
            let result = fetch_and_load(&coord, &key, backend, root).await;
            let _ = tx.send(Loaded {
                key,
                generation,
                result,
            });
        });
    }

    async fn on_loaded(&mut self, done: Loaded) {
        let key = done.key;
        if self.assigned.get(&key) != Some(&done.generation) {
            tracing::info!(
                model = key.0,
                version = key.1,
                "discarding a load that was unassigned"
            );
            return;
        }
        let overrides = self.overrides.get(&key).cloned().unwrap_or_default();
        let outcome = done
            .result
            .map_err(|e| e.to_string())
            .and_then(|(model, outlier)| {
                let memory = model.memory_bytes();
                self.make_servable(model, outlier, &overrides)
                    .map(|loaded| (loaded, memory))
                    .map_err(|e| e.to_string())
            });
        match outcome {
            Ok((loaded, memory)) => {
                self.store.insert(loaded);
                tracing::info!(model = key.0, version = key.1, memory, "replica ready");
                self.publish(&key, ReplicaState::Ready, String::new(), memory)
                    .await;
            }
            Err(reason) => {
                tracing::error!(model = key.0, version = key.1, reason, "load failed");
                self.store
                    .set_state(&key.0, &key.1, VersionState::Failed(reason.clone()));
                self.publish(&key, ReplicaState::Failed, reason, 0).await;
            }
        }
    }

    fn make_servable(
        &self,
        model: Model,
        outlier: Option<Arc<OutlierModel>>,
        overrides: &BatchingOverrides,
    ) -> std::io::Result<Arc<LoadedModel>> {
        let manifest = apply_overrides(model.manifest().clone(), overrides);
        let threads = manifest
            .instance_count
            .map_or(self.cfg.compute_threads, |n| n as usize)
            .max(1);
        let stats = Arc::new(ModelStats::default());
        let metrics = Arc::new(self.metrics.for_model(&manifest.name, &manifest.version));
        let settings = Settings {
            threads,
            capacity: usize::try_from(manifest.batching.max_queue_size).unwrap_or(usize::MAX),
            refuse_when_busy: manifest.batching.refuse_when_busy,
            policy: if self.cfg.dynamic_batching {
                Policy::from_manifest(&manifest)
            } else {
                Policy::unbatched()
            },
            on_execution: {
                let stats = stats.clone();
                Arc::new(move |e: &Execution| stats.record_execution(e))
            },
        };
        let executor =
            Executor::start(&manifest.name, &manifest.version, Arc::new(model), settings)?;
        if let Some(t) = &self.cfg.telemetry {
            // A profile of an earlier load of this version still closing goes first.
            t.retire(&manifest.name, &manifest.version);
        }
        let profiler = self
            .cfg
            .telemetry
            .as_ref()
            .and_then(|t| t.register(&manifest, outlier));
        Ok(Arc::new(LoadedModel {
            manifest,
            executor,
            stats,
            metrics,
            threads,
            profiler,
        }))
    }

    /// Withdraws a version's replica at once and unloads it after the linger.
    async fn unassign(&mut self, key: &VersionKey) {
        let Some(generation) = self.assigned.remove(key) else {
            return;
        };
        self.overrides.remove(key);
        self.published.remove(key);
        let replica_key = keys::replica(&key.0, &key.1, &self.cfg.id);
        if let Err(e) = self.coord.delete(&replica_key).await {
            tracing::warn!(error = %e, key = replica_key, "cannot delete replica key; retrying");
            self.pending_deletes.push(replica_key);
        }
        let serving = self.store.resolve(&key.0, &key.1).is_ok();
        if !serving || self.cfg.unload_delay.is_zero() {
            tracing::info!(model = key.0, version = key.1, "unassigned; unloading");
            self.unload(key);
            return;
        }
        tracing::info!(model = key.0, version = key.1, delay = ?self.cfg.unload_delay, "unassigned; serving on until gateways stop routing here");
        self.lingering.insert(key.clone(), generation);
        let tx = self.linger_tx.clone();
        let (key, delay) = (key.clone(), self.cfg.unload_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Linger { key, generation });
        });
    }

    fn on_linger_over(&mut self, done: Linger) {
        // Assigned again meanwhile (that load owns the version now), or assigned and
        // unassigned again (a later linger ends it).
        if self.lingering.get(&done.key) != Some(&done.generation) {
            return;
        }
        self.lingering.remove(&done.key);
        tracing::info!(
            model = done.key.0,
            version = done.key.1,
            generation = done.generation,
            "unloading"
        );
        self.unload(&done.key);
    }

    fn unload(&self, key: &VersionKey) {
        self.store.remove(&key.0, &key.1);
        self.metrics.remove(&key.0, &key.1);
        if let Some(t) = &self.cfg.telemetry {
            t.retire(&key.0, &key.1);
        }
    }
}

async fn next_batch(
    watch: &mut Option<WatchStream>,
) -> Option<kiln_coord::Result<Vec<WatchEvent>>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// `/kiln/v1/assignments/{id}/{m}/{v}` → `(m, v)`.
fn parse_assignment(prefix: &str, key: &str) -> Option<VersionKey> {
    match keys::segments(prefix, key)?.as_slice() {
        [m, v] if keys::valid_segment(m) && keys::valid_segment(v) => {
            Some((m.to_string(), v.to_string()))
        }
        _ => None,
    }
}

async fn fetch_and_load(
    coord: &SharedCoordinator,
    key: &VersionKey,
    backend: Backend,
    root: Option<PathBuf>,
) -> Result<(Model, Option<Arc<OutlierModel>>), LoadError> {
    let record_key = keys::model_version(&key.0, &key.1);
    let record: ModelVersionRecord = codec::get(coord.as_ref(), &record_key)
        .await
        .map_err(|e| LoadError::Record(format!("cannot read {record_key}: {e}")))?
        .ok_or_else(|| LoadError::Record(format!("no model version record at {record_key}")))?;
    let dir = package::package_dir(&record.package_uri)?;
    let model = package::load(record, backend, root).await?;
    // After the load checked the package (location, root, checksum): its reference outlier
    // model, read on the blocking pool; never fails the load.
    let outlier = crate::telemetry::load_outlier_model(dir).await;
    Ok((model, outlier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignment_keys() {
        let prefix = keys::assignments_of("w1");
        assert_eq!(
            parse_assignment(&prefix, &keys::assignment("w1", "digits", "2")),
            Some(("digits".into(), "2".into()))
        );
        assert_eq!(
            parse_assignment(&prefix, "/kiln/v1/assignments/w1/digits"),
            None
        );
        assert_eq!(
            parse_assignment(&prefix, "/kiln/v1/assignments/w1/a/b/c"),
            None
        );
        assert_eq!(
            parse_assignment(&prefix, "/kiln/v1/assignments/w2/a/1"),
            None
        );
    }
}
