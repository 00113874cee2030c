//! The watch loop: every closed telemetry window, each deployed model version is judged for data
//! drift and against its SLO, alerts fire and resolve, and the leader acts on them.
//!
//! - **Per window**: the monitor's telemetry windows are aligned on the Unix epoch; window `W`
//!   is judged once `settle` has passed after it closed (workers push a closed window within
//!   their own interval). Each version with traffic gets a [`VersionHealth`]: the drift report
//!   of that one window (the same code as `DriftReport`), its SLO status (p99 latency and error
//!   rate of the window, judged from [`WatchConfig::slo_min_requests`] requests) and how many
//!   consecutive judged windows drifted.
//! - **Alerts** ([`alerts`]): `DataDrift` fires after [`WatchConfig::drift_alert_windows`]
//!   consecutive drifted windows (a window too small to judge neither extends nor breaks the
//!   run) and resolves on the first undrifted window; `SloBreach` fires on a breached window
//!   and resolves on a good one. Firing and resolved alerts go to the dashboard and, from the
//!   leader, to the webhook ([`webhook`], Alertmanager's JSON).
//! - **Actions** ([`actions`], leader only): a canary (a version with less traffic than the
//!   serving one) breaching the SLO is rolled back; a `DataDrift` alert on the serving version
//!   runs the retrain hook ([`WatchConfig::retrain_command`]); a version registered for that
//!   model while the hook ran (or after it, until the cool-down) is deployed as a canary with
//!   [`WatchConfig::canary_weight`] and promoted after [`WatchConfig::canary_windows`] judged
//!   windows within the SLO and without dataset drift.
//!
//! Everything the loop knows is in a [`Snapshot`], replaced whole after each pass: the
//! dashboard and the metrics read it, nothing else writes it.

pub mod actions;
pub mod alerts;
mod evaluate;
pub mod webhook;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kiln_coord::SharedCoordinator;
use kiln_proto::kiln::v1::DriftReportResponse;
use serde::Serialize;
use tokio::sync::watch;

use crate::admin::AdminService;
use crate::task::Task;
use crate::telemetry::{ProfileStore, ReferenceCache};
pub use alerts::{Alert, AlertBook, AlertEvent, AlertKind};

/// How the watch loop judges and acts.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// Consecutive drifted windows before `DataDrift` fires (K ≥ 1).
    pub drift_alert_windows: u32,
    /// SLO: p99 latency of a window, ms (0: not judged).
    pub slo_p99_ms: f64,
    /// SLO: error rate of a window, 0..1 (≥ 1: not judged).
    pub slo_max_error_rate: f64,
    /// Fewest requests in a window for the SLO to be judged.
    pub slo_min_requests: u64,
    /// Time after a window closes before it is judged (workers' push interval + margin).
    pub settle: Duration,
    /// Alertmanager-compatible webhook receiving firing and resolved alerts.
    pub webhook_url: Option<String>,
    /// Command run (`sh -c`) when a serving version's `DataDrift` alert fires.
    pub retrain_command: Option<String>,
    /// Longest a retrain command may run.
    pub retrain_timeout: Duration,
    /// After a retrain, how long a newly registered version still counts as its result, and
    /// the least time between two retrains of one model.
    pub retrain_cooldown: Duration,
    /// Traffic weight (of 100) a retrained version gets as a canary.
    pub canary_weight: u32,
    /// Judged windows within the SLO and without dataset drift before a canary is promoted.
    pub canary_windows: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            drift_alert_windows: 3,
            slo_p99_ms: 0.0,
            slo_max_error_rate: 1.0,
            slo_min_requests: 20,
            settle: Duration::from_secs(6),
            webhook_url: None,
            retrain_command: None,
            retrain_timeout: Duration::from_secs(600),
            retrain_cooldown: Duration::from_secs(900),
            canary_weight: 10,
            canary_windows: 3,
        }
    }
}

/// SLO status of one version in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SloStatus {
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// p99 latency in the window, ms (0 without requests).
    pub p99_ms: f64,
    /// p50 latency in the window, ms.
    pub p50_ms: f64,
    /// errors / requests.
    pub error_rate: f64,
    /// Whether the window had enough requests to be judged.
    pub judged: bool,
    /// Judged and over a target.
    pub breached: bool,
}

/// What the watch loop knows of one deployed version after its last judged window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VersionHealth {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Traffic weight in the deployment.
    pub traffic_weight: u32,
    /// True for the version with the most traffic.
    pub serving: bool,
    /// Start of the judged window, Unix ms.
    pub window_start_unix_ms: u64,
    /// The window's drift report (its `reason` says why nothing was judged).
    #[serde(skip)]
    pub drift: DriftReportResponse,
    /// The window's SLO status.
    pub slo: SloStatus,
    /// Consecutive judged windows with dataset drift, up to this one.
    pub consecutive_drifted: u32,
    /// Consecutive judged windows within the SLO and without dataset drift.
    pub consecutive_good: u32,
}

/// Everything the watch loop knows, replaced after each pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// When the last pass ran, Unix ms (0: none yet).
    pub evaluated_unix_ms: u64,
    /// Telemetry window length, ms.
    pub window_ms: u64,
    /// Every deployed version, by model then version.
    pub versions: Vec<VersionHealth>,
    /// Alerts firing now.
    pub firing: Vec<Alert>,
    /// Recent alert transitions and actions, oldest first (bounded).
    pub events: Vec<AlertEvent>,
}

/// The shared view of the watch loop.
#[derive(Debug, Default)]
pub struct Watch {
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Watch {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("watch snapshot").clone()
    }

    fn publish(&self, s: Snapshot) {
        *self.snapshot.write().expect("watch snapshot") = Arc::new(s);
    }
}

/// What the loop reads and acts through.
pub(crate) struct Deps {
    pub coord: SharedCoordinator,
    pub profiles: Arc<ProfileStore>,
    pub references: Arc<ReferenceCache>,
    pub admin: AdminService,
    /// `http://host:port` of this instance's Admin API (given to the retrain hook).
    pub admin_url: String,
    pub leader: watch::Receiver<bool>,
}

/// Spawns the loop; it stops when `stop` turns true.
pub(crate) fn spawn(
    config: WatchConfig,
    deps: Deps,
    watch: Arc<Watch>,
    stop: watch::Receiver<bool>,
) -> Task {
    Task::spawn(evaluate::run(config, deps, watch, stop))
}
