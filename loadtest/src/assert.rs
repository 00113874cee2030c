//! Pass/fail conditions on a [`Report`] (`--assert "p99<5ms,errors=0,rps>1000"`).
//!
//! A condition is `METRIC OP VALUE` with `OP` one of `<`, `<=`, `>`, `>=`, `=`. Metrics:
//! - OK latency: `p50`, `p90`, `p95`, `p99`, `p99.9`, `p99.99`, `max`, `min`, `mean`; the value needs a
//!   unit (`ns`, `us`/`µs`, `ms`, `s`): `p99<5ms`. Fails when there is no OK answer.
//! - `errors` (non-OK answers), `not_sent` (client saturated), `sent`, `ok`: counts.
//! - `error_rate`: fraction (`0.01`) or percent (`1%`) of sent requests.
//! - `rps`: OK answers per second.
//! - `client_cpu`: the load generator's share of its CPUs over the window, fraction or percent
//!   (`client_cpu<90%`: the measurement is not the generator's own queueing). Fails where it
//!   could not be measured.

use std::fmt;
use std::str::FromStr;

use crate::cli::parse_duration;
use crate::report::{Latency, Report};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
}

impl Op {
    fn holds(self, actual: f64, bound: f64) -> bool {
        match self {
            Op::Lt => actual < bound,
            Op::Le => actual <= bound,
            Op::Gt => actual > bound,
            Op::Ge => actual >= bound,
            Op::Eq => actual == bound,
        }
    }
}

/// One condition, as written and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    /// The condition as the user wrote it.
    pub text: String,
    /// What it measures (`"p99"`, `"errors"`).
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The bound (µs for latency metrics).
    pub bound: f64,
}

/// A failed condition and the value seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The condition as written.
    pub condition: String,
    /// What the run measured (`"7.20ms"`, `"3"`, `"no OK answers"`).
    pub actual: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FAILED {}: got {}", self.condition, self.actual)
    }
}

/// A comma-separated list of conditions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assertions(pub Vec<Assertion>);

/// The OK latency summary's field named `name` (µs), `None` if `name` is not a latency.
fn latency_metric(name: &str, l: &Latency) -> Option<f64> {
    Some(match name {
        "p50" => l.p50 as f64,
        "p90" => l.p90 as f64,
        "p95" => l.p95 as f64,
        "p99" => l.p99 as f64,
        "p99.9" => l.p99_9 as f64,
        "p99.99" => l.p99_99 as f64,
        "max" => l.max as f64,
        "min" => l.min as f64,
        "mean" => l.mean,
        _ => return None,
    })
}

const LATENCY_METRICS: [&str; 9] = [
    "p50", "p90", "p95", "p99", "p99.9", "p99.99", "max", "min", "mean",
];

/// The report's number named `name`, `None` if there is none.
fn number_metric(name: &str, r: &Report) -> Option<f64> {
    Some(match name {
        "errors" => r.errors as f64,
        "not_sent" => r.not_sent as f64,
        "sent" => r.sent as f64,
        "ok" => r.ok as f64,
        "error_rate" => r.error_rate,
        "rps" => r.throughput_rps,
        _ => return None,
    })
}

const NUMBER_METRICS: [&str; 7] = [
    "errors",
    "not_sent",
    "sent",
    "ok",
    "error_rate",
    "rps",
    "client_cpu",
];

/// Metrics that may be written as a percentage.
const FRACTION_METRICS: [&str; 2] = ["error_rate", "client_cpu"];

impl FromStr for Assertion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let at = text
            .find(['<', '>', '='])
            .ok_or_else(|| format!("{text:?}: expected METRIC<VALUE, >, <=, >= or ="))?;
        let (name, rest) = (text[..at].trim(), &text[at..]);
        let (op, value) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .into_iter()
            .chain([("==", Op::Eq), ("=", Op::Eq)])
            .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (op, v.trim())))
            .expect("starts with an operator character");
        let bound = if LATENCY_METRICS.contains(&name) {
            if value.parse::<f64>().is_ok() {
                return Err(format!("{text:?}: give the latency a unit, e.g. 5ms"));
            }
            let d = parse_duration(value).map_err(|e| format!("{text:?}: {e}"))?;
            d.as_secs_f64() * 1e6
        } else if NUMBER_METRICS.contains(&name) {
            match value.strip_suffix('%') {
                Some(pct) if FRACTION_METRICS.contains(&name) => {
                    pct.trim().parse::<f64>().map(|p| p / 100.0)
                }
                _ => value.parse::<f64>(),
            }
            .map_err(|e| format!("{text:?}: {e}"))?
        } else {
            return Err(format!(
                "{text:?}: unknown metric {name:?} (p50 p90 p95 p99 p99.9 p99.99 max min mean \
                 errors error_rate not_sent sent ok rps client_cpu)"
            ));
        };
        Ok(Self {
            text: text.to_string(),
            metric: name.to_string(),
            op,
            bound,
        })
    }
}

impl FromStr for Assertions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|c| !c.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Assertions)
    }
}

impl Assertion {
    /// `None` if the condition holds on `report`, else what failed.
    pub fn check(&self, report: &Report) -> Option<Failure> {
        let (actual, shown) = if self.metric == "client_cpu" {
            let Some(cpu) = &report.client_cpu else {
                return Some(Failure {
                    condition: self.text.clone(),
                    actual: "no measurement of the client's CPU".into(),
                });
            };
            (cpu.utilization, format!("{:.1}%", cpu.utilization * 100.0))
        } else if let Some(v) = number_metric(&self.metric, report) {
            (v, format!("{v}"))
        } else {
            let Some(us) = report
                .latency_us
                .as_ref()
                .and_then(|l| latency_metric(&self.metric, l))
            else {
                return Some(Failure {
                    condition: self.text.clone(),
                    actual: "no OK answers".into(),
                });
            };
            (us, crate::report::fmt_us(us.round() as u64))
        };
        (!self.op.holds(actual, self.bound)).then(|| Failure {
            condition: self.text.clone(),
            actual: shown,
        })
    }
}

impl Assertions {
    /// Every failed condition (empty: all hold).
    pub fn check(&self, report: &Report) -> Vec<Failure> {
        self.0.iter().filter_map(|a| a.check(report)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::report as sample;

    #[test]
    fn p95_is_a_latency_metric() {
        let r = sample(1);
        let p95 = r.latency_us.as_ref().unwrap().p95;
        assert!((94_000..=96_100).contains(&p95), "{p95}");
        let pass: Assertions = "p95<97ms,p95>=90ms".parse().unwrap();
        assert_eq!(pass.check(&r), vec![]);
        let fail: Assertions = "p95<50ms".parse().unwrap();
        assert_eq!(fail.check(&r)[0].condition, "p95<50ms");
        assert!("p95<5".parse::<Assertions>().is_err(), "needs a unit");
    }

    #[test]
    fn client_cpu_is_a_share_written_as_fraction_or_percent() {
        let mut r = sample(1); // 30 % of 2 CPUs
        let pass: Assertions = "client_cpu<90%,client_cpu>0.2".parse().unwrap();
        assert_eq!(pass.check(&r), vec![]);
        let fail: Assertions = "client_cpu<25%".parse().unwrap();
        assert_eq!(fail.check(&r)[0].actual, "30.0%");
        r.client_cpu = None;
        assert_eq!(
            pass.check(&r)[0].actual,
            "no measurement of the client's CPU"
        );
        assert!(
            "rps>5%".parse::<Assertions>().is_err(),
            "only shares take %"
        );
    }
}
