//! The load side's additions to a run's [`crate::Report`], flattened into its JSON: every
//! field is skipped when unused, so a plain run's JSON is unchanged.
//!
//! ```text
//! stability          with --stability-windows: {rule: {windows, window, tolerance,
//!                    max_windows, quantile}, stable, windows: [{throughput_rps, latency_us}],
//!                    throughput_rps, latency_us (the last N windows merged; latency_us is the
//!                    checked quantile, null without OK answers)}
//! stages             with --stages: [{duration_s, target}]
//! arrival            "poisson" with --arrival poisson (absent: evenly spaced)
//! models             with several models or --validate: {name: {weight, sent, ok, errors,
//!                    validation_failed, counts: {status: n}, latency_us, mismatch}}
//! validation_failed  with --validate: OK answers whose outputs did not match (they also
//!                    count as OK above: the server answered)
//! drift              with --drift: {shift, scale, noise, over_s, features: [[lo, hi]]}
//! input_data         with --input-data: the file
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::drift::Drift;
use crate::mix::ModelReport;
use crate::report::fmt_us;
use crate::schedule::{Arrival, Stage};
use crate::stability::StabilityReport;

/// See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunExtras {
    /// How the stability windows ended the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<StabilityReport>,
    /// The open loop's ramp.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
    /// Poisson arrivals (absent: evenly spaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<Arrival>,
    /// Answers per model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelReport>,
    /// OK answers whose outputs failed validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_failed: Option<u64>,
    /// The input drift applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
    /// The input data file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
}

impl RunExtras {
    /// Appends the summary table's lines for the used features (nothing for a plain run).
    pub fn write_table(&self, out: &mut String) -> fmt::Result {
        if let Some(s) = &self.stability {
            let latency = s.latency_us.map_or("-".into(), fmt_us);
            writeln!(
                out,
                "stability   {} after {} windows of {:.2}s (last {}: {:.1} req/s, p{} {latency}, ±{:.0}%)",
                if s.stable { "stable" } else { "NOT stable" },
                s.windows.len(),
                s.rule.window.as_secs_f64(),
                s.rule.windows,
                s.throughput_rps,
                s.rule.quantile * 100.0,
                s.rule.tolerance * 100.0
            )?;
        }
        if !self.stages.is_empty() {
            let stages: Vec<String> = self
                .stages
                .iter()
                .map(|s| format!("{}s:{}", s.duration_s, s.target))
                .collect();
            writeln!(out, "stages      {}", stages.join(","))?;
        }
        if let Some(arrival) = self.arrival {
            writeln!(out, "arrivals    {arrival:?}")?;
        }
        if let Some(file) = &self.input_data {
            writeln!(out, "input data  {file}")?;
        }
        if let Some(d) = &self.drift {
            writeln!(
                out,
                "drift       shift {} scale {} noise {} over {}s{}",
                d.shift,
                d.scale,
                d.noise,
                d.over_s,
                if d.features.is_empty() {
                    ""
                } else {
                    " (some features)"
                }
            )?;
        }
        if let Some(n) = self.validation_failed {
            writeln!(
                out,
                "validation  {n} answers did not match the expected outputs"
            )?;
        }
        if !self.models.is_empty() {
            writeln!(
                out,
                "{:<20} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "model", "weight", "sent", "errors", "invalid", "p50", "p99"
            )?;
            for (name, m) in &self.models {
                let (p50, p99) = m
                    .latency_us
                    .as_ref()
                    .map_or(("-".into(), "-".into()), |l| (fmt_us(l.p50), fmt_us(l.p99)));
                writeln!(
                    out,
                    "{name:<20} {:>6} {:>9} {:>9} {:>9} {p50:>9} {p99:>9}",
                    m.weight, m.sent, m.errors, m.validation_failed
                )?;
            }
            for (name, m) in &self.models {
                if let Some(why) = &m.mismatch {
                    writeln!(out, "{name}: VALIDATION_FAILED: {why}")?;
                }
            }
        }
        Ok(())
    }
}

impl RunExtras {
    /// The additions of a run of `config` that measured `outcome`.
    pub fn of(config: &crate::RunConfig, outcome: &crate::load::Outcome) -> Self {
        let load = &config.load;
        Self {
            stability: outcome.stability.clone(),
            stages: load.stages.clone(),
            arrival: (load.arrival != Arrival::Constant).then_some(load.arrival),
            models: if config.target.models.len() > 1 || config.target.validate.is_some() {
                outcome.tally.reports(&config.target.mix())
            } else {
                BTreeMap::new()
            },
            validation_failed: config
                .target
                .validate
                .map(|_| outcome.tally.validation_failed()),
            drift: config.target.drift.clone(),
            input_data: config
                .target
                .input_data
                .as_ref()
                .map(|p| p.display().to_string()),
        }
    }
}
