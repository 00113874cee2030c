//! Controller leader election between monitor instances (in-memory store).

mod common;

use common::*;
use kiln_coord::keys;

async fn leaders(monitors: &[&kiln_monitor::Running]) -> usize {
    monitors.iter().filter(|m| m.is_leader()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leader_and_failover_on_shutdown() {
    let coord = memory();
    // A long TTL, so a quick takeover below proves the leader stepped down (not that it expired).
    let config = |name: &str| kiln_monitor::Config {
        lease_ttl_secs: 30,
        ..fast_config(name)
    };
    let a = kiln_monitor::start(config("a"), coord.clone())
        .await
        .unwrap();
    let b = kiln_monitor::start(config("b"), coord.clone())
        .await
        .unwrap();
    eventually(WITHIN, "one leader", || async {
        leaders(&[&a, &b]).await == 1
    })
    .await;
    // It stays exactly one over several ticks and lease refreshes.
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(leaders(&[&a, &b]).await, 1);
    }
    let election = kiln_coord::Election::new(coord.clone(), keys::CONTROLLER_ELECTION);
    let (leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };
    let name = election.leader().await.unwrap().unwrap();
    assert!(["a", "b"].contains(&name.as_str()));

    // The leader shuts down: it resigns, so the standby leads long before the lease TTL.
    let stopped = tokio::time::Instant::now();
    leader.shutdown().await;
    let mut watch = standby.leader();
    tokio::time::timeout(WITHIN, watch.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        stopped.elapsed()
    );
    assert_ne!(election.leader().await.unwrap().unwrap(), name);
    standby.shutdown().await;
    assert_eq!(
        election.leader().await.unwrap(),
        None,
        "the last leader resigned too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_lost_steps_down_and_campaigns_again() {
    let coord = memory();
    let a = kiln_monitor::start(fast_config("a"), coord.clone())
        .await
        .unwrap();
    eventually(WITHIN, "a leads", || async { a.is_leader() }).await;
    let b = kiln_monitor::start(fast_config("b"), coord.clone())
        .await
        .unwrap();
    // Revoke a's lease behind its back (as if etcd expired it during a partition).
    let candidates = coord
        .list(&format!("{}/", keys::CONTROLLER_ELECTION))
        .await
        .unwrap();
    let leader_kv = candidates
        .kvs
        .iter()
        .min_by_key(|kv| kv.create_revision)
        .unwrap();
    assert_eq!(leader_kv.value, b"a");
    coord.revoke_lease(leader_kv.lease).await.unwrap();
    eventually(WITHIN, "b takes over", || async {
        b.is_leader() && !a.is_leader()
    })
    .await;
    // a is back in line with a new lease, as a standby.
    eventually(WITHIN, "a campaigns again", || async {
        let c = coord
            .list(&format!("{}/", keys::CONTROLLER_ELECTION))
            .await
            .unwrap();
        c.kvs
            .iter()
            .any(|kv| kv.value == b"a" && kv.lease != leader_kv.lease)
    })
    .await;
    assert!(!a.is_leader());
    // And it leads again when b goes.
    b.shutdown().await;
    eventually(WITHIN, "a leads again", || async { a.is_leader() }).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_shows_in_metrics() {
    let coord = memory();
    let a = kiln_monitor::start(fast_config("a"), coord.clone())
        .await
        .unwrap();
    eventually(WITHIN, "a leads", || async { a.is_leader() }).await;
    eventually(WITHIN, "a reconciled", || async {
        let body = http_get(a.http_addr, "/metrics").await;
        metric(&body, "kiln_controller_reconciles_total").is_some_and(|v| v >= 2.0)
    })
    .await;
    let body = http_get(a.http_addr, "/metrics").await;
    assert_eq!(
        metric(&body, "kiln_controller_is_leader"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "kiln_controller_assignments"),
        Some(0.0),
        "{body}"
    );
    assert!(http_get(a.http_addr, "/readyz").await.contains("200 OK"));
    a.shutdown().await;
}
