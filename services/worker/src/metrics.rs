//! Prometheus metrics of the worker, served at `/metrics` by kiln-telemetry.
//!
//! The per model version figures are read at scrape time from the same counters that answer
//! `ModelStatistics` ([`crate::stats::ModelStats`]) and from the batcher's queue, so the two
//! views never disagree. Names and labels (`model`, `version`) follow Triton's, so existing
//! dashboards and alerts work unchanged:
//! - `nv_inference_request_success`, `nv_inference_request_failure` (label `reason`: REJECTED,
//!   CANCELED, BACKEND, OTHER), `nv_inference_count`, `nv_inference_exec_count`;
//! - `nv_inference_request_duration_us`, `nv_inference_queue_duration_us`,
//!   `nv_inference_compute_input_duration_us`, `nv_inference_compute_infer_duration_us`,
//!   `nv_inference_compute_output_duration_us` (cumulative microseconds);
//! - `nv_inference_pending_request_count` (gauge: requests queued now).
//!
//! Triton exports these without the `_total` suffix that OpenMetrics requires of a `counter`, so
//! they are typed `unknown` here: the sample names stay exactly Triton's (and `rate()` works on
//! them as on any monotonic series).
//!
//! Kiln adds `kiln_inference_queue_capacity` (gauge), `kiln_inference_expired_in_queue_total`
//! (requests answered DEADLINE_EXCEEDED without compute), `kiln_inference_canceled_in_queue_total`
//! (requests whose caller left while queued; never computed) and
//! `kiln_inference_request_duration_seconds`, a histogram of successful requests' time inside the
//! worker.

use std::sync::{Arc, Mutex};

use kiln_proto::inference::StatisticDuration;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::stats::{FailureReason, RequestTimings, Totals};
use crate::store::{LoadedModel, ModelStore};

/// The labels of every per-model series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    model: String,
    version: String,
    reason: &'static str,
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// The worker's metric families, registered once in the process registry.
#[derive(Clone)]
pub struct WorkerMetrics {
    request_seconds: HistogramFamily,
}

fn request_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

impl WorkerMetrics {
    /// Registers the histogram family and a collector over `store`'s loaded versions.
    pub fn register(registry: &Arc<Mutex<Registry>>, store: Arc<ModelStore>) -> Self {
        let m = Self {
            request_seconds: Family::new_with_constructor(request_histogram),
        };
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "kiln_inference_request_duration_seconds",
            "End-to-end time of successful requests inside the worker",
            m.request_seconds.clone(),
        );
        r.register_collector(Box::new(StoreCollector { store }));
        m
    }

    /// The series of one model version.
    pub fn for_model(&self, model: &str, version: &str) -> ModelMetrics {
        ModelMetrics {
            request_seconds: self
                .request_seconds
                .get_or_create_owned(&labels(model, version)),
        }
    }

    /// Drops the series of an unloaded model version (the collector forgets it by itself).
    pub fn remove(&self, model: &str, version: &str) {
        self.request_seconds.remove(&labels(model, version));
    }
}

fn labels(model: &str, version: &str) -> ModelLabels {
    ModelLabels {
        model: model.to_string(),
        version: version.to_string(),
    }
}

/// Handles on the series of one model version (cheap to update: no label lookup).
pub struct ModelMetrics {
    request_seconds: Histogram,
}

impl ModelMetrics {
    /// Records a successful request.
    pub fn record_success(&self, t: &RequestTimings) {
        self.request_seconds.observe(t.total.as_secs_f64());
    }
}

/// Reads every loaded version's counters at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<ModelStore>,
}

/// One per-model series: a name, its help, its type and how to read it off a model.
struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&Snapshot) -> u64,
}

/// One model version's figures, read once per scrape so that all its series agree.
struct Snapshot {
    model: Arc<LoadedModel>,
    totals: Totals,
    queued: u64,
    capacity: u64,
    expired: u64,
    canceled: u64,
}

impl Snapshot {
    fn of(model: Arc<LoadedModel>) -> Self {
        let e = &model.executor;
        Self {
            totals: model.stats.totals(),
            queued: e.queued() as u64,
            capacity: e.capacity() as u64,
            expired: e.expired(),
            canceled: e.canceled(),
            model,
        }
    }
}

fn us(d: StatisticDuration) -> u64 {
    d.ns / 1_000
}

const SERIES: &[Series] = &[
    Series {
        name: "nv_inference_request_success",
        help: "Successful inference requests",
        kind: MetricType::Unknown,
        read: |m| m.totals.success.count,
    },
    Series {
        name: "nv_inference_count",
        help: "Inferences performed (batch items of successful requests)",
        kind: MetricType::Unknown,
        read: |m| m.totals.inference_count,
    },
    Series {
        name: "nv_inference_exec_count",
        help: "Model executions performed (batches)",
        kind: MetricType::Unknown,
        read: |m| m.totals.execution_count,
    },
    Series {
        name: "nv_inference_request_duration_us",
        help: "Cumulative end-to-end time of successful requests in the worker, microseconds",
        kind: MetricType::Unknown,
        read: |m| us(m.totals.success),
    },
    Series {
        name: "nv_inference_queue_duration_us",
        help: "Cumulative time successful requests waited in the queue, microseconds",
        kind: MetricType::Unknown,
        read: |m| us(m.totals.queue),
    },
    Series {
        name: "nv_inference_compute_input_duration_us",
        help: "Cumulative time spent decoding inputs of successful requests, microseconds",
        kind: MetricType::Unknown,
        read: |m| us(m.totals.compute_input),
    },
    Series {
        name: "nv_inference_compute_infer_duration_us",
        help: "Cumulative time successful requests spent in the model, microseconds",
        kind: MetricType::Unknown,
        read: |m| us(m.totals.compute_infer),
    },
    Series {
        name: "nv_inference_compute_output_duration_us",
        help: "Cumulative time spent encoding outputs of successful requests, microseconds",
        kind: MetricType::Unknown,
        read: |m| us(m.totals.compute_output),
    },
    Series {
        name: "nv_inference_pending_request_count",
        help: "Requests waiting in the queue now",
        kind: MetricType::Gauge,
        read: |m| m.queued,
    },
    Series {
        name: "kiln_inference_queue_capacity",
        help: "Requests the queue holds before refusing with RESOURCE_EXHAUSTED",
        kind: MetricType::Gauge,
        read: |m| m.capacity,
    },
    Series {
        name: "kiln_inference_expired_in_queue",
        help: "Requests whose deadline passed while queued: answered DEADLINE_EXCEEDED, never computed",
        kind: MetricType::Counter,
        read: |m| m.expired,
    },
    Series {
        name: "kiln_inference_canceled_in_queue",
        help: "Requests whose caller went away while queued: never computed",
        kind: MetricType::Counter,
        read: |m| m.canceled,
    },
];

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let models: Vec<Snapshot> = self
            .store
            .loaded("")
            .into_iter()
            .map(Snapshot::of)
            .collect();
        for s in SERIES {
            let mut family = encoder.encode_descriptor(s.name, s.help, None, s.kind)?;
            for m in &models {
                let value = (s.read)(m);
                let l = labels(m.model.name(), m.model.version());
                let mut e = family.encode_family(&l)?;
                match s.kind {
                    MetricType::Counter => ConstCounter::new(value).encode(e)?,
                    _ => e.encode_gauge(&value)?,
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "nv_inference_request_failure",
            "Failed inference requests, by reason",
            None,
            MetricType::Unknown,
        )?;
        for m in &models {
            let mut failures = m.totals.failures;
            failures[FailureReason::Canceled as usize] += m.canceled;
            for (reason, n) in FailureReason::ALL.iter().zip(failures) {
                let l = FailureLabels {
                    model: m.model.name().to_string(),
                    version: m.model.version().to_string(),
                    reason: reason.label(),
                };
                family.encode_family(&l)?.encode_gauge(&n)?;
            }
        }
        Ok(())
    }
}
