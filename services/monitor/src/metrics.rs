//! The controller's Prometheus metrics, registered once per monitor instance.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Handles to the monitor's metrics (cheap to clone: each is an `Arc` inside).
#[derive(Clone, Default, Debug)]
pub struct Metrics {
    /// `kiln_controller_is_leader`: 1 while this instance leads the controller election.
    pub is_leader: Gauge,
    /// `kiln_controller_reconciles_total`: reconcile passes run as leader.
    pub reconciles: Counter,
    /// `kiln_controller_reconcile_errors_total`: passes that failed (store errors, lost races).
    pub reconcile_errors: Counter,
    /// `kiln_controller_assignments`: assignments in the store after the last pass.
    pub assignments: Gauge,
    /// `kiln_controller_assignment_changes_total`: assignments created or deleted.
    pub assignment_changes: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "kiln_controller_is_leader",
            "1 while this monitor leads the controller election",
            m.is_leader.clone(),
        );
        registry.register(
            "kiln_controller_reconciles",
            "Reconcile passes run by the controller leader",
            m.reconciles.clone(),
        );
        registry.register(
            "kiln_controller_reconcile_errors",
            "Reconcile passes that failed",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "kiln_controller_assignments",
            "Assignments in the store after the last reconcile pass",
            m.assignments.clone(),
        );
        registry.register(
            "kiln_controller_assignment_changes",
            "Assignments created or deleted by the controller",
            m.assignment_changes.clone(),
        );
        m
    }
}
