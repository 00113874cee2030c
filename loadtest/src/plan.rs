//! Several measured runs in one invocation: a sweep of load levels (`--concurrency 1,4,16,64`,
//! `--rate 100,200,400`, one run per level, in order) or an SLO search ([`crate::slo`]). Each
//! run is a full [`crate::run`] (its own connections, warm-up and [`Report`]).
//!
//! # JSON (`--json` with more than one run)
//!
//! One run without an SLO search writes the single report exactly as before
//! (`"schema": "kiln-loadtest/v1"`, see [`crate::report`]). Otherwise:
//!
//! ```text
//! schema   "kiln-loadtest-plan/v1"
//! runs     [Report, ...]: one kiln-loadtest/v1 report per level or probe, in run order
//! slo      with --slo: {slo: {text, metric, quantile, bound_us}, search: {lo, hi, precision},
//!          probes: [{rate, met, latency_us, stable, errors, not_sent, throughput_rps}],
//!          best_rate (null: not even lo met the SLO)}; absent for a sweep
//! ```

use serde::{Deserialize, Serialize};

use crate::config::{LoadMode, RunConfig};
use crate::report::Report;
use crate::slo::{self, Search, Slo, SloOutcome};

/// The `schema` of a multi-run JSON document.
pub const PLAN_SCHEMA: &str = "kiln-loadtest-plan/v1";

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// These runs, in order (one for a plain run).
    Levels(Vec<RunConfig>),
    /// The highest open-loop rate of `base` meeting `slo`.
    Slo {
        /// The configuration probed (its rate is replaced per probe).
        base: Box<RunConfig>,
        /// The bound.
        slo: Slo,
        /// Range and precision.
        search: Search,
    },
}

/// The runs of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOutcome {
    /// Always [`PLAN_SCHEMA`].
    pub schema: String,
    /// One report per run, in order.
    pub runs: Vec<Report>,
    /// The SLO search's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloOutcome>,
}

impl PlanOutcome {
    /// The JSON document: the single report for one run without a search, else the plan
    /// document (module doc).
    pub fn to_json(&self) -> String {
        match (&self.runs[..], &self.slo) {
            ([one], None) => one.to_json(),
            _ => serde_json::to_string_pretty(self).expect("a plan serializes"),
        }
    }

    /// The human summary of the search (empty for a sweep).
    pub fn slo_summary(&self) -> String {
        let Some(s) = &self.slo else {
            return String::new();
        };
        let mut out = format!(
            "SLO search  {} over {}..{} req/s\n",
            s.slo.text, s.search.lo, s.search.hi
        );
        for p in &s.probes {
            let latency = p.latency_us.map_or("-".into(), crate::report::fmt_us);
            out += &format!(
                "  rate {:>10.1}  {}  {} {latency}{}{}\n",
                p.rate,
                if p.met { "met   " } else { "missed" },
                s.slo.metric,
                if p.stable { "" } else { ", unstable" },
                if p.errors + p.not_sent > 0 {
                    format!(", {} errors, {} not sent", p.errors, p.not_sent)
                } else {
                    String::new()
                }
            );
        }
        out += &match s.best_rate {
            Some(rate) => format!("answer      {rate:.1} req/s meets {}\n", s.slo.text),
            None => format!(
                "answer      none: even {} req/s misses {}\n",
                s.search.lo, s.slo.text
            ),
        };
        out
    }
}

/// `base` with its load mode replaced by each of `modes`.
pub fn levels(base: &RunConfig, modes: &[LoadMode]) -> Vec<RunConfig> {
    modes
        .iter()
        .map(|&mode| {
            let mut config = base.clone();
            config.load.mode = mode;
            config
        })
        .collect()
}

/// `base` at open-loop `rate` (keeping its `max_in_flight`).
fn at_rate(base: &RunConfig, rate: f64) -> RunConfig {
    let mut config = base.clone();
    let max_in_flight = match base.load.mode {
        LoadMode::Open { max_in_flight, .. } => max_in_flight,
        LoadMode::Closed { .. } => 10_000,
    };
    config.load.mode = LoadMode::Open {
        rate,
        max_in_flight,
    };
    config
}

/// Runs `plan`, each run through `run_one` (e.g. [`crate::run`], or one with a progress
/// display), and collects the reports.
pub async fn run_plan<F>(plan: &Plan, mut run_one: F) -> anyhow::Result<PlanOutcome>
where
    F: AsyncFnMut(&RunConfig) -> anyhow::Result<Report>,
{
    let mut runs = Vec::new();
    let slo = match plan {
        Plan::Levels(configs) => {
            for config in configs {
                if crate::load::interrupted() {
                    break;
                }
                runs.push(run_one(config).await?);
            }
            None
        }
        Plan::Slo { base, slo, search } => {
            search.validate()?;
            let mut probes = Vec::new();
            let (_, best_rate) = slo::search(*search, async |rate| {
                if crate::load::interrupted() {
                    anyhow::bail!("interrupted during the SLO search");
                }
                let report = run_one(&at_rate(base, rate)).await?;
                let probe = slo.judge(rate, &report);
                let met = probe.met;
                probes.push(probe);
                runs.push(report);
                Ok(met)
            })
            .await?;
            Some(SloOutcome {
                slo: slo.clone(),
                search: *search,
                probes,
                best_rate,
            })
        }
    };
    Ok(PlanOutcome {
        schema: PLAN_SCHEMA.into(),
        runs,
        slo,
    })
}
