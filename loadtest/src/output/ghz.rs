//! ghz's JSON report (`ghz --format json`, bojand/ghz `runner/reporter.go`), so tools that read
//! ghz results (ghz-web, dashboards) read kiln-loadtest's.
//!
//! Names and units follow ghz: durations in nanoseconds, `rps` and the histogram's `mark` in
//! per-second and seconds, status codes named as grpc-go's `codes.Code.String()` (`OK`,
//! `ResourceExhausted`), errors as grpc-go's `rpc error: code = .. desc = ..`. As in ghz,
//! `count`, `average` and `rps` include errors while `fastest`, `slowest`,
//! `latencyDistribution` and `histogram` cover the OK answers; both are `null` without any.
//! Differences: `errorDistribution` counts every error of a status under its first message
//! (kiln-loadtest keeps one message per status), and `details` (per-request records) is left
//! out. Open-loop latency is coordinated-omission corrected, ghz's is not.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::LoadMode;
use crate::record::OK;
use crate::report::Report;

/// The percentiles ghz reports in `latencyDistribution`.
pub const PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];
/// Buckets of ghz's `histogram` (marks between fastest and slowest, both included).
pub const BUCKETS: usize = 10;

/// ghz's `Report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhzReport {
    /// Name of the test.
    pub name: String,
    /// Why the run ended (always `normal`).
    pub end_reason: String,
    /// When the run ended, RFC 3339.
    pub date: String,
    /// The run's settings.
    pub options: GhzOptions,
    /// Requests answered (any status).
    pub count: u64,
    /// Measured time, ns.
    pub total: u64,
    /// Mean latency over all answers, ns.
    pub average: u64,
    /// Fastest OK answer, ns.
    pub fastest: u64,
    /// Slowest OK answer, ns.
    pub slowest: u64,
    /// Answers per second.
    pub rps: f64,
    /// Errors by `rpc error: code = .. desc = ..` text.
    pub error_distribution: BTreeMap<String, u64>,
    /// Answers by grpc-go code name.
    pub status_code_distribution: BTreeMap<String, u64>,
    /// OK latency at [`PERCENTILES`].
    pub latency_distribution: Option<Vec<LatencyDistribution>>,
    /// OK latency histogram.
    pub histogram: Option<Vec<Bucket>>,
}

/// ghz's `Options` (the fields that apply; the load-schedule ones are constant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GhzOptions {
    /// `package.Service.Method`.
    pub call: String,
    /// Server address.
    pub host: String,
    /// Plaintext connection.
    pub insecure: bool,
    /// Open loop: requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<u64>,
    /// Always `const`.
    #[serde(rename = "load-schedule")]
    pub load_schedule: String,
    /// Closed loop: requests in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    /// Always `const`.
    #[serde(rename = "concurrency-schedule")]
    pub concurrency_schedule: String,
    /// Request limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Connections.
    pub connections: u64,
    /// Duration limit, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Per-request deadline, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Protobuf-encoded data (always false: random tensors).
    pub binary: bool,
    /// CPUs of the generator.
    #[serde(rename = "CPUs")]
    pub cpus: u64,
    /// Name of the test.
    pub name: String,
}

/// One entry of `latencyDistribution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyDistribution {
    /// Percentile.
    pub percentage: u32,
    /// Latency, ns.
    pub latency: u64,
}

/// One bucket of `histogram`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, seconds.
    pub mark: f64,
    /// OK answers in `(previous mark, mark]`.
    pub count: u64,
    /// `count` / OK answers.
    pub frequency: f64,
}

/// grpc-go's name of a canonical status name (`RESOURCE_EXHAUSTED` → `ResourceExhausted`).
pub fn go_code_name(name: &str) -> String {
    match name {
        OK => OK.into(),
        "CANCELLED" => "Canceled".into(),
        other => other
            .split('_')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_string() + &chars.as_str().to_lowercase()
                })
            })
            .collect(),
    }
}

fn ns(us: u64) -> u64 {
    us.saturating_mul(1_000)
}

/// Every report in ghz's format.
pub fn reports(reports: &[Report]) -> Vec<GhzReport> {
    reports.iter().map(report).collect()
}

/// `r` in ghz's format.
pub fn report(r: &Report) -> GhzReport {
    let name = format!("kiln-loadtest {}", r.target.model);
    let ended = r.started() + Duration::from_secs_f64(r.measured_s.max(0.0));
    let weighted: f64 = r
        .statuses
        .values()
        .map(|s| s.latency_us.mean * s.count as f64)
        .sum();
    let average_us = if r.sent == 0 {
        0.0
    } else {
        weighted / r.sent as f64
    };
    let mut error_distribution = BTreeMap::new();
    let mut status_code_distribution = BTreeMap::new();
    for (status, s) in &r.statuses {
        let code = go_code_name(status);
        if status != OK {
            let desc = s.message.as_deref().unwrap_or_default();
            let text = format!("rpc error: code = {code} desc = {desc}");
            *error_distribution.entry(text).or_default() += s.count;
        }
        *status_code_distribution.entry(code).or_default() += s.count;
    }
    let (latency_distribution, histogram) = ok_distribution(r);
    GhzReport {
        options: options(r, &name),
        name,
        end_reason: "normal".into(),
        date: humantime::format_rfc3339_seconds(ended).to_string(),
        count: r.sent,
        total: (r.measured_s * 1e9).round() as u64,
        average: (average_us * 1e3).round() as u64,
        fastest: r.latency_us.as_ref().map_or(0, |l| ns(l.min)),
        slowest: r.latency_us.as_ref().map_or(0, |l| ns(l.max)),
        rps: if r.measured_s > 0.0 {
            r.sent as f64 / r.measured_s
        } else {
            0.0
        },
        error_distribution,
        status_code_distribution,
        latency_distribution,
        histogram,
    }
}

fn options(r: &Report, name: &str) -> GhzOptions {
    let (rps, concurrency) = match r.load.mode {
        LoadMode::Closed { concurrency } => (None, Some(concurrency as u64)),
        LoadMode::Open { rate, .. } => (Some(rate.round() as u64), None),
    };
    let cpus = crate::client_cpu::allowed_cpus() as u64;
    GhzOptions {
        call: "inference.GRPCInferenceService.ModelInfer".into(),
        host: r.target.url.clone(),
        insecure: true,
        rps,
        load_schedule: "const".into(),
        concurrency,
        concurrency_schedule: "const".into(),
        total: r.load.requests,
        connections: r.load.connections as u64,
        duration: r.load.duration_s.map(|s| (s * 1e9).round() as u64),
        timeout: r.target.timeout_ms.map(|ms| (ms * 1e6).round() as u64),
        binary: false,
        cpus,
        name: name.into(),
    }
}

/// `latencyDistribution` and `histogram` of the OK answers: from the full histogram when the
/// report has it, else the percentiles the summary has and no histogram.
fn ok_distribution(r: &Report) -> (Option<Vec<LatencyDistribution>>, Option<Vec<Bucket>>) {
    let Some(summary) = &r.latency_us else {
        return (None, None);
    };
    let Some(hist) = r.ok_histogram() else {
        let known = [
            (50, summary.p50),
            (90, summary.p90),
            (95, summary.p95),
            (99, summary.p99),
        ];
        let entries = known
            .into_iter()
            .map(|(percentage, us)| LatencyDistribution {
                percentage,
                latency: ns(us),
            })
            .collect();
        return (Some(entries), None);
    };
    let distribution = PERCENTILES
        .iter()
        .map(|&p| LatencyDistribution {
            percentage: p,
            latency: ns(hist.value_at_quantile(f64::from(p) / 100.0)),
        })
        .collect();
    // ghz: marks fastest + i * (slowest - fastest) / 10, the last one the slowest; each answer
    // counts in the first bucket whose mark is not below it.
    let (fastest, slowest) = (hist.min() as f64, hist.max() as f64);
    let step = (slowest - fastest) / BUCKETS as f64;
    let marks: Vec<f64> = (0..=BUCKETS)
        .map(|i| {
            if i == BUCKETS {
                slowest
            } else {
                fastest + step * i as f64
            }
        })
        .collect();
    let mut counts = vec![0u64; marks.len()];
    for v in hist.iter_recorded() {
        let value = (v.value_iterated_to() as f64).clamp(fastest, slowest);
        let bucket = marks.iter().position(|m| value <= *m).unwrap_or(BUCKETS);
        counts[bucket] += v.count_at_value();
    }
    let total = hist.len() as f64;
    let buckets = marks
        .iter()
        .zip(counts)
        .map(|(mark, count)| Bucket {
            mark: mark / 1e6,
            count,
            frequency: count as f64 / total,
        })
        .collect();
    (Some(distribution), Some(buckets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::report as sample;

    #[test]
    fn code_names_follow_grpc_go() {
        assert_eq!(go_code_name("OK"), "OK");
        assert_eq!(go_code_name("RESOURCE_EXHAUSTED"), "ResourceExhausted");
        assert_eq!(go_code_name("DEADLINE_EXCEEDED"), "DeadlineExceeded");
        assert_eq!(go_code_name("CANCELLED"), "Canceled");
        assert_eq!(go_code_name("UNAVAILABLE"), "Unavailable");
    }

    #[test]
    fn report_uses_ghz_names_and_nanoseconds() {
        let r = sample(2);
        let g = report(&r);
        assert_eq!(g.count, 220);
        assert_eq!(g.total, 2_000_000_000);
        assert_eq!(g.rps, 110.0);
        assert_eq!(g.status_code_distribution["OK"], 200);
        assert_eq!(g.status_code_distribution["ResourceExhausted"], 20);
        assert_eq!(
            g.error_distribution["rpc error: code = ResourceExhausted desc = queue full"],
            20
        );
        let l = r.latency_us.as_ref().unwrap();
        assert_eq!((g.fastest, g.slowest), (l.min * 1_000, l.max * 1_000));
        assert!(g.fastest >= 1_000_000 && g.slowest >= 100_000_000, "{g:?}");
        // 200 OK averaging ~50.5 ms and 20 errors of ~1 ms.
        let expected = (200.0 * l.mean + 20.0 * 1_000.0) / 220.0 * 1e3;
        assert!(
            (g.average as f64 - expected).abs() / expected < 0.01,
            "{g:?}"
        );

        let json: serde_json::Value = serde_json::to_value(&g).unwrap();
        for key in [
            "date",
            "options",
            "count",
            "total",
            "average",
            "fastest",
            "slowest",
            "rps",
            "errorDistribution",
            "statusCodeDistribution",
            "latencyDistribution",
            "histogram",
            "endReason",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
        assert_eq!(json["options"]["concurrency"], 4);
        assert_eq!(json["options"]["timeout"], 500_000_000u64);
        assert_eq!(json["options"]["CPUs"].as_u64().map(|n| n > 0), Some(true));
        assert!(json["date"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn distribution_and_histogram_follow_ghz() {
        let g = report(&sample(1));
        let dist = g.latency_distribution.unwrap();
        let percentages: Vec<u32> = dist.iter().map(|d| d.percentage).collect();
        assert_eq!(percentages, PERCENTILES);
        // OK latencies are 1..=100 ms: the p-th percentile is about p ms.
        for d in &dist {
            let ms = d.latency as f64 / 1e6;
            assert!((ms - f64::from(d.percentage)).abs() <= 1.1, "{d:?}");
        }
        let hist = g.histogram.unwrap();
        assert_eq!(hist.len(), BUCKETS + 1);
        assert_eq!(hist.iter().map(|b| b.count).sum::<u64>(), 100);
        assert!((hist.iter().map(|b| b.frequency).sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(hist[0].count, 1, "only the fastest is at the first mark");
        assert!((hist[0].mark - 0.001).abs() < 1e-5, "{:?}", hist[0]);
        assert!(
            (hist[BUCKETS].mark - 0.1).abs() < 1e-3,
            "{:?}",
            hist[BUCKETS]
        );
        assert!(hist.windows(2).all(|w| w[0].mark <= w[1].mark));
        // Ten ms per bucket, about ten answers each.
        assert!(
            hist[1..].iter().all(|b| (9..=11).contains(&b.count)),
            "{hist:?}"
        );
    }

    #[test]
    fn runs_without_ok_answers_have_null_distributions() {
        let mut r = sample(1);
        r.latency_us = None;
        r.latency_hist = None;
        let json = serde_json::to_value(report(&r)).unwrap();
        assert!(json["latencyDistribution"].is_null());
        assert!(json["histogram"].is_null());
        assert_eq!(json["fastest"], 0);
    }
}
