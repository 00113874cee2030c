//! The conformance suite every [`Coordinator`] must pass, run against etcd and memory alike.
//!
//! Each check is a plain async function over a [`SharedCoordinator`]; [`conformance_tests!`]
//! turns them into one `#[tokio::test]` each for a given setup. Waiting on the store's own timers
//! (lease expiry) polls with a deadline; nothing sleeps to "let state settle".

use std::time::Duration;

use futures::StreamExt;
use tokio::time::{Instant, timeout};

use crate::types::{Compare, EventKind, TxnOp, TxnRequest, WatchStream};
use crate::{CoordError, Election, LeaseSession, SessionState, SharedCoordinator};

/// The lease TTL the suite uses: etcd's minimum granted TTL is about 2 s.
pub const TTL: Duration = Duration::from_secs(2);

/// Polls `cond` every 50 ms until it holds or `within` passes; panics with `what` on timeout.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_batch(w: &mut WatchStream) -> Vec<crate::WatchEvent> {
    timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event within 5 s")
        .expect("watch stream open")
        .expect("watch batch ok")
}

/// Put, get and list: values, sorting, prefix isolation, revisions and versions.
pub async fn put_get_list(c: SharedCoordinator) {
    let p = "/conf/pgl/";
    assert_eq!(c.get(&format!("{p}a")).await.unwrap(), None);
    let r1 = c.put(&format!("{p}b"), b"2".to_vec(), 0).await.unwrap();
    let r2 = c.put(&format!("{p}a"), b"1".to_vec(), 0).await.unwrap();
    c.put("/conf/pglx", b"outside".to_vec(), 0).await.unwrap();
    assert!(r2 > r1, "revisions increase");
    let listing = c.list(p).await.unwrap();
    let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, [format!("{p}a"), format!("{p}b")]);
    assert!(listing.revision >= r2);
    let r3 = c.put(&format!("{p}a"), b"1b".to_vec(), 0).await.unwrap();
    let a = c.get(&format!("{p}a")).await.unwrap().unwrap();
    assert_eq!(a.value, b"1b");
    assert_eq!(a.version, 2);
    assert_eq!(a.create_revision, r2);
    assert_eq!(a.mod_revision, r3);
    assert_eq!(a.lease, 0);
}

/// Delete of one key and of a prefix.
pub async fn delete_and_delete_prefix(c: SharedCoordinator) {
    let p = "/conf/del/";
    for k in ["x", "y", "z/1"] {
        c.put(&format!("{p}{k}"), b"v".to_vec(), 0).await.unwrap();
    }
    assert!(c.delete(&format!("{p}x")).await.unwrap());
    assert!(!c.delete(&format!("{p}x")).await.unwrap());
    assert_eq!(c.delete_prefix(p).await.unwrap(), 2);
    assert!(c.list(p).await.unwrap().kvs.is_empty());
}

/// A kept-alive lease keeps its keys; an abandoned one loses them after its TTL.
pub async fn lease_keep_alive_and_expiry(c: SharedCoordinator) {
    let key = "/conf/lease/k";
    let lease = c.grant_lease(TTL).await.unwrap();
    c.put(key, b"v".to_vec(), lease).await.unwrap();
    assert_eq!(c.get(key).await.unwrap().unwrap().lease, lease);
    // Keep it alive past twice its TTL.
    let until = Instant::now() + TTL * 2;
    while Instant::now() < until {
        c.keep_alive(lease).await.unwrap();
        tokio::time::sleep(TTL / 4).await;
    }
    assert!(
        c.get(key).await.unwrap().is_some(),
        "kept-alive key survives"
    );
    // Abandon it: the key goes within TTL (+ the store's granularity).
    let abandoned = Instant::now();
    eventually(TTL * 3, "leased key to expire", || async {
        c.get(key).await.unwrap().is_none()
    })
    .await;
    assert!(abandoned.elapsed() >= TTL / 2, "not expired early");
    let refreshed = c.keep_alive(lease).await;
    assert!(
        matches!(refreshed, Err(CoordError::LeaseExpired(_))),
        "{refreshed:?}"
    );
    assert!(c.put(key, b"v".to_vec(), lease).await.is_err());
}

/// Revoking a lease deletes its keys at once.
pub async fn lease_revoke(c: SharedCoordinator) {
    let lease = c.grant_lease(Duration::from_secs(30)).await.unwrap();
    c.put("/conf/revoke/a", b"v".to_vec(), lease).await.unwrap();
    c.put("/conf/revoke/b", b"v".to_vec(), lease).await.unwrap();
    c.put("/conf/revoke/c", b"v".to_vec(), 0).await.unwrap();
    c.revoke_lease(lease).await.unwrap();
    let left: Vec<_> = c.list("/conf/revoke/").await.unwrap().kvs;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, "/conf/revoke/c");
}

/// A watch from a past revision replays history, then follows live changes; a watch from now
/// sees only new ones; keys outside the prefix are not seen.
pub async fn watch_from_revision(c: SharedCoordinator) {
    let p = "/conf/watch/";
    let start = c.list(p).await.unwrap().revision;
    c.put(&format!("{p}a"), b"1".to_vec(), 0).await.unwrap();
    c.delete(&format!("{p}a")).await.unwrap();
    c.put("/conf/watchother", b"x".to_vec(), 0).await.unwrap();
    let mut replay = c.watch_prefix(p, start + 1).await.unwrap();
    let mut now = c.watch_prefix(p, 0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_batch(&mut replay).await);
    }
    assert_eq!(seen[0].kind, EventKind::Put);
    assert_eq!(seen[0].kv.value, b"1");
    assert_eq!(seen[1].kind, EventKind::Delete);
    assert_eq!(seen[1].kv.key, format!("{p}a"));
    let rev = c.put(&format!("{p}b"), b"2".to_vec(), 0).await.unwrap();
    for w in [&mut replay, &mut now] {
        let batch = next_batch(w).await;
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].kv.key, format!("{p}b"));
        assert_eq!(batch[0].kv.mod_revision, rev);
    }
}

/// Lease expiry shows up in watches as deletes (this is how the gateway drops dead workers).
pub async fn watch_sees_lease_expiry(c: SharedCoordinator) {
    let p = "/conf/wexp/";
    let lease = c.grant_lease(TTL).await.unwrap();
    c.put(&format!("{p}w"), b"v".to_vec(), lease).await.unwrap();
    let mut w = c.watch_prefix(p, 0).await.unwrap();
    let batch = timeout(TTL * 3, w.next())
        .await
        .expect("expiry event")
        .unwrap()
        .unwrap();
    assert_eq!(batch[0].kind, EventKind::Delete);
}

/// Compare-and-swap transactions: create-if-absent, mod-revision and value guards, and the
/// failure branch.
pub async fn transactions(c: SharedCoordinator) {
    let k = "/conf/txn/k".to_string();
    let create = |v: &str| TxnRequest {
        compare: vec![Compare::Absent(k.clone())],
        success: vec![TxnOp::Put {
            key: k.clone(),
            value: v.as_bytes().to_vec(),
            lease: 0,
        }],
        failure: vec![],
    };
    assert!(c.txn(create("first")).await.unwrap().succeeded);
    assert!(!c.txn(create("second")).await.unwrap().succeeded);
    let kv = c.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, b"first");
    let guarded = |rev: i64| TxnRequest {
        compare: vec![Compare::ModRevision(k.clone(), rev)],
        success: vec![
            TxnOp::Put {
                key: k.clone(),
                value: b"cas".to_vec(),
                lease: 0,
            },
            TxnOp::Put {
                key: "/conf/txn/other".into(),
                value: b"o".to_vec(),
                lease: 0,
            },
        ],
        failure: vec![TxnOp::Put {
            key: "/conf/txn/lost".into(),
            value: b"l".to_vec(),
            lease: 0,
        }],
    };
    let ok = c.txn(guarded(kv.mod_revision)).await.unwrap();
    assert!(ok.succeeded);
    let after = c.get(&k).await.unwrap().unwrap();
    let other = c.get("/conf/txn/other").await.unwrap().unwrap();
    assert_eq!(
        after.mod_revision, other.mod_revision,
        "one revision per txn"
    );
    assert_eq!(after.mod_revision, ok.revision);
    assert!(!c.txn(guarded(kv.mod_revision)).await.unwrap().succeeded);
    assert!(c.get("/conf/txn/lost").await.unwrap().is_some());
    let by_value = TxnRequest {
        compare: vec![Compare::Value(k.clone(), b"cas".to_vec())],
        success: vec![TxnOp::Delete(k.clone())],
        failure: vec![],
    };
    assert!(c.txn(by_value).await.unwrap().succeeded);
    assert!(c.get(&k).await.unwrap().is_none());
}

/// Leader election: one leader at a time, the next takes over on resign and on lease loss.
pub async fn leader_election(c: SharedCoordinator) {
    let election = Election::new(c.clone(), "/conf/election");
    assert_eq!(election.leader().await.unwrap(), None);
    let l1 = c.grant_lease(TTL).await.unwrap();
    let l2 = c.grant_lease(Duration::from_secs(30)).await.unwrap();
    let l3 = c.grant_lease(Duration::from_secs(30)).await.unwrap();
    let first = election.campaign("one", l1).await.unwrap();
    assert_eq!(election.leader().await.unwrap().as_deref(), Some("one"));
    let e2 = election.clone();
    let mut second = tokio::spawn(async move { e2.campaign("two", l2).await });
    assert!(
        timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "second candidate must wait"
    );
    // The first leader dies (its lease is not kept alive): the second takes over.
    let second = timeout(TTL * 3, second)
        .await
        .expect("second elected after the first lease expired")
        .unwrap()
        .unwrap();
    assert!(!election.is_leader(&first).await.unwrap());
    assert!(election.is_leader(&second).await.unwrap());
    assert_eq!(election.leader().await.unwrap().as_deref(), Some("two"));
    let e3 = election.clone();
    let third = tokio::spawn(async move { e3.campaign("three", l3).await });
    election.resign(&second).await.unwrap();
    let third = timeout(Duration::from_secs(5), third)
        .await
        .expect("third elected after resign")
        .unwrap()
        .unwrap();
    assert!(election.is_leader(&third).await.unwrap());
}

/// A lease session keeps its lease alive past the TTL and revokes it on close.
pub async fn lease_session(c: SharedCoordinator) {
    let session = LeaseSession::start(c.clone(), TTL);
    let lease = timeout(Duration::from_secs(5), session.wait_alive())
        .await
        .unwrap();
    c.put("/conf/session/k", b"v".to_vec(), lease)
        .await
        .unwrap();
    tokio::time::sleep(TTL * 2).await; // the session, not the test, must keep it alive
    assert_eq!(session.state(), SessionState::Alive(lease));
    assert!(c.get("/conf/session/k").await.unwrap().is_some());
    session.close().await;
    assert!(c.get("/conf/session/k").await.unwrap().is_none());
}

/// Generates one `#[tokio::test]` per conformance check. `$setup` is an async expression
/// yielding `(SharedCoordinator, guard)`; the guard lives until the test ends.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:expr) => {
        $crate::conformance_tests!(@each $setup;
            put_get_list, delete_and_delete_prefix, lease_keep_alive_and_expiry, lease_revoke,
            watch_from_revision, watch_sees_lease_expiry, transactions, leader_election,
            lease_session);
    };
    (@each $setup:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (coord, _guard) = $setup.await;
                $crate::conformance::$name(coord).await;
            }
        )*
    };
}
