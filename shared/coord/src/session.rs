//! One owned task per coordination session: a lease kept alive, its state published.
//!
//! A [`LeaseSession`] grants a lease and refreshes it every third of its TTL. Nobody else touches
//! the lease: users read [`SessionState`] from a `tokio::sync::watch` and (re)write their
//! lease-bound keys whenever the lease id changes. If the store stays unreachable until the lease
//! must have expired, or the store says it is gone, the session reports [`SessionState::Lost`] and
//! keeps trying to grant a new lease, so a process survives a store outage and re-registers.
//!
//! Each keep-alive may take a third of the TTL; one that fails or stalls is retried soon, not a
//! third of the TTL later. The lease counts as refreshed from when a keep-alive that succeeded
//! was *sent* (the store may have expired it a round trip before the answer came back). A lease
//! presumed lost is revoked on a best-effort basis, so that its keys do not outlive it when the
//! store had in fact kept it (etcd extends every lease across a leader change).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::types::LeaseId;
use crate::{CoordError, SharedCoordinator};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No lease yet (starting, or re-granting after a loss).
    Connecting,
    /// The lease is alive.
    Alive(LeaseId),
    /// The lease is gone; a new one is being requested.
    Lost,
}

impl SessionState {
    /// The live lease, if any.
    pub fn lease(&self) -> Option<LeaseId> {
        match self {
            SessionState::Alive(l) => Some(*l),
            _ => None,
        }
    }
}

/// A lease kept alive by a background task.
pub struct LeaseSession {
    coord: SharedCoordinator,
    state: watch::Receiver<SessionState>,
    task: JoinHandle<()>,
}

impl LeaseSession {
    /// Starts the session task. The first lease is granted in the background; wait for it with
    /// [`LeaseSession::wait_alive`].
    pub fn start(coord: SharedCoordinator, ttl: Duration) -> Self {
        let (tx, rx) = watch::channel(SessionState::Connecting);
        let task = tokio::spawn(run(coord.clone(), ttl, tx));
        Self {
            coord,
            state: rx,
            task,
        }
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    /// Waits until a lease is alive and returns it.
    pub async fn wait_alive(&self) -> LeaseId {
        let mut rx = self.state.clone();
        loop {
            if let Some(lease) = rx.borrow_and_update().lease() {
                return lease;
            }
            if rx.changed().await.is_err() {
                // The task ended: only on drop; wait forever is wrong, so report 0.
                return 0;
            }
        }
    }

    /// Stops keeping the lease alive and revokes it, deleting its keys at once.
    pub async fn close(self) {
        self.task.abort();
        if let Some(lease) = self.state().lease() {
            let _ = self.coord.revoke_lease(lease).await;
        }
    }
}

impl Drop for LeaseSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(coord: SharedCoordinator, ttl: Duration, tx: watch::Sender<SessionState>) {
    let retry = Duration::from_millis(200).min(ttl / 4);
    loop {
        let lease = match coord.grant_lease(ttl).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "cannot grant lease; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        tx.send_replace(SessionState::Alive(lease));
        tracing::debug!(lease = format!("{lease:x}"), "lease granted");
        let mut last_ok = Instant::now();
        let mut pause = ttl / 3;
        loop {
            tokio::time::sleep(pause).await;
            let sent = Instant::now();
            let refreshed = tokio::time::timeout(ttl / 3, coord.keep_alive(lease))
                .await
                .unwrap_or_else(|_| Err(CoordError::Unavailable("keep-alive timed out".into())));
            match refreshed {
                Ok(()) => {
                    last_ok = sent;
                    pause = ttl / 3;
                }
                Err(CoordError::LeaseExpired(_)) => break,
                Err(e) if last_ok.elapsed() >= ttl => {
                    tracing::warn!(error = %e, "lease presumed expired");
                    let revoke = coord.revoke_lease(lease);
                    let _ = tokio::time::timeout(retry, revoke).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keep-alive failed; retrying");
                    pause = retry;
                }
            }
        }
        tracing::warn!(
            lease = format!("{lease:x}"),
            "lease lost; granting a new one"
        );
        tx.send_replace(SessionState::Lost);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Coordinator;
    use crate::testing::Faulty;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_keep_alive_loses_the_lease_within_its_ttl_and_revokes_it() {
        let ttl = Duration::from_secs(3);
        let store = Arc::new(Faulty::default());
        let session = LeaseSession::start(store.clone(), ttl);
        let lease = session.wait_alive().await;
        store.stall_keep_alives(true);
        let stalled = Instant::now();
        // Granting still works, so the session goes Lost and at once Alive on a new lease.
        let mut state = session.subscribe();
        tokio::time::timeout(
            ttl * 3,
            state.wait_for(|s| s.lease().is_some_and(|l| l != lease)),
        )
        .await
        .expect("a hung keep-alive must not keep the session on its lease")
        .unwrap();
        assert!(
            stalled.elapsed() <= ttl + ttl / 3,
            "{:?}",
            stalled.elapsed()
        );
        // The old lease is revoked: its keys do not outlive the session's view of it.
        assert!(matches!(
            store.inner.keep_alive(lease).await,
            Err(CoordError::LeaseExpired(_))
        ));
    }
}
