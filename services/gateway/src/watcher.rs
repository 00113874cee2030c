//! The one task that owns the gateway's etcd session (STYLE.md habit 5).
//!
//! It lists `/kiln/v1/replicas/` and `/kiln/v1/deployments/`, watches both from the listing's
//! revision, applies every batch to its [`RoutingState`] and publishes a fresh
//! `Arc<RoutingTable>` through a `tokio::sync::watch`. On any error (store unreachable, watch
//! cancelled, revision compacted, stream ended) it backs off and lists again; until a listing
//! succeeds, the last published table stays in place, so the gateway keeps serving with etcd
//! down. Before publishing a table it opens channels to the new worker addresses, and after it
//! drops the channels no replica references any more.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kiln_coord::{CoordError, SharedCoordinator, keys};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::Backends;
use crate::metrics::Metrics;
use crate::routing::{RoutingState, RoutingTable};

/// First pause before resyncing after an error; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between resync attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// The routing watcher; see the module docs.
pub struct Watcher {
    coord: SharedCoordinator,
    state: RoutingState,
    table: watch::Sender<Arc<RoutingTable>>,
    synced: watch::Sender<bool>,
    backends: Arc<Backends>,
    metrics: Metrics,
}

impl Watcher {
    /// Starts the task. It publishes tables on `table`, flips `synced` to true after the first
    /// successful listing, and runs until aborted.
    pub fn spawn(
        coord: SharedCoordinator,
        table: watch::Sender<Arc<RoutingTable>>,
        synced: watch::Sender<bool>,
        backends: Arc<Backends>,
        metrics: Metrics,
    ) -> JoinHandle<()> {
        let watcher = Self {
            coord,
            state: RoutingState::default(),
            table,
            synced,
            backends,
            metrics,
        };
        tokio::spawn(watcher.run())
    }

    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let Err(error) = self.sync_and_watch(&mut backoff).await;
            self.metrics.watch_connected.set(0);
            tracing::warn!(
                error = %error,
                retry_in = ?backoff,
                "routing watch lost; serving from the last routing table until resynced"
            );
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One list-then-watch session; it only ends with the error that ended it.
    async fn sync_and_watch(
        &mut self,
        backoff: &mut Duration,
    ) -> Result<std::convert::Infallible, CoordError> {
        let replicas = self.coord.list(keys::REPLICAS).await?;
        let deployments = self.coord.list(keys::DEPLOYMENTS).await?;
        let mut replica_watch = self
            .coord
            .watch_prefix(keys::REPLICAS, replicas.revision + 1)
            .await?;
        let mut deployment_watch = self
            .coord
            .watch_prefix(keys::DEPLOYMENTS, deployments.revision + 1)
            .await?;
        self.state.reset_replicas(&replicas.kvs);
        self.state.reset_deployments(&deployments.kvs);
        self.publish();
        self.synced
            .send_if_modified(|synced| !std::mem::replace(synced, true));
        self.metrics.watch_connected.set(1);
        *backoff = MIN_BACKOFF;
        tracing::info!(
            replicas = replicas.kvs.len(),
            deployments = deployments.kvs.len(),
            "routing table synced"
        );
        loop {
            let batch = tokio::select! {
                batch = replica_watch.next() => batch,
                batch = deployment_watch.next() => batch,
            };
            match batch {
                Some(Ok(events)) => {
                    for event in &events {
                        self.state.apply(event);
                    }
                    self.publish();
                }
                Some(Err(e)) => return Err(e),
                None => return Err(CoordError::Unavailable("watch stream ended".into())),
            }
        }
    }

    /// Publishes the table built from the state (if it changed), keeping the channel pool in
    /// step: new addresses are added before the table that routes to them is visible.
    fn publish(&mut self) {
        self.metrics.touch_table();
        let table = self.state.table();
        if table == **self.table.borrow() {
            return;
        }
        let (added, removed) = self.backends.sync(table.addresses());
        self.metrics
            .table_replicas
            .set(table.ready_replicas() as i64);
        self.metrics.table_workers.set(self.backends.len() as i64);
        self.metrics.forget_removed(&self.table.borrow(), &table);
        tracing::debug!(
            ready_replicas = table.ready_replicas(),
            workers_added = added,
            workers_removed = removed,
            "routing table updated"
        );
        self.table.send_replace(Arc::new(table));
    }
}
