//! The watch loop's verdicts as Prometheus metrics, read from its [`Snapshot`] at scrape time.
//!
//! Nothing is stored here: every scrape encodes the latest snapshot, so a version that is no
//! longer deployed (or an alert that resolved) stops being exported at once, and the series of
//! one version always come from the same judged window. Every series is a gauge, in base units
//! (seconds, ratios 0..1); flags are 0/1. Labels `model` and `version` throughout.
//!
//! Per version, after its first judged window:
//! - `kiln_watch_window_start_timestamp_seconds`: start of the last judged window (Unix time);
//! - `kiln_drift_consecutive_windows`: consecutive judged windows with dataset drift;
//! - `kiln_watch_consecutive_good_windows`: consecutive windows within the SLO without drift;
//! - `kiln_slo_window_requests`, `kiln_slo_window_p50_seconds`, `kiln_slo_window_p99_seconds`,
//!   `kiln_slo_window_error_ratio`, `kiln_slo_judged`, `kiln_slo_breached`;
//! - when the window's drift report judged something (its `reason` is empty):
//!   `kiln_drift_dataset_drifted`, `kiln_drift_share`, `kiln_drift_features_drifted`,
//!   `kiln_drift_window_samples`, and per judged feature (labels `feature`, `test`)
//!   `kiln_drift_feature_score`, `kiln_drift_feature_threshold`, `kiln_drift_feature_drifted`,
//!   `kiln_drift_feature_psi`;
//! - when rows were scored for outliers: `kiln_outlier_ratio`, `kiln_outlier_rows`,
//!   `kiln_outlier_scored_rows`.
//!
//! And `kiln_alerts_firing{alertname,severity,model,version}` (1 per firing alert),
//! `kiln_watch_last_evaluation_timestamp_seconds`, `kiln_watch_window_seconds`.

use std::sync::Arc;

use kiln_proto::kiln::v1::FeatureDrift;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::watch::{Snapshot, VersionHealth, Watch};

/// Registers the collector over `watch` in `registry`.
pub fn register(registry: &mut Registry, watch: Arc<Watch>) {
    registry.register_collector(Box::new(WatchCollector { watch }));
}

/// Encodes the latest snapshot at each scrape.
#[derive(Debug)]
struct WatchCollector {
    watch: Arc<Watch>,
}

impl Collector for WatchCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.watch.snapshot(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    model: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    model: String,
    version: String,
    feature: String,
    test: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alertname: String,
    severity: String,
    model: String,
    version: String,
}

/// One per-version series: its name, help, and its value (`None`: not exported for that
/// version).
struct Series {
    name: &'static str,
    help: &'static str,
    read: fn(&VersionHealth) -> Option<f64>,
}

/// Per-feature series: name, help, value.
struct FeatureSeries {
    name: &'static str,
    help: &'static str,
    read: fn(&FeatureDrift) -> f64,
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The window's drift report judged something.
fn judged(v: &VersionHealth) -> bool {
    v.drift.reason.is_empty()
}

/// Rows were scored for outliers in the window.
fn scored(v: &VersionHealth) -> bool {
    v.drift.outlier_rate >= 0.0 && v.drift.scored_rows > 0
}

const VERSION_SERIES: &[Series] = &[
    Series {
        name: "kiln_watch_window_start_timestamp_seconds",
        help: "Start of the last telemetry window the watch loop judged (Unix time)",
        read: |v| Some(v.window_start_unix_ms as f64 / 1000.0),
    },
    Series {
        name: "kiln_drift_consecutive_windows",
        help: "Consecutive judged windows with dataset drift, up to the last one",
        read: |v| Some(f64::from(v.consecutive_drifted)),
    },
    Series {
        name: "kiln_watch_consecutive_good_windows",
        help: "Consecutive judged windows within the SLO and without dataset drift",
        read: |v| Some(f64::from(v.consecutive_good)),
    },
    Series {
        name: "kiln_drift_dataset_drifted",
        help: "1 when the last judged window drifted (at least half of its judged features)",
        read: |v| judged(v).then(|| flag(v.drift.drifted)),
    },
    Series {
        name: "kiln_drift_share",
        help: "Share of the judged features that drifted in the last judged window (0..1)",
        read: |v| judged(v).then_some(v.drift.drift_share),
    },
    Series {
        name: "kiln_drift_features_drifted",
        help: "Features that drifted in the last judged window",
        read: |v| judged(v).then_some(f64::from(v.drift.drifted_features)),
    },
    Series {
        name: "kiln_drift_window_samples",
        help: "Live rows the last judged window's drift report is based on",
        read: |v| judged(v).then_some(v.drift.sample_count as f64),
    },
    Series {
        name: "kiln_outlier_ratio",
        help: "Share of the scored live rows beyond the reference's outlier threshold (0..1)",
        read: |v| scored(v).then_some(v.drift.outlier_rate),
    },
    Series {
        name: "kiln_outlier_rows",
        help: "Live rows of the last judged window beyond the reference's outlier threshold",
        read: |v| scored(v).then_some(v.drift.outlier_count as f64),
    },
    Series {
        name: "kiln_outlier_scored_rows",
        help: "Live rows of the last judged window scored against the outlier model",
        read: |v| scored(v).then_some(v.drift.scored_rows as f64),
    },
    Series {
        name: "kiln_slo_window_requests",
        help: "Requests in the last judged window",
        read: |v| Some(v.slo.requests as f64),
    },
    Series {
        name: "kiln_slo_window_p50_seconds",
        help: "Median latency of the last judged window",
        read: |v| Some(v.slo.p50_ms / 1000.0),
    },
    Series {
        name: "kiln_slo_window_p99_seconds",
        help: "p99 latency of the last judged window",
        read: |v| Some(v.slo.p99_ms / 1000.0),
    },
    Series {
        name: "kiln_slo_window_error_ratio",
        help: "Failed share of the requests of the last judged window (0..1)",
        read: |v| Some(v.slo.error_rate),
    },
    Series {
        name: "kiln_slo_judged",
        help: "1 when the last window had enough requests for the SLO to be judged",
        read: |v| Some(flag(v.slo.judged)),
    },
    Series {
        name: "kiln_slo_breached",
        help: "1 when the last judged window was over the SLO (p99 latency or error ratio)",
        read: |v| Some(flag(v.slo.breached)),
    },
];

const FEATURE_SERIES: &[FeatureSeries] = &[
    FeatureSeries {
        name: "kiln_drift_feature_score",
        help: "Drift score of a feature in the last judged window: a p-value (ks, chisquare, z) \
               or a distance (wasserstein, jensenshannon), per `test`",
        read: |f| f.score,
    },
    FeatureSeries {
        name: "kiln_drift_feature_threshold",
        help: "Threshold the feature's drift score is compared with",
        read: |f| f.threshold,
    },
    FeatureSeries {
        name: "kiln_drift_feature_drifted",
        help: "1 when the feature drifted in the last judged window",
        read: |f| flag(f.drifted),
    },
    FeatureSeries {
        name: "kiln_drift_feature_psi",
        help: "Population stability index of the feature on reference deciles \
               (warn 0.1, alert 0.25)",
        read: |f| f.psi,
    },
];

fn version_labels(v: &VersionHealth) -> VersionLabels {
    VersionLabels {
        model: v.model.clone(),
        version: v.version.clone(),
    }
}

/// The `feature` label: the feature's name, else its index.
fn feature_name(f: &FeatureDrift) -> String {
    if f.name.is_empty() {
        format!("input[{}]", f.index)
    } else {
        f.name.clone()
    }
}

/// Writes every series of `snapshot`.
fn encode(snapshot: &Snapshot, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let gauge = MetricType::Gauge;
    if snapshot.evaluated_unix_ms > 0 {
        encoder
            .encode_descriptor(
                "kiln_watch_last_evaluation_timestamp_seconds",
                "When the watch loop last judged the deployed versions (Unix time)",
                None,
                gauge,
            )?
            .encode_gauge(&(snapshot.evaluated_unix_ms as f64 / 1000.0))?;
        encoder
            .encode_descriptor(
                "kiln_watch_window_seconds",
                "Length of a telemetry window the watch loop judges",
                None,
                gauge,
            )?
            .encode_gauge(&(snapshot.window_ms as f64 / 1000.0))?;
    }
    let judged_versions = || {
        snapshot
            .versions
            .iter()
            .filter(|v| v.window_start_unix_ms > 0)
    };
    for s in VERSION_SERIES {
        let mut family = encoder.encode_descriptor(s.name, s.help, None, gauge)?;
        for v in judged_versions() {
            if let Some(value) = (s.read)(v) {
                let labels = version_labels(v);
                family.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }
    }
    for s in FEATURE_SERIES {
        let mut family = encoder.encode_descriptor(s.name, s.help, None, gauge)?;
        for v in judged_versions().filter(|v| judged(v)) {
            for f in v.drift.features.iter().filter(|f| !f.test.is_empty()) {
                let labels = FeatureLabels {
                    model: v.model.clone(),
                    version: v.version.clone(),
                    feature: feature_name(f),
                    test: f.test.clone(),
                };
                family.encode_family(&labels)?.encode_gauge(&(s.read)(f))?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "kiln_alerts_firing",
        "1 for each alert the watch loop has firing (KilnDataDrift, KilnSloBreach)",
        None,
        gauge,
    )?;
    for a in &snapshot.firing {
        let labels = AlertLabels {
            alertname: a.kind.name().to_string(),
            severity: a.kind.severity().to_string(),
            model: a.model.clone(),
            version: a.version.clone(),
        };
        family.encode_family(&labels)?.encode_gauge(&1_i64)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "watch_metrics_tests.rs"]
mod tests;
