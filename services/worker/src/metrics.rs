//! Prometheus metrics of the worker, served at `/metrics` by kiln-telemetry.
//!
//! Names follow Triton's where one exists, so existing dashboards work: per model version
//! (labels `model`, `version`) `nv_inference_request_success`, `nv_inference_request_failure`,
//! `nv_inference_count`, `nv_inference_exec_count` (counters, exported with `_total`),
//! `nv_inference_queue_duration_us` and `nv_inference_compute_infer_duration_us` (cumulative
//! microseconds, as in Triton), plus `kiln_inference_request_duration_seconds`, a histogram of
//! the end-to-end time of successful requests inside the worker.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::stats::RequestTimings;

/// The labels of every per-model series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// The worker's metric families, registered once in the process registry.
#[derive(Clone)]
pub struct WorkerMetrics {
    success: Family<ModelLabels, Counter>,
    failure: Family<ModelLabels, Counter>,
    inference_count: Family<ModelLabels, Counter>,
    exec_count: Family<ModelLabels, Counter>,
    queue_us: Family<ModelLabels, Counter>,
    compute_infer_us: Family<ModelLabels, Counter>,
    request_seconds: HistogramFamily,
}

fn request_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

impl WorkerMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Arc<Mutex<Registry>>) -> Self {
        let m = Self {
            success: Family::default(),
            failure: Family::default(),
            inference_count: Family::default(),
            exec_count: Family::default(),
            queue_us: Family::default(),
            compute_infer_us: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
        };
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "nv_inference_request_success",
            "Successful inference requests",
            m.success.clone(),
        );
        r.register(
            "nv_inference_request_failure",
            "Failed inference requests",
            m.failure.clone(),
        );
        r.register(
            "nv_inference_count",
            "Inferences performed (batch items)",
            m.inference_count.clone(),
        );
        r.register(
            "nv_inference_exec_count",
            "Model executions performed",
            m.exec_count.clone(),
        );
        r.register(
            "nv_inference_queue_duration_us",
            "Cumulative time requests waited in the queue, in microseconds",
            m.queue_us.clone(),
        );
        r.register(
            "nv_inference_compute_infer_duration_us",
            "Cumulative time spent running the model, in microseconds",
            m.compute_infer_us.clone(),
        );
        r.register(
            "kiln_inference_request_duration_seconds",
            "End-to-end time of successful requests inside the worker",
            m.request_seconds.clone(),
        );
        m
    }

    /// The series of one model version.
    pub fn for_model(&self, model: &str, version: &str) -> ModelMetrics {
        let labels = ModelLabels {
            model: model.to_string(),
            version: version.to_string(),
        };
        ModelMetrics {
            success: self.success.get_or_create_owned(&labels),
            failure: self.failure.get_or_create_owned(&labels),
            inference_count: self.inference_count.get_or_create_owned(&labels),
            exec_count: self.exec_count.get_or_create_owned(&labels),
            queue_us: self.queue_us.get_or_create_owned(&labels),
            compute_infer_us: self.compute_infer_us.get_or_create_owned(&labels),
            request_seconds: self.request_seconds.get_or_create_owned(&labels),
        }
    }

    /// Drops the series of an unloaded model version.
    pub fn remove(&self, model: &str, version: &str) {
        let labels = ModelLabels {
            model: model.to_string(),
            version: version.to_string(),
        };
        self.success.remove(&labels);
        self.failure.remove(&labels);
        self.inference_count.remove(&labels);
        self.exec_count.remove(&labels);
        self.queue_us.remove(&labels);
        self.compute_infer_us.remove(&labels);
        self.request_seconds.remove(&labels);
    }
}

/// Handles on the series of one model version (cheap to update: no label lookup).
pub struct ModelMetrics {
    success: Counter,
    failure: Counter,
    inference_count: Counter,
    exec_count: Counter,
    queue_us: Counter,
    compute_infer_us: Counter,
    request_seconds: Histogram,
}

impl ModelMetrics {
    /// Records a successful request.
    pub fn record_success(&self, t: &RequestTimings) {
        self.success.inc();
        self.inference_count.inc_by(t.batch);
        self.queue_us
            .inc_by(u64::try_from(t.queue.as_micros()).unwrap_or(u64::MAX));
        self.compute_infer_us
            .inc_by(u64::try_from(t.compute_infer.as_micros()).unwrap_or(u64::MAX));
        self.request_seconds.observe(t.total.as_secs_f64());
    }

    /// Records one model execution (a batch of one or more requests).
    pub fn record_execution(&self) {
        self.exec_count.inc();
    }

    /// Records a failed request.
    pub fn record_failure(&self) {
        self.failure.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exports_triton_names() {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let metrics = WorkerMetrics::register(&registry);
        let m = metrics.for_model("digits", "1");
        m.record_success(&RequestTimings {
            batch: 4,
            total: Duration::from_millis(2),
            queue: Duration::from_micros(30),
            ..RequestTimings::default()
        });
        m.record_failure();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap()).unwrap();
        for needle in [
            "nv_inference_request_success_total{model=\"digits\",version=\"1\"} 1",
            "nv_inference_request_failure_total{model=\"digits\",version=\"1\"} 1",
            "nv_inference_count_total{model=\"digits\",version=\"1\"} 4",
            "nv_inference_queue_duration_us_total{model=\"digits\",version=\"1\"} 30",
            "kiln_inference_request_duration_seconds_count{model=\"digits\",version=\"1\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        metrics.remove("digits", "1");
    }
}
