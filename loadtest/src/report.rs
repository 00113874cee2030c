//! The result of a run: a [`Report`] (what `--json` writes). Its human summary table is in
//! [`crate::output::table`]; the other output formats are in [`crate::output`].
//!
//! # JSON (`"schema": "kiln-loadtest/v1"`)
//!
//! Field names are stable; new fields may be added, none renamed or removed within `v1`.
//! Latencies are microseconds, times seconds, rates per second.
//!
//! ```text
//! schema          "kiln-loadtest/v1"
//! target          {url, model, model_version, batch_size, max_batch_size, pool_size, seed,
//!                  timeout_ms (null: none), inputs: [{name, datatype, shape}]}
//! load            {mode: "closed"|"open", concurrency (closed) | rate, max_in_flight (open),
//!                  connections, warmup_s, duration_s (null: request-limited), requests (null)}
//! measured_s      length of the measured window
//! intended        requests due in the window: sent + not_sent
//! sent            requests sent: ok + errors (every sent request is answered or timed out)
//! not_sent        open loop: due while max_in_flight were outstanding (client saturated)
//! ok, errors      answers with status OK / any other status (client-side timeouts count as
//!                 DEADLINE_EXCEEDED)
//! error_rate      errors / sent (0 when nothing was sent)
//! throughput_rps  OK answers per measured second; inferences_per_s = throughput × batch_size
//! latency_us      OK latency {count, min, mean, p50, p90, p95, p99, p99_9, p99_99, max}, or null
//! statuses        {"OK": {count, latency_us, message: null}, "RESOURCE_EXHAUSTED": {count,
//!                 latency_us, message: first message seen (≤ 200 chars)}, ...}
//! send_lag_us     open loop: actual − due send time of sent requests, or null
//! series          per measured second (by completion time): {second, counts: {status: n},
//!                 not_sent, ok_p50_us, ok_p99_us (null without OK answers), ok_hist}
//! started_unix_s  wall-clock start of the measured window (second 0), seconds since the epoch
//! latency_hist    the OK latency histogram (µs), HdrHistogram V2 deflate in base64 (the
//!                 interval-log encoding: lossless, mergeable), or null; `ok_hist` in `series`
//!                 is the same for that second
//! server          the server's ModelStatistics over the window (see [`ServerStats`]): {requests,
//!                 failed, inferences, executions, avg_batch_size, request_us, queue_us,
//!                 compute_input_us, compute_infer_us, compute_output_us}, or null when the
//!                 server has no statistics
//! client_cpu      the load generator's own CPU over the window (see [`ClientCpu`]): {cpus,
//!                 cpu_s, us_per_request, utilization}, or null where it cannot be read;
//!                 utilization ≥ 0.9 means latencies include the generator's own queueing
//! ```
//!
//! Fields added after the first release (`p95`, `ok_hist`, `started_unix_s`, `latency_hist`,
//! `server`, `client_cpu`) default when absent, so older files still load.
//!
//! Closed-loop latency counts from the actual send; open-loop latency from the due time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client_cpu::ClientCpu;
use crate::config::{LoadMode, RunConfig};
use crate::record::{OK, Recorder, decode_histogram, encode_histogram};
use crate::server_stats::ServerStats;
use crate::target::{InputPlan, ModelPlan};

/// The `schema` value of this version of the JSON.
pub const SCHEMA: &str = "kiln-loadtest/v1";

/// Send lag p99 above which the table warns that the client fell behind, µs.
pub const LAG_WARNING_US: u64 = 1_000;

/// The whole result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// What was loaded.
    pub target: TargetInfo,
    /// How it was loaded.
    pub load: LoadInfo,
    /// Length of the measured window, seconds.
    pub measured_s: f64,
    /// Requests due in the window (`sent + not_sent`).
    pub intended: u64,
    /// Requests sent (`ok + errors`).
    pub sent: u64,
    /// Requests due but not sent because the client was saturated (open loop).
    pub not_sent: u64,
    /// OK answers.
    pub ok: u64,
    /// Non-OK answers, client-side timeouts included.
    pub errors: u64,
    /// `errors / sent`.
    pub error_rate: f64,
    /// OK answers per second.
    pub throughput_rps: f64,
    /// `throughput_rps × batch_size`.
    pub inferences_per_s: f64,
    /// Latency of OK answers, µs; `None` without any.
    pub latency_us: Option<Latency>,
    /// Count and latency by status name.
    pub statuses: BTreeMap<String, StatusReport>,
    /// Open loop: how late requests were sent after their due time, µs.
    pub send_lag_us: Option<Latency>,
    /// One entry per measured second.
    pub series: Vec<SecondReport>,
    /// Wall-clock start of the measured window, seconds since the Unix epoch.
    #[serde(default)]
    pub started_unix_s: f64,
    /// The OK latency histogram (µs), [`encode_histogram`]d; `None` without OK answers.
    #[serde(default)]
    pub latency_hist: Option<String>,
    /// The server's statistics over the window; `None` if it has none.
    #[serde(default)]
    pub server: Option<ServerStats>,
    /// The load generator's own CPU over the window; `None` where it cannot be read.
    #[serde(default)]
    pub client_cpu: Option<ClientCpu>,
    /// The load side's optional additions (stability, stages, models, validation), flattened;
    /// see [`crate::extras`].
    #[serde(flatten)]
    pub extras: crate::extras::RunExtras,
}

/// The target, as resolved from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Server address.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Requested version (empty: server's choice).
    pub model_version: String,
    /// Items per request.
    pub batch_size: usize,
    /// The model's `max_batch_size`.
    pub max_batch_size: i64,
    /// Distinct requests cycled.
    pub pool_size: usize,
    /// Seed of the input data.
    pub seed: u64,
    /// Per-request deadline, milliseconds.
    pub timeout_ms: Option<f64>,
    /// Tensors of each request.
    pub inputs: Vec<InputPlan>,
}

/// The load model and extent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadInfo {
    /// Closed (`concurrency`) or open (`rate`, `max_in_flight`) loop.
    #[serde(flatten)]
    pub mode: LoadMode,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured duration limit, seconds.
    pub duration_s: Option<f64>,
    /// Measured request limit.
    pub requests: Option<u64>,
}

/// A latency distribution, µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    #[serde(default)]
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    /// The summary of `hist`, `None` if empty.
    pub fn of(hist: &Histogram<u64>) -> Option<Self> {
        (!hist.is_empty()).then(|| Self {
            count: hist.len(),
            min: hist.min(),
            mean: round(hist.mean(), 1e3),
            p50: hist.value_at_quantile(0.5),
            p90: hist.value_at_quantile(0.9),
            p95: hist.value_at_quantile(0.95),
            p99: hist.value_at_quantile(0.99),
            p99_9: hist.value_at_quantile(0.999),
            p99_99: hist.value_at_quantile(0.9999),
            max: hist.max(),
        })
    }
}

/// Answers of one status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// How many.
    pub count: u64,
    /// Their latency, µs.
    pub latency_us: Latency,
    /// The first message seen with this status (`None` for OK).
    pub message: Option<String>,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    /// Seconds since the end of the warm-up.
    pub second: u64,
    /// Answers completed in this second, by status.
    pub counts: BTreeMap<String, u64>,
    /// Requests due in this second but not sent.
    pub not_sent: u64,
    /// Median OK latency of the second, µs.
    pub ok_p50_us: Option<u64>,
    /// 99th percentile OK latency of the second, µs.
    pub ok_p99_us: Option<u64>,
    /// The second's OK latency histogram (µs), [`encode_histogram`]d; `None` without OK answers.
    #[serde(default)]
    pub ok_hist: Option<String>,
}

/// Rounds to a multiple of `1/scale`, so JSON stays short and round-trips exactly.
fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 1e6)
}

/// Seconds since the Unix epoch, to the millisecond.
fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| round(d.as_secs_f64(), 1e3))
}

impl Report {
    /// The report of a run of `config` against a model planned as `plan`.
    pub fn new(config: &RunConfig, plan: &ModelPlan, rec: &Recorder, measured: Duration) -> Self {
        let (target, load) = (&config.target, &config.load);
        let statuses: BTreeMap<String, StatusReport> = rec
            .by_status()
            .iter()
            .filter_map(|(name, hist)| {
                let latency_us = Latency::of(hist)?;
                let count = latency_us.count;
                let message = rec.messages().get(name).cloned();
                let status = StatusReport {
                    count,
                    latency_us,
                    message,
                };
                Some((name.to_string(), status))
            })
            .collect();
        let sent = rec.answered();
        let ok = statuses.get(OK).map_or(0, |s| s.count);
        let measured_s = secs(measured);
        let throughput = if measured_s > 0.0 {
            ok as f64 / measured_s
        } else {
            0.0
        };
        let series = rec
            .seconds()
            .iter()
            .enumerate()
            .map(|(i, s)| SecondReport {
                second: i as u64,
                counts: s.counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                not_sent: s.not_sent,
                ok_p50_us: (!s.ok_latency.is_empty()).then(|| s.ok_latency.value_at_quantile(0.5)),
                ok_p99_us: (!s.ok_latency.is_empty()).then(|| s.ok_latency.value_at_quantile(0.99)),
                ok_hist: (!s.ok_latency.is_empty()).then(|| encode_histogram(&s.ok_latency)),
            })
            .collect();
        Self {
            schema: SCHEMA.into(),
            target: TargetInfo {
                url: target.url.clone(),
                model: target.model.clone(),
                model_version: target.model_version.clone(),
                batch_size: target.batch_size,
                max_batch_size: plan.max_batch_size,
                pool_size: target.pool_size,
                seed: target.seed,
                timeout_ms: target.timeout.map(|t| round(t.as_secs_f64() * 1e3, 1e3)),
                inputs: plan.inputs.clone(),
            },
            load: LoadInfo {
                mode: load.mode,
                connections: load.connections,
                warmup_s: secs(load.warmup),
                duration_s: load.duration.map(secs),
                requests: load.requests,
            },
            measured_s,
            intended: sent + rec.not_sent(),
            sent,
            not_sent: rec.not_sent(),
            ok,
            errors: sent - ok,
            error_rate: if sent == 0 {
                0.0
            } else {
                round((sent - ok) as f64 / sent as f64, 1e6)
            },
            throughput_rps: round(throughput, 1e3),
            inferences_per_s: round(throughput * target.batch_size as f64, 1e3),
            latency_us: statuses.get(OK).map(|s| s.latency_us.clone()),
            statuses,
            send_lag_us: Latency::of(rec.send_lag()),
            series,
            started_unix_s: unix_s(rec.origin_wall()),
            latency_hist: rec.ok().map(encode_histogram),
            server: None,
            client_cpu: None,
            extras: crate::extras::RunExtras::default(),
        }
    }

    /// The OK latency histogram (µs), if the report carries one.
    pub fn ok_histogram(&self) -> Option<Histogram<u64>> {
        decode_histogram(self.latency_hist.as_deref()?).ok()
    }

    /// When the measured window started.
    pub fn started(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(self.started_unix_s.max(0.0))
    }

    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }
}

/// A latency in µs, written with a readable unit (`87µs`, `1.25ms`, `2.10s`).
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}
