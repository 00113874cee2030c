//! SLO search: the highest open-loop rate whose latency meets a bound (`--slo p99=5ms
//! --rate-range 50,5000`).
//!
//! A probe runs the base configuration at one rate. It meets the SLO when every request due was
//! sent and answered OK (no errors, nothing not sent), the latency quantile is within the
//! bound, and, with stability windows, the windows were stable — the quantile is then the one
//! of the last `N` stable windows (perf_analyzer's rule), else of the whole measured window.
//!
//! The search probes `lo`; if that fails there is no answer. It then doubles the rate until a
//! probe fails or `hi` passes, and bisects between the highest passing and the lowest failing
//! rate until they are within `precision` (relative, 5 % by default) of each other. The answer
//! is the highest passing rate. Every probe is kept, in order.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::report::{Latency, Report};

/// A latency bound: `quantile` of OK latency ≤ `bound_us`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// As written (`p99=5ms`).
    pub text: String,
    /// `p50`, `p90`, `p95`, `p99`, `p99.9`.
    pub metric: String,
    /// The quantile (0.99).
    pub quantile: f64,
    /// The bound, µs.
    pub bound_us: f64,
}

impl FromStr for Slo {
    type Err = String;

    /// `p99=5ms`, also `p99<=5ms` or `p99<5ms` (all mean ≤).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let at = s
            .find(['=', '<'])
            .ok_or_else(|| format!("{s:?}: expected p99=5ms"))?;
        let metric = s[..at].trim();
        let value = s[at..].trim_start_matches(['<', '=']).trim();
        let quantile = match metric {
            "p50" => 0.5,
            "p90" => 0.9,
            "p95" => 0.95,
            "p99" => 0.99,
            "p99.9" => 0.999,
            _ => return Err(format!("{s:?}: the metric is p50, p90, p95, p99 or p99.9")),
        };
        if value.parse::<f64>().is_ok() {
            return Err(format!("{s:?}: give the latency a unit, e.g. 5ms"));
        }
        let bound = crate::cli::parse_duration(value)?;
        Ok(Self {
            text: s.to_string(),
            metric: metric.to_string(),
            quantile,
            bound_us: bound.as_secs_f64() * 1e6,
        })
    }
}

impl Slo {
    /// The metric's value in a latency summary, µs.
    fn of(&self, l: &Latency) -> u64 {
        match self.metric.as_str() {
            "p50" => l.p50,
            "p90" => l.p90,
            "p95" => l.p95,
            "p99.9" => l.p99_9,
            _ => l.p99,
        }
    }

    /// Judges one probe's report (see the module doc).
    pub fn judge(&self, rate: f64, report: &Report) -> Probe {
        let (latency_us, stable) = match &report.extras.stability {
            // The stability windows checked this same quantile when the flags agree; else the
            // whole window's figure is the one to judge.
            Some(s) if (s.rule.quantile - self.quantile).abs() < 1e-12 => (s.latency_us, s.stable),
            Some(s) => (report.latency_us.as_ref().map(|l| self.of(l)), s.stable),
            None => (report.latency_us.as_ref().map(|l| self.of(l)), true),
        };
        let clean = report.errors == 0 && report.not_sent == 0 && report.ok > 0;
        let met = clean && stable && latency_us.is_some_and(|l| l as f64 <= self.bound_us);
        Probe {
            rate,
            met,
            latency_us,
            stable,
            errors: report.errors,
            not_sent: report.not_sent,
            throughput_rps: report.throughput_rps,
        }
    }
}

/// One probed rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Requests per second.
    pub rate: f64,
    /// Whether it met the SLO.
    pub met: bool,
    /// The judged latency quantile, µs.
    pub latency_us: Option<u64>,
    /// Whether its stability windows were stable (true without windows).
    pub stable: bool,
    /// Non-OK answers.
    pub errors: u64,
    /// Requests due but not sent.
    pub not_sent: u64,
    /// OK answers per second.
    pub throughput_rps: f64,
}

/// The search's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// Lowest rate probed.
    pub lo: f64,
    /// Highest rate probed.
    pub hi: f64,
    /// Stop bisecting when the passing and failing rates are this close (relative).
    pub precision: f64,
}

impl Search {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.lo.is_finite() && self.lo > 0.0 && self.lo <= self.hi && self.hi.is_finite(),
            "rate-range needs 0 < lo <= hi"
        );
        anyhow::ensure!(
            self.precision > 0.0 && self.precision < 1.0,
            "slo-precision must be in (0, 100%)"
        );
        Ok(())
    }
}

/// The search's result (the `slo` object of the plan JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloOutcome {
    /// The bound searched for.
    pub slo: Slo,
    /// The range and precision.
    pub search: Search,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
    /// The highest rate that met the SLO (`None`: not even `lo`).
    pub best_rate: Option<f64>,
}

/// Runs the search (module doc) with `probe(rate) -> met`; returns the probed rates in order
/// with their verdicts and the answer.
pub async fn search<F>(s: Search, mut probe: F) -> anyhow::Result<(Vec<(f64, bool)>, Option<f64>)>
where
    F: AsyncFnMut(f64) -> anyhow::Result<bool>,
{
    let mut probes = Vec::new();
    let mut run = async |rate: f64, probes: &mut Vec<(f64, bool)>| -> anyhow::Result<bool> {
        let met = probe(rate).await?;
        probes.push((rate, met));
        Ok(met)
    };
    if !run(s.lo, &mut probes).await? {
        return Ok((probes, None));
    }
    let mut best = s.lo;
    let mut failed = None;
    while best < s.hi {
        let next = (best * 2.0).min(s.hi);
        if run(next, &mut probes).await? {
            best = next;
        } else {
            failed = Some(next);
            break;
        }
    }
    if let Some(mut fail) = failed {
        while (fail - best) / best > s.precision {
            let mid = (best + fail) / 2.0;
            if run(mid, &mut probes).await? {
                best = mid;
            } else {
                fail = mid;
            }
        }
    }
    Ok((probes, Some(best)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slos() {
        let slo: Slo = "p99=5ms".parse().unwrap();
        assert_eq!((slo.quantile, slo.bound_us), (0.99, 5000.0));
        let slo: Slo = "p99.9 <= 1.5ms".parse().unwrap();
        assert_eq!((slo.metric.as_str(), slo.bound_us), ("p99.9", 1500.0));
        for bad in ["p99=5", "max=5ms", "p99", "p42=1ms"] {
            assert!(bad.parse::<Slo>().is_err(), "{bad}");
        }
    }

    fn run_search(s: Search, capacity: f64) -> (Vec<(f64, bool)>, Option<f64>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(search(s, async |rate| Ok(rate <= capacity)))
            .unwrap()
    }

    #[test]
    fn grows_then_bisects_to_the_precision() {
        let s = Search {
            lo: 100.0,
            hi: 10_000.0,
            precision: 0.05,
        };
        let (probes, best) = run_search(s, 1234.0);
        let best = best.unwrap();
        assert!((1234.0 / 1.05..=1234.0).contains(&best), "{best}");
        let rates: Vec<f64> = probes.iter().map(|p| p.0).collect();
        assert_eq!(
            &rates[..5],
            [100.0, 200.0, 400.0, 800.0, 1600.0],
            "doubling"
        );
        assert!(probes.iter().all(|&(r, met)| met == (r <= 1234.0)));
        assert!(probes.len() < 12, "{probes:?}");

        assert_eq!(run_search(s, 50.0), (vec![(100.0, false)], None));
        let (probes, best) = run_search(s, 1e9);
        assert_eq!(best, Some(10_000.0), "capped at hi");
        assert_eq!(probes.last(), Some(&(10_000.0, true)));
    }
}
