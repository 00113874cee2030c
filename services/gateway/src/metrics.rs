//! The gateway's Prometheus metrics, registered once in the registry served at `/metrics`.
//!
//! Label values are bounded: the `model` label only takes names present in the routing table
//! (anything else is `_unknown`), so a client cannot grow the series without end; the `version`
//! label only versions the table routed to.
//!
//! Requests routed to a version are also counted under Triton's names and labels, as a Triton
//! server in front of the same models would show them: `nv_inference_request_success`,
//! `nv_inference_request_failure{reason}` (REJECTED: resource exhausted or deadline; CANCELED;
//! BACKEND: the worker failed or went away; OTHER) and `nv_inference_request_duration_us`
//! (cumulative microseconds of successful requests, retries included), all with `model` and
//! `version`. Like the worker's they are typed `unknown` so the sample names stay exactly
//! Triton's. Summing them over gateway and workers counts a request twice: select a `job`.
//!
//! The routing table's own series are read at scrape time ([`Metrics::register_table`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tonic::Code;

use kiln_proto::edge::code_name;
use kiln_proto::kiln::v1::ReplicaState;

use crate::routing::RoutingTable;

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

/// Labels of Triton's per-version series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Model name.
    pub model: String,
    /// Version the request was routed to.
    pub version: String,
}

/// Labels of `nv_inference_request_failure`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Model name.
    pub model: String,
    /// Version the request was routed to.
    pub version: String,
    /// Triton's failure reason: REJECTED, CANCELED, BACKEND or OTHER.
    pub reason: &'static str,
}

/// A monotonic count exported under Triton's exact name: typed `unknown`, without the
/// `_total` suffix OpenMetrics adds to counters.
#[derive(Debug, Clone, Default)]
pub struct TritonCounter(Arc<AtomicU64>);

impl TritonCounter {
    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for TritonCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for TritonCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every value [`failure_reason`] gives.
const FAILURE_REASONS: [&str; 4] = ["REJECTED", "CANCELED", "BACKEND", "OTHER"];

/// Triton's failure reason of a gRPC code.
pub fn failure_reason(code: Code) -> &'static str {
    match code {
        Code::ResourceExhausted | Code::DeadlineExceeded => "REJECTED",
        Code::Cancelled => "CANCELED",
        Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss => "BACKEND",
        _ => "OTHER",
    }
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
    /// `nv_inference_request_success{model,version}`.
    pub nv_success: Family<VersionLabels, TritonCounter>,
    /// `nv_inference_request_failure{model,version,reason}`.
    pub nv_failure: Family<FailureLabels, TritonCounter>,
    /// `nv_inference_request_duration_us{model,version}`: successful requests, cumulative.
    pub nv_duration_us: Family<VersionLabels, TritonCounter>,
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
            nv_success: Family::default(),
            nv_failure: Family::default(),
            nv_duration_us: Family::default(),
        };
        registry.register(
            "nv_inference_request_success",
            "Successful inference requests, by the version they were routed to",
            m.nv_success.clone(),
        );
        registry.register(
            "nv_inference_request_failure",
            "Failed inference requests routed to a version, by Triton's failure reason",
            m.nv_failure.clone(),
        );
        registry.register(
            "nv_inference_request_duration_us",
            "Cumulative gateway time of successful requests, microseconds",
            m.nv_duration_us.clone(),
        );
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

    /// Registers the routing table's series, read from `table` at scrape time:
    /// `kiln_routing_table_age_seconds` (since the table last changed or was resynced; absent
    /// before the first sync) and `kiln_routing_replicas{model,version,state}` (state `ready`
    /// always, `loading`, `failed`, `unspecified` when some replica is in it).
    pub fn register_table(
        &self,
        registry: &mut Registry,
        table: watch::Receiver<Arc<RoutingTable>>,
    ) {
        registry.register_collector(Box::new(TableCollector {
            table,
            updated: self.table_updated.clone(),
        }));
    }

    /// Records a finished inference request; `version` is the version it was routed to (none
    /// when it failed before routing).
    pub fn observe_request(
        &self,
        model: &str,
        version: Option<&str>,
        code: Code,
        elapsed: Duration,
    ) {
        if let Some(version) = version {
            self.observe_routed(model, version, code, elapsed);
        }
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

    /// Drops the request series of the model versions in `old` that `new` no longer has (and
    /// of the models it no longer has at all), so that undeployed versions, which the retrain
    /// loop keeps making, do not pile up in every scrape.
    pub fn forget_removed(&self, old: &RoutingTable, new: &RoutingTable) {
        for (model, routes) in old.models() {
            let kept = new.model(model);
            for version in routes.versions.keys() {
                if kept.is_some_and(|m| m.versions.contains_key(version)) {
                    continue;
                }
                let labels = VersionLabels {
                    model: model.clone(),
                    version: version.clone(),
                };
                self.nv_success.remove(&labels);
                self.nv_duration_us.remove(&labels);
                for reason in FAILURE_REASONS {
                    self.nv_failure.remove(&FailureLabels {
                        model: model.clone(),
                        version: version.clone(),
                        reason,
                    });
                }
            }
            if kept.is_none() {
                for code in (0..=16).map(Code::from_i32) {
                    self.requests.remove(&RequestLabels {
                        model: model.clone(),
                        code: code_name(code).to_owned(),
                    });
                }
                self.duration.remove(&ModelLabel {
                    model: model.clone(),
                });
            }
        }
    }

    /// Sets the table-update timestamp to now.
    pub fn touch_table(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.table_updated.set(now.as_secs_f64());
    }
}

impl Metrics {
    fn observe_routed(&self, model: &str, version: &str, code: Code, elapsed: Duration) {
        if code == Code::Ok {
            let labels = VersionLabels {
                model: model.to_owned(),
                version: version.to_owned(),
            };
            self.nv_success.get_or_create(&labels).inc_by(1);
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            self.nv_duration_us.get_or_create(&labels).inc_by(us);
        } else {
            self.nv_failure
                .get_or_create(&FailureLabels {
                    model: model.to_owned(),
                    version: version.to_owned(),
                    reason: failure_reason(code),
                })
                .inc_by(1);
        }
    }
}

/// Reads the routing table at scrape time.
#[derive(Debug)]
struct TableCollector {
    table: watch::Receiver<Arc<RoutingTable>>,
    updated: Gauge<f64, AtomicU64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    model: String,
    version: String,
    state: &'static str,
}

fn state_label(state: ReplicaState) -> &'static str {
    match state {
        ReplicaState::Unspecified => "unspecified",
        ReplicaState::Loading => "loading",
        ReplicaState::Ready => "ready",
        ReplicaState::Failed => "failed",
    }
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let updated = self.updated.get();
        if updated > 0.0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            encoder
                .encode_descriptor(
                    "kiln_routing_table_age_seconds",
                    "Seconds since the routing table last changed or was resynced from etcd",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(now - updated).max(0.0))?;
        }
        let table = self.table.borrow().clone();
        let mut family = encoder.encode_descriptor(
            "kiln_routing_replicas",
            "Replicas in the routing table by model, version and state",
            None,
            MetricType::Gauge,
        )?;
        for (model, routes) in table.models() {
            for (version, v) in &routes.versions {
                let mut counts = vec![("ready", v.ready.len() as u64)];
                for (_, state, _) in &v.not_ready {
                    let name = state_label(*state);
                    match counts.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((name, 1)),
                    }
                }
                for (state, n) in counts {
                    let labels = ReplicaLabels {
                        model: model.clone(),
                        version: version.clone(),
                        state,
                    };
                    family.encode_family(&labels)?.encode_gauge(&n)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
