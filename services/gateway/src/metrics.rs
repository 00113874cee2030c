//! The gateway's Prometheus metrics, registered once in the registry served at `/metrics`.
//!
//! Label values are bounded: the `model` label only takes names present in the routing table
//! (anything else is `_unknown`), so a client cannot grow the series without end.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Code;

use kiln_proto::edge::code_name;

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Model name (or `_unknown`).
    pub model: String,
    /// gRPC code name (`OK`, `UNAVAILABLE`, ...).
    pub code: String,
}

/// Labels of a latency observation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// Model name (or `_unknown`).
    pub model: String,
}

fn latency_histogram() -> Histogram {
    // 250 µs .. ~65 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 19))
}

/// Every metric the gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `kiln_gateway_requests_total{model,code}`: inference requests by outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// `kiln_gateway_request_duration_seconds{model}`: inference latency seen by the gateway.
    pub duration: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// `kiln_gateway_retries_total`: attempts beyond the first.
    pub retries: Counter,
    /// `kiln_gateway_shed_total`: requests refused over `--max-inflight`.
    pub shed: Counter,
    /// `kiln_gateway_inflight_requests`: inference requests being served.
    pub inflight: Gauge,
    /// `kiln_routing_table_replicas`: ready replicas in the current table.
    pub table_replicas: Gauge,
    /// `kiln_routing_table_workers`: worker addresses the gateway keeps a channel to.
    pub table_workers: Gauge,
    /// `kiln_routing_table_last_update_timestamp_seconds`: when the table last changed or was
    /// confirmed by a fresh listing (Unix time).
    pub table_updated: Gauge<f64, AtomicU64>,
    /// `kiln_routing_watch_connected`: 1 while the etcd watch is live, 0 while resyncing (the
    /// gateway then serves from its last table).
    pub watch_connected: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            retries: Counter::default(),
            shed: Counter::default(),
            inflight: Gauge::default(),
            table_replicas: Gauge::default(),
            table_workers: Gauge::default(),
            table_updated: Gauge::default(),
            watch_connected: Gauge::default(),
        };
        registry.register(
            "kiln_gateway_requests",
            "Inference requests by model and gRPC code",
            m.requests.clone(),
        );
        registry.register(
            "kiln_gateway_request_duration_seconds",
            "Inference latency at the gateway, retries included",
            m.duration.clone(),
        );
        registry.register(
            "kiln_gateway_retries",
            "Attempts retried on another replica",
            m.retries.clone(),
        );
        registry.register(
            "kiln_gateway_shed",
            "Requests refused over the in-flight limit",
            m.shed.clone(),
        );
        registry.register(
            "kiln_gateway_inflight_requests",
            "Inference requests being served",
            m.inflight.clone(),
        );
        registry.register(
            "kiln_routing_table_replicas",
            "Ready replicas in the routing table",
            m.table_replicas.clone(),
        );
        registry.register(
            "kiln_routing_table_workers",
            "Worker addresses with a channel",
            m.table_workers.clone(),
        );
        registry.register(
            "kiln_routing_table_last_update_timestamp_seconds",
            "Unix time the routing table last changed or was resynced",
            m.table_updated.clone(),
        );
        registry.register(
            "kiln_routing_watch_connected",
            "1 while the etcd watch is live, 0 while resyncing",
            m.watch_connected.clone(),
        );
        m
    }

    /// Records a finished inference request.
    pub fn observe_request(&self, model: &str, code: Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                code: code_name(code).to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the table-update timestamp to now.
    pub fn touch_table(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.table_updated.set(now.as_secs_f64());
    }
}
