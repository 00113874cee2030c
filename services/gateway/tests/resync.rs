//! Resync: when the watch breaks, the gateway serves from its last table, and once the store
//! answers again it lists afresh, so changes made during the outage are not missed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_coord::{
    CoordError, Coordinator, KeyValue, LeaseId, Listing, MemoryCoordinator, Result, TxnOutcome,
    TxnRequest, WatchStream, keys,
};
use tokio::sync::watch;

use common::*;

/// The in-memory store behind a switch: while `cut` is on, listings and watches fail and open
/// watches end with an error, as when etcd is unreachable. Writes always go through (they
/// stand for other processes that still reach the store).
struct Flaky {
    inner: MemoryCoordinator,
    cut: watch::Sender<bool>,
}

impl Flaky {
    fn unavailable() -> CoordError {
        CoordError::Unavailable("cut by the test".into())
    }

    fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

#[async_trait]
impl Coordinator for Flaky {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        if self.is_cut() {
            return Err(Self::unavailable());
        }
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.delete_prefix(prefix).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn watch_prefix(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        if self.is_cut() {
            return Err(Self::unavailable());
        }
        let mut cut = self.cut.subscribe();
        let stream = self
            .inner
            .watch_prefix(prefix, from_revision)
            .await?
            .take_until(async move {
                let _ = cut.wait_for(|c| *c).await;
            })
            .chain(futures::stream::once(async { Err(Flaky::unavailable()) }));
        Ok(Box::pin(stream))
    }
    async fn txn(&self, txn: TxnRequest) -> Result<TxnOutcome> {
        self.inner.txn(txn).await
    }
    fn kind(&self) -> &'static str {
        "flaky"
    }
}

#[tokio::test]
async fn serves_from_the_last_table_while_cut_off_then_relists() {
    let flaky = Arc::new(Flaky {
        inner: MemoryCoordinator::new(),
        cut: watch::channel(false).0,
    });
    let a = FakeWorker::start("wa", Behaviour::Echo).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*flaky, "m", "1", &a, ReplicaState::Ready).await;
    let gw = gateway(flaky.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 1).await;
    let mut client = client(&gw).await;

    flaky.cut.send_replace(true);
    eventually(Duration::from_secs(5), "watch lost", || async {
        metric_value(&gw, "kiln_routing_watch_connected") == 0.0
    })
    .await;
    // The cluster changes while the gateway cannot see it.
    register(&*flaky, "m", "1", &b, ReplicaState::Ready).await;
    flaky.delete(&keys::replica("m", "1", "wa")).await.unwrap();
    for _ in 0..10 {
        let r = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
        assert_eq!(
            served_by(&r.into_inner()),
            "wa",
            "served from the last table"
        );
    }
    assert!(gw.is_ready(), "still ready with the last table");

    flaky.cut.send_replace(false);
    eventually(Duration::from_secs(10), "relisted", || async {
        let table = gw.routing_table();
        let ready = &table.model("m").unwrap().versions["1"].ready;
        ready.len() == 1 && ready[0].worker_id == "wb"
    })
    .await;
    assert_eq!(metric_value(&gw, "kiln_routing_watch_connected"), 1.0);
    for _ in 0..10 {
        let r = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
        assert_eq!(served_by(&r.into_inner()), "wb");
    }
    // And the new watch follows changes again.
    flaky.delete(&keys::replica("m", "1", "wb")).await.unwrap();
    eventually(Duration::from_secs(5), "replica gone", || async {
        gw.routing_table().model("m").is_none()
    })
    .await;
    gw.shutdown().await;
}
