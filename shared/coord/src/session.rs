//! One owned task per coordination session: a lease kept alive, its state published.
//!
//! A [`LeaseSession`] grants a lease and refreshes it every third of its TTL. Nobody else touches
//! the lease: users read [`SessionState`] from a `tokio::sync::watch` and (re)write their
//! lease-bound keys whenever the lease id changes. If the store stays unreachable until the lease
//! must have expired, or the store says it is gone, the session reports [`SessionState::Lost`] and
//! keeps trying to grant a new lease, so a process survives a store outage and re-registers.

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
        loop {
            tokio::time::sleep(ttl / 3).await;
            match coord.keep_alive(lease).await {
                Ok(()) => last_ok = Instant::now(),
                Err(CoordError::LeaseExpired(_)) => break,
                Err(e) if last_ok.elapsed() >= ttl => {
                    tracing::warn!(error = %e, "lease presumed expired");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "keep-alive failed; retrying"),
            }
        }
        tracing::warn!(
            lease = format!("{lease:x}"),
            "lease lost; granting a new one"
        );
        tx.send_replace(SessionState::Lost);
    }
}
