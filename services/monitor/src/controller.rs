//! The leader-elected controller: one owned task per monitor instance.
//!
//! The task owns a [`LeaseSession`] and campaigns in the [`Election`] on
//! [`keys::CONTROLLER_ELECTION`] with that lease. Once elected it reconciles on every watch event
//! and every tick, until one of these happens:
//! - the session reports the lease lost or replaced (`Lost`, or `Alive` with another id): it stops
//!   reconciling at once and campaigns again with the new lease;
//! - the leader key is no longer first in line (someone deleted it): same;
//! - the monitor shuts down: it resigns and revokes the lease, so a standby takes over at once
//!   instead of after the TTL.
//!
//! Leadership is published in a `watch::Receiver<bool>` and the `kiln_controller_is_leader`
//! gauge. Every write of a pass is fenced on the leader key (see [`crate::reconcile`]), so an
//! instance that lost its lease but has not noticed yet cannot change assignments.

use std::sync::Arc;
use std::time::Duration;

use kiln_coord::{Election, LeaseId, LeaseSession, SessionState, SharedCoordinator, keys};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::reconcile::{Reconciler, spawn_triggers};
use crate::task::Task;

/// Pause before campaigning again after an election error.
const RETRY: Duration = Duration::from_millis(250);

/// Settings of the controller task.
pub(crate) struct ControllerSettings {
    /// Value written in the election (shown as the leader).
    pub name: String,
    /// TTL of the election lease.
    pub lease_ttl: Duration,
    /// Reconcile tick.
    pub interval: Duration,
}

/// Handle to the running controller task.
pub(crate) struct Controller {
    stop: watch::Sender<bool>,
    leader: watch::Receiver<bool>,
    task: Task,
}

impl Controller {
    /// Starts campaigning in the background.
    pub(crate) fn spawn(
        coord: SharedCoordinator,
        settings: ControllerSettings,
        metrics: Metrics,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (leader_tx, leader) = watch::channel(false);
        let task = Task::spawn(run(coord, settings, metrics, leader_tx, stop_rx));
        Self { stop, leader, task }
    }

    /// Whether this instance leads, as it changes.
    pub(crate) fn leader(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops reconciling, resigns and revokes the lease.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        self.task.join(Duration::from_secs(5)).await;
    }
}

/// Why leading ended.
enum Ended {
    /// Shutdown was requested.
    Stopped,
    /// The lease or the leader key was lost.
    Lost,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means the handle is gone: stop too.
    let _ = stop.wait_for(|s| *s).await;
}

async fn alive(state: &mut watch::Receiver<SessionState>) -> LeaseId {
    loop {
        if let Some(lease) = state.borrow_and_update().lease() {
            return lease;
        }
        if state.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Resolves when the session no longer holds `lease`.
async fn lease_gone(state: &mut watch::Receiver<SessionState>, lease: LeaseId) {
    if state.wait_for(|s| s.lease() != Some(lease)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run(
    coord: SharedCoordinator,
    settings: ControllerSettings,
    metrics: Metrics,
    leader_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let session = LeaseSession::start(coord.clone(), settings.lease_ttl);
    metrics.session.follow(session.subscribe());
    let mut state = session.subscribe();
    let election = Election::new(coord.clone(), keys::CONTROLLER_ELECTION);
    let notify = Arc::new(Notify::new());
    let _triggers = spawn_triggers(coord.clone(), notify.clone());
    let mut reconciler = Reconciler::default();
    loop {
        let lease = tokio::select! {
            lease = alive(&mut state) => lease,
            _ = stopped(&mut stop) => break,
        };
        let key = tokio::select! {
            elected = election.campaign(&settings.name, lease) => match elected {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = stopped(&mut stop) => break,
                    }
                }
            },
            _ = lease_gone(&mut state, lease) => continue,
            _ = stopped(&mut stop) => break,
        };
        tracing::info!(name = %settings.name, lease = format!("{lease:x}"), "became controller leader");
        leader_tx.send_replace(true);
        metrics.is_leader.set(1);

        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            match election.is_leader(&key).await {
                Ok(false) => break Ended::Lost,
                Ok(true) => match reconciler.pass(coord.as_ref(), &key, &metrics).await {
                    Ok(o) if o.created + o.deleted + o.retired > 0 => {
                        tracing::debug!(
                            created = o.created,
                            deleted = o.deleted,
                            retired = o.retired,
                            "reconciled"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot check leadership"),
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = notify.notified() => {}
                _ = lease_gone(&mut state, lease) => break Ended::Lost,
                _ = stopped(&mut stop) => break Ended::Stopped,
            }
        };
        leader_tx.send_replace(false);
        metrics.is_leader.set(0);
        metrics.forget_cluster();
        match ended {
            Ended::Lost => tracing::warn!("lost controller leadership; campaigning again"),
            Ended::Stopped => {
                if let Err(e) = election.resign(&key).await {
                    tracing::warn!(error = %e, "cannot resign; the lease revocation will do");
                }
                break;
            }
        }
    }
    session.close().await;
    tracing::info!("controller stopped");
}
