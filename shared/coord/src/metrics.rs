//! Prometheus metrics of a [`LeaseSession`](crate::LeaseSession), the same in every service that
//! holds one (the worker's registration, the monitor's controller election).
//!
//! [`SessionMetrics::register`] adds the series to a registry; [`SessionMetrics::follow`] keeps
//! them in step with a session's `watch` channel until the session ends (then `up` reads 0 and no
//! state is set):
//! - `kiln_etcd_session_up` (gauge): 1 while the lease is alive, 0 otherwise;
//! - `kiln_etcd_session_state{state}` (gauge, one-hot): `connecting`, `alive` or `lost`;
//! - `kiln_etcd_session_leases_total` (counter): distinct leases seen alive (1 after a clean
//!   start; every further one is a lease lost and granted again).
//!
//! The names say etcd because that is the production store; the in-memory coordinator of
//! `kiln up` reports through the same series.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::SessionState;

/// The `state` label of `kiln_etcd_session_state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `connecting`, `alive` or `lost`.
    pub state: &'static str,
}

/// Every state name, in the order the one-hot series are written.
const STATES: [&str; 3] = ["connecting", "alive", "lost"];

/// The session's series; cheap to clone (every handle is an `Arc` inside).
#[derive(Debug, Clone, Default)]
pub struct SessionMetrics {
    up: Gauge,
    state: Family<StateLabel, Gauge>,
    leases: Counter,
    /// The last lease counted (0: none), so a lease is counted once however often it is seen.
    last_lease: Arc<AtomicI64>,
}

/// The label value of a state.
pub fn state_name(state: &SessionState) -> &'static str {
    match state {
        SessionState::Connecting => "connecting",
        SessionState::Alive(_) => "alive",
        SessionState::Lost => "lost",
    }
}

impl SessionMetrics {
    /// Creates the series (state `connecting`) and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "kiln_etcd_session_up",
            "1 while this process holds a live coordination lease",
            m.up.clone(),
        );
        registry.register(
            "kiln_etcd_session_state",
            "State of the coordination lease session (one-hot: connecting, alive, lost)",
            m.state.clone(),
        );
        registry.register(
            "kiln_etcd_session_leases",
            "Distinct coordination leases seen alive (more than 1: the lease was lost and re-granted)",
            m.leases.clone(),
        );
        m.observe(&SessionState::Connecting);
        m
    }

    /// Sets the series to `state`.
    pub fn observe(&self, state: &SessionState) {
        self.up.set(i64::from(state.lease().is_some()));
        let current = state_name(state);
        for name in STATES {
            self.state
                .get_or_create(&StateLabel { state: name })
                .set(i64::from(name == current));
        }
        if let Some(lease) = state.lease()
            && self.last_lease.swap(lease, Ordering::Relaxed) != lease
        {
            self.leases.inc();
        }
    }

    /// Follows `session` (from [`LeaseSession::subscribe`](crate::LeaseSession::subscribe))
    /// until the session ends; then `up` and every state read 0.
    pub fn follow(&self, mut session: watch::Receiver<SessionState>) -> JoinHandle<()> {
        let m = self.clone();
        tokio::spawn(async move {
            loop {
                let state = *session.borrow_and_update();
                m.observe(&state);
                if session.changed().await.is_err() {
                    break;
                }
            }
            m.up.set(0);
            for name in STATES {
                m.state.get_or_create(&StateLabel { state: name }).set(0);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conformance::eventually;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[tokio::test]
    async fn follows_the_session_through_a_loss_and_its_end() {
        let mut registry = Registry::default();
        let m = SessionMetrics::register(&mut registry);
        let text = scrape(&registry);
        assert!(text.contains("kiln_etcd_session_up 0\n"), "{text}");
        assert!(text.contains("kiln_etcd_session_state{state=\"connecting\"} 1\n"));

        let (tx, rx) = watch::channel(SessionState::Connecting);
        let task = m.follow(rx);
        tx.send_replace(SessionState::Alive(7));
        let live = |s: &str| s.contains("kiln_etcd_session_up 1\n");
        eventually(Duration::from_secs(5), "session up", || async {
            live(&scrape(&registry))
        })
        .await;
        let text = scrape(&registry);
        assert!(
            text.contains("kiln_etcd_session_state{state=\"alive\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kiln_etcd_session_state{state=\"lost\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("kiln_etcd_session_leases_total 1\n"),
            "{text}"
        );

        tx.send_replace(SessionState::Lost);
        eventually(Duration::from_secs(5), "session lost", || async {
            scrape(&registry).contains("kiln_etcd_session_state{state=\"lost\"} 1\n")
        })
        .await;
        tx.send_replace(SessionState::Alive(8));
        eventually(Duration::from_secs(5), "second lease", || async {
            scrape(&registry).contains("kiln_etcd_session_leases_total 2\n")
        })
        .await;

        drop(tx);
        task.await.unwrap();
        let text = scrape(&registry);
        assert!(text.contains("kiln_etcd_session_up 0\n"), "{text}");
        assert!(
            text.contains("kiln_etcd_session_state{state=\"alive\"} 0\n"),
            "{text}"
        );
    }
}
