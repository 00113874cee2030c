//! Everything a run's [`Report`]s are turned into besides the kiln JSON: the summary table
//! ([`table`]), ghz's JSON ([`ghz`]), perf_analyzer's CSV ([`csv`]), a self-contained HTML
//! page ([`html`], charts by [`svg`]) and HdrHistogram interval logs with their merge
//! ([`hlog`]); [`args`] holds the flags, and [`args::OutputArgs::write_files`] writes the files
//! they name.
//!
//! Every writer takes `&[Report]` (one per run of a sweep) and works from the reports alone,
//! so a report read back from JSON gives the same outputs.

pub mod args;
pub mod csv;
pub mod ghz;
pub mod hlog;
pub mod html;
pub mod svg;
pub mod table;

use std::collections::BTreeMap;

use crate::record::{OK, decode_histogram, latency_histogram};
use crate::report::Report;

/// One row of a (possibly grouped) per-second series: seconds `from..to` of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// First second (inclusive).
    pub from: u64,
    /// Last second (exclusive).
    pub to: u64,
    /// Answers by status.
    pub counts: BTreeMap<String, u64>,
    /// Requests due but not sent.
    pub not_sent: u64,
    /// OK median over the interval, µs.
    pub ok_p50_us: Option<u64>,
    /// OK 99th percentile over the interval, µs.
    pub ok_p99_us: Option<u64>,
}

impl Interval {
    /// Its length in seconds.
    pub fn seconds(&self) -> u64 {
        (self.to - self.from).max(1)
    }

    /// Answers with status `name`.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// The report's series in at most `max_rows` rows of equal length (whole seconds). Grouped
/// percentiles come from the merged per-second histograms; reports without them (older JSON)
/// show the worst second's values instead.
pub fn intervals(report: &Report, max_rows: usize) -> Vec<Interval> {
    let n = report.series.len();
    if n == 0 {
        return Vec::new();
    }
    let size = n.div_ceil(max_rows.max(1));
    report
        .series
        .chunks(size)
        .map(|chunk| {
            let mut counts = BTreeMap::new();
            for s in chunk {
                for (name, count) in &s.counts {
                    *counts.entry(name.clone()).or_default() += count;
                }
            }
            let (ok_p50_us, ok_p99_us) = match chunk {
                [one] => (one.ok_p50_us, one.ok_p99_us),
                _ => grouped_percentiles(chunk),
            };
            Interval {
                from: chunk[0].second,
                to: chunk[chunk.len() - 1].second + 1,
                counts,
                not_sent: chunk.iter().map(|s| s.not_sent).sum(),
                ok_p50_us,
                ok_p99_us,
            }
        })
        .collect()
}

fn grouped_percentiles(chunk: &[crate::report::SecondReport]) -> (Option<u64>, Option<u64>) {
    let mut merged = latency_histogram();
    let mut complete = true;
    for s in chunk
        .iter()
        .filter(|s| s.counts.get(OK).is_some_and(|n| *n > 0))
    {
        match s.ok_hist.as_deref().map(decode_histogram) {
            Some(Ok(h)) => merged.add(&h).expect("auto-resizing histograms merge"),
            _ => complete = false,
        }
    }
    if complete {
        return if merged.is_empty() {
            (None, None)
        } else {
            (
                Some(merged.value_at_quantile(0.5)),
                Some(merged.value_at_quantile(0.99)),
            )
        };
    }
    let worst =
        |f: fn(&crate::report::SecondReport) -> Option<u64>| chunk.iter().filter_map(f).max();
    (worst(|s| s.ok_p50_us), worst(|s| s.ok_p99_us))
}

#[cfg(test)]
pub(crate) mod tests;
