//! One reconcile pass, and the watches that trigger passes.
//!
//! A pass reads the whole desired and actual state (workers, deployments, models, assignments),
//! asks the pure [`plan`](crate::plan::plan) what to change, and writes each change in its own
//! transaction, fenced twice: the leader key must still be ours at the revision we were elected
//! (a deposed leader writes nothing), and the assignment must be as we read it (`Absent` for a
//! create, its mod revision for a delete), so a pass racing another writer changes nothing it did
//! not see. A failed write is not retried here: the next pass reads again and re-plans.
//!
//! Passes are triggered by [`spawn_triggers`]: one task per watched prefix lists (to learn the
//! revision), watches from the next revision and pokes a [`Notify`] on every batch; on a watch
//! error or end it backs off, lists again and re-watches (the resync that survives compaction and
//! reconnects), poking once since changes may have been missed. The controller also ticks, so a
//! missed event costs at most one period.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kiln_coord::codec;
use kiln_coord::{Compare, Coordinator, LeaderKey, SharedCoordinator, TxnOp, TxnRequest, keys};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::plan::{Plan, PlanIssue, plan, retirements};
use crate::state::snapshot;
use crate::task::Task;

/// Prefixes whose changes trigger a pass (replica states matter: leaving replicas and retiring
/// versions go once their replacements are READY).
const WATCHED: [&str; 5] = [
    keys::WORKERS,
    keys::DEPLOYMENTS,
    keys::MODELS,
    keys::REPLICAS,
    keys::DRAINS,
];

/// State carried from pass to pass (only to keep the log quiet).
#[derive(Default)]
pub(crate) struct Reconciler {
    last_issues: BTreeSet<String>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PassOutcome {
    /// Assignments created.
    pub created: usize,
    /// Assignments deleted.
    pub deleted: usize,
    /// Deployments whose retiring versions were removed.
    pub retired: usize,
}

fn fence(leader: &LeaderKey) -> Compare {
    Compare::ModRevision(leader.key.clone(), leader.create_revision)
}

impl Reconciler {
    /// Runs one pass as the leader holding `leader`.
    pub(crate) async fn pass(
        &mut self,
        coord: &dyn Coordinator,
        leader: &LeaderKey,
        metrics: &Metrics,
    ) -> Result<PassOutcome> {
        metrics.reconciles.inc();
        let result = self.pass_inner(coord, leader, metrics).await;
        if result.is_err() {
            metrics.reconcile_errors.inc();
        }
        result
    }

    async fn pass_inner(
        &mut self,
        coord: &dyn Coordinator,
        leader: &LeaderKey,
        metrics: &Metrics,
    ) -> Result<PassOutcome> {
        let snap = snapshot(coord).await?;
        metrics.observe(&snap.state);
        let p = plan(&snap.state);
        self.log_issues(&p);
        let mut outcome = PassOutcome::default();
        let mut lost = 0usize;
        for a in &p.delete {
            if snap.unreadable.covers(a) {
                tracing::warn!(worker = %a.worker_id, model = %a.model, version = %a.version, "keeping an assignment whose deployment, model or worker record cannot be read");
                continue;
            }
            let key = keys::assignment(&a.worker_id, &a.model, &a.version);
            let rev = snap.assignment_revs[&key];
            let txn = TxnRequest {
                compare: vec![fence(leader), Compare::ModRevision(key.clone(), rev)],
                success: vec![TxnOp::Delete(key)],
                failure: vec![],
            };
            if coord.txn(txn).await?.succeeded {
                tracing::info!(worker = %a.worker_id, model = %a.model, version = %a.version, "unassigned replica");
                outcome.deleted += 1;
            } else {
                lost += 1;
            }
        }
        for a in &p.create {
            let key = keys::assignment(&a.worker_id, &a.model, &a.version);
            let txn = TxnRequest {
                compare: vec![fence(leader), Compare::Absent(key.clone())],
                success: vec![TxnOp::Put {
                    key,
                    value: codec::encode(a),
                    lease: 0,
                }],
                failure: vec![],
            };
            if coord.txn(txn).await?.succeeded {
                tracing::info!(worker = %a.worker_id, model = %a.model, version = %a.version, "assigned replica");
                outcome.created += 1;
            } else {
                lost += 1;
            }
        }
        // Retiring versions whose successors are settled (all READY, or as READY as they can
        // get while the retiring ones hold their workers) leave their deployment; the next pass
        // (triggered by this very write) removes their assignments.
        for d in retirements(&snap.state, &p) {
            let key = keys::deployment(&d.model);
            let txn = TxnRequest {
                compare: vec![
                    fence(leader),
                    Compare::ModRevision(key.clone(), snap.deployment_revs[&d.model]),
                ],
                success: vec![TxnOp::Put {
                    key,
                    value: codec::encode(&d),
                    lease: 0,
                }],
                failure: vec![],
            };
            if coord.txn(txn).await?.succeeded {
                tracing::info!(model = %d.model, "retired the versions it replaced");
                outcome.retired += 1;
            } else {
                lost += 1;
            }
        }
        metrics
            .assignment_changes
            .inc_by((outcome.created + outcome.deleted) as u64);
        let total = snap.state.assignments.len() + outcome.created - outcome.deleted;
        metrics.assignments.set(total as i64);
        if lost > 0 {
            return Err(Error::Conflict(format!(
                "{lost} writes lost a race (state changed or leadership lost); re-planning"
            )));
        }
        Ok(outcome)
    }

    /// Logs plan issues when they change, not on every pass.
    fn log_issues(&mut self, p: &Plan) {
        let now: BTreeSet<String> = p.issues.iter().map(PlanIssue::to_string).collect();
        for issue in now.difference(&self.last_issues) {
            tracing::warn!("{issue}");
        }
        self.last_issues = now;
    }
}

/// Spawns one list+watch task per watched prefix; each pokes `notify` on every change.
pub(crate) fn spawn_triggers(coord: SharedCoordinator, notify: Arc<Notify>) -> Vec<Task> {
    WATCHED
        .iter()
        .map(|prefix| Task::spawn(watch_prefix(coord.clone(), prefix, notify.clone())))
        .collect()
}

async fn watch_prefix(coord: SharedCoordinator, prefix: &'static str, notify: Arc<Notify>) {
    const BACKOFF: Duration = Duration::from_millis(250);
    loop {
        match coord.list(prefix).await {
            Ok(listing) => {
                // Anything may have changed since the last watch died.
                notify.notify_one();
                match coord.watch_prefix(prefix, listing.revision + 1).await {
                    Ok(mut stream) => {
                        while let Some(batch) = stream.next().await {
                            match batch {
                                Ok(_) => notify.notify_one(),
                                Err(e) => {
                                    tracing::debug!(prefix, error = %e, "watch ended; resyncing");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(prefix, error = %e, "cannot watch; retrying"),
                }
            }
            Err(e) => tracing::warn!(prefix, error = %e, "cannot list; retrying"),
        }
        tokio::time::sleep(BACKOFF).await;
    }
}
