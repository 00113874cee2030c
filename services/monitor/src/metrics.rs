//! The controller's Prometheus metrics, registered once per monitor instance (the watch loop's
//! are read at scrape time by [`crate::watch_metrics`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::plan::ClusterState;
use kiln_coord::SessionMetrics;
use kiln_proto::kiln::v1::ReplicaState;

/// Labels of per-version series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
}

/// Labels of per-worker-state series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerStateLabels {
    /// `up` or `draining` (shutting down or cordoned).
    pub state: String,
}

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
    /// `kiln_deployment_replicas_desired{model,version}` (leader only, from the last pass).
    pub replicas_desired: Family<VersionLabels, Gauge>,
    /// `kiln_deployment_replicas_ready{model,version}`: READY replicas (leader only).
    pub replicas_ready: Family<VersionLabels, Gauge>,
    /// `kiln_deployment_traffic_weight{model,version}` (leader only).
    pub traffic_weight: Family<VersionLabels, Gauge>,
    /// `kiln_workers{state}`: live workers by state (leader only).
    pub workers: Family<WorkerStateLabels, Gauge>,
    /// `kiln_etcd_session_*`: the election lease session (followed by the controller task).
    pub session: SessionMetrics,
    /// `kiln_telemetry_store_bytes`: estimated memory of the telemetry windows held (set after
    /// every push; bounded by `--telemetry-max-bytes`).
    pub telemetry_store_bytes: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            session: SessionMetrics::register(registry),
            ..Self::default()
        };
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
        registry.register(
            "kiln_deployment_replicas_desired",
            "Replicas each deployed version asks for (published by the controller leader)",
            m.replicas_desired.clone(),
        );
        registry.register(
            "kiln_deployment_replicas_ready",
            "READY replicas of each deployed version (published by the controller leader)",
            m.replicas_ready.clone(),
        );
        registry.register(
            "kiln_deployment_traffic_weight",
            "Traffic weight of each deployed version (published by the controller leader)",
            m.traffic_weight.clone(),
        );
        registry.register(
            "kiln_telemetry_store_bytes",
            "Estimated memory of the telemetry windows this monitor holds (--telemetry-max-bytes bounds it)",
            m.telemetry_store_bytes.clone(),
        );
        registry.register(
            "kiln_workers",
            "Live workers by state, up or draining (published by the controller leader)",
            m.workers.clone(),
        );
        m
    }

    /// Publishes the deployment and worker gauges from the state a pass read; versions no
    /// longer deployed disappear.
    pub(crate) fn observe(&self, state: &ClusterState) {
        self.replicas_desired.clear();
        self.replicas_ready.clear();
        self.traffic_weight.clear();
        for d in &state.deployments {
            for v in &d.versions {
                let labels = VersionLabels {
                    model: d.model.clone(),
                    version: v.version.clone(),
                };
                let ready = state
                    .replicas
                    .iter()
                    .filter(|r| {
                        r.model == d.model
                            && r.version == v.version
                            && r.state == ReplicaState::Ready as i32
                    })
                    .count();
                self.replicas_desired
                    .get_or_create(&labels)
                    .set(i64::from(v.replicas));
                self.replicas_ready.get_or_create(&labels).set(ready as i64);
                self.traffic_weight
                    .get_or_create(&labels)
                    .set(i64::from(v.traffic_weight));
            }
        }
        for (state_name, draining) in [("up", false), ("draining", true)] {
            let n = state
                .workers
                .iter()
                .filter(|w| w.draining == draining)
                .count();
            self.workers
                .get_or_create(&WorkerStateLabels {
                    state: state_name.into(),
                })
                .set(n as i64);
        }
    }

    /// Drops the leader-only gauges (this instance no longer leads).
    pub(crate) fn forget_cluster(&self) {
        self.replicas_desired.clear();
        self.replicas_ready.clear();
        self.traffic_weight.clear();
        self.workers.clear();
    }
}
