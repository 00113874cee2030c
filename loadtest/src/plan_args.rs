//! The flags of sweeps, stability windows, SLO searches and ramps (flattened into
//! [`crate::cli::Args`]), and the [`Levels`] list type of `--concurrency`/`--rate`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::cli::parse_duration;
use crate::drift::Drift;
use crate::schedule::{Arrival, Stage, parse_stages};
use crate::slo::{Search, Slo};
use crate::stability::Stability;

/// A comma-separated list of load levels (`1,4,16,64`), at least one.
#[derive(Debug, Clone, PartialEq)]
pub struct Levels<T>(pub Vec<T>);

impl<T: FromStr> FromStr for Levels<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let levels = s
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|e| format!("{v:?} in {s:?}: {e}"))
            })
            .collect::<Result<Vec<T>, String>>()?;
        Ok(Self(levels))
    }
}

/// A fraction written as a fraction (`0.1`) or a percentage (`10%`).
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let value = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|e| format!("{s:?}: {e}"))?;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("{s:?}: expected a fraction >= 0"))
    }
}

/// `lo,hi` requests per second.
pub fn parse_rate_range(s: &str) -> Result<(f64, f64), String> {
    let (lo, hi) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected lo,hi"))?;
    let parse = |v: &str| v.trim().parse::<f64>().map_err(|e| format!("{v:?}: {e}"));
    Ok((parse(lo)?, parse(hi)?))
}

/// `--stages` as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages(pub Vec<Stage>);

impl FromStr for Stages {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_stages(s).map(Self)
    }
}

/// The quantile named `p50`/`p90`/`p95`/`p99`/`p99.9`.
fn quantile_of(name: &str) -> anyhow::Result<f64> {
    Ok(match name {
        "p50" => 0.5,
        "p90" => 0.9,
        "p95" => 0.95,
        "p99" => 0.99,
        "p99.9" => 0.999,
        _ => anyhow::bail!("{name:?}: expected p50, p90, p95, p99 or p99.9"),
    })
}

/// Sweep, stability, SLO and ramp flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlanArgs {
    /// Stability windows (perf_analyzer): end each level when the last N windows agree within
    /// --stability (throughput and --stability-latency), at most --max-windows windows
    /// (replaces --duration).
    #[arg(long, value_name = "N")]
    pub stability_windows: Option<usize>,
    /// Length of one stability window.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub window: Duration,
    /// Allowed deviation of each window from the windows' mean (`10%` or `0.1`).
    #[arg(long, value_parser = parse_fraction, default_value = "10%")]
    pub stability: f64,
    /// Windows after which an unstable level ends anyway.
    #[arg(long, default_value_t = 10)]
    pub max_windows: usize,
    /// The latency percentile the stability rule checks: p50, p90, p95, p99.
    #[arg(long, default_value = "p99")]
    pub stability_latency: String,
    /// SLO search: the highest open-loop rate meeting `p99=5ms` (p50/p90/p95/p99/p99.9);
    /// needs --rate-range.
    #[arg(long, requires = "rate_range", conflicts_with_all = ["rate", "concurrency", "stages"])]
    pub slo: Option<Slo>,
    /// SLO search range `lo,hi` (requests per second).
    #[arg(long, value_parser = parse_rate_range, requires = "slo")]
    pub rate_range: Option<(f64, f64)>,
    /// SLO search: stop bisecting at this relative precision (`5%`).
    #[arg(long, value_parser = parse_fraction, default_value = "5%")]
    pub slo_precision: f64,
    /// Open loop ramp like k6's ramping-arrival-rate: `10s:100,30s:500,10s:0` (start rate 0,
    /// or set by a leading `0s:R`); the measured window is the stages' total length.
    #[arg(long, conflicts_with_all = ["rate", "concurrency"])]
    pub stages: Option<Stages>,
    /// Open loop arrivals: `constant` (evenly spaced) or `poisson` (exponential gaps, --seed).
    #[arg(long, default_value = "constant")]
    pub arrival: Arrival,
}

impl PlanArgs {
    /// The stability rule, if asked for.
    pub fn stability(&self) -> anyhow::Result<Option<Stability>> {
        let Some(windows) = self.stability_windows else {
            return Ok(None);
        };
        let rule = Stability {
            windows,
            window: self.window,
            tolerance: self.stability,
            max_windows: self.max_windows,
            quantile: quantile_of(&self.stability_latency)?,
        };
        rule.validate()?;
        Ok(Some(rule))
    }

    /// The SLO search, if asked for.
    pub fn search(&self) -> Option<(Slo, Search)> {
        let slo = self.slo.clone()?;
        let (lo, hi) = self.rate_range?;
        let search = Search {
            lo,
            hi,
            precision: self.slo_precision,
        };
        Some((slo, search))
    }
}

/// Request-content flags: input data files, output validation, input drift.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RequestArgs {
    /// Input rows instead of random data: perf_analyzer's JSON (`{"data": [...],
    /// "validation_data": [...]}`), `.npy` (rows along the first axis) or `.csv` (a row per
    /// line, header optional); batched by --batch-size in order.
    #[arg(long, value_name = "FILE")]
    pub input_data: Option<PathBuf>,
    /// Expected outputs for --validate (`.npy` rows of the first output, or JSON
    /// `validation_data`), replacing the input data's own.
    #[arg(long, value_name = "FILE", requires = "input_data")]
    pub expected: Option<PathBuf>,
    /// Compare every answer's outputs with the expected ones; mismatches are counted per model
    /// as validation failures.
    #[arg(long, requires = "input_data")]
    pub validate: bool,
    /// Tolerance of --validate: |got - expected| <= tol * max(1, |expected|).
    #[arg(long, default_value_t = 1e-5)]
    pub validate_tolerance: f64,
    /// Drift float inputs over the measured window, for drift monitors:
    /// `shift=0.5,scale=1.5,noise=0.1,over=60s[,features=0-9]` gives x·(1+(scale−1)f) +
    /// shift·f + N(0, noise·f) with f ramping 0→1 over `over` from the measured window's start.
    #[arg(long)]
    pub drift: Option<Drift>,
}

impl RequestArgs {
    /// The validation tolerance, if validating.
    pub fn tolerance(&self) -> anyhow::Result<Option<f64>> {
        if !self.validate {
            return Ok(None);
        }
        anyhow::ensure!(
            self.validate_tolerance.is_finite() && self.validate_tolerance >= 0.0,
            "validate-tolerance must be >= 0"
        );
        Ok(Some(self.validate_tolerance))
    }
}
