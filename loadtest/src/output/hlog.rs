//! HdrHistogram interval logs (`--hist-log FILE`): the OK latency (µs) of every second of
//! every run as one interval, in the format of HdrHistogram's `HistogramLogWriter` (V2 deflate
//! histograms, base64), so the logs of several load generators can be combined ([`merge`],
//! `kiln-loadtest merge a.hlog b.hlog`) or read by HdrHistogram's own tools.
//!
//! Interval timestamps are absolute (seconds since the Unix epoch, no `BaseTime`), so logs of
//! generators that ran at the same time line up by wall clock; seconds without OK answers are
//! written as empty intervals, so throughput counts them. Errors are not in the log. Values
//! are microseconds: HdrHistogram's Java `HistogramLogProcessor` assumes nanoseconds, so give
//! it `-outputValueUnitRatio 1000` for milliseconds.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use serde::{Deserialize, Serialize};

use crate::record::{decode_histogram, latency_histogram};
use crate::report::{Latency, Report, fmt_us};

/// Seconds in a year: the Java reader's threshold for timestamps relative to `StartTime`.
const YEAR_S: f64 = 365.25 * 24.0 * 3600.0;

/// The interval log of `reports`: one interval per second of each run.
pub fn interval_log(reports: &[Report]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.add_comment("kiln-loadtest: OK latency in microseconds, one interval per second");
    if let Some(first) = reports.first() {
        builder.add_comment(&format!(
            "model {} at {}",
            first.target.model, first.target.url
        ));
        builder.with_start_time(first.started());
    }
    let mut writer = builder.begin_log_with(&mut out, &mut serializer)?;
    let empty = latency_histogram();
    for r in reports {
        for s in &r.series {
            let hist = match &s.ok_hist {
                Some(encoded) => decode_histogram(encoded)?,
                None => empty.clone(),
            };
            let start = Duration::from_secs_f64(r.started_unix_s + s.second as f64);
            writer
                .write_histogram(&hist, start, Duration::from_secs(1), None)
                .map_err(|e| anyhow::anyhow!("writing an interval: {e}"))?;
        }
    }
    Ok(out)
}

/// Combined results of several interval logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// The logs read.
    pub files: Vec<String>,
    /// Intervals read.
    pub intervals: usize,
    /// First interval start, seconds since the Unix epoch.
    pub start_unix_s: f64,
    /// From the first interval start to the last interval end, seconds.
    pub window_s: f64,
    /// OK answers over all logs.
    pub count: u64,
    /// `count / window_s`.
    pub throughput_rps: f64,
    /// OK latency over all logs, µs.
    pub latency_us: Option<Latency>,
    /// Per wall-clock second from the first one: OK answers of every log together.
    pub series: Vec<MergedSecond>,
}

/// One second of [`Merged::series`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedSecond {
    /// Seconds since the first one.
    pub second: u64,
    /// OK answers.
    pub count: u64,
    /// Median OK latency, µs.
    pub ok_p50_us: Option<u64>,
    /// 99th percentile OK latency, µs.
    pub ok_p99_us: Option<u64>,
}

/// One interval: absolute start (s since epoch), length (s), histogram.
type Interval = (f64, f64, Histogram<u64>);

/// Reads the intervals of one log, with absolute start times.
pub fn read_log(text: &[u8]) -> anyhow::Result<Vec<Interval>> {
    let (mut base, mut start_time) = (None, None);
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text) {
        match entry.map_err(|e| anyhow::anyhow!("malformed interval log: {e:?}"))? {
            LogEntry::BaseTime(t) => base = Some(t.as_secs_f64()),
            LogEntry::StartTime(t) => start_time = Some(t.as_secs_f64()),
            LogEntry::Interval(i) => {
                let ts = i.start_timestamp().as_secs_f64();
                let absolute = match (base, start_time) {
                    (Some(b), _) => b + ts,
                    (None, Some(s)) if ts < s - YEAR_S => s + ts,
                    _ => ts,
                };
                let hist = decode_histogram(i.encoded_histogram())?;
                out.push((absolute, i.duration().as_secs_f64(), hist));
            }
        }
    }
    Ok(out)
}

/// Merges named logs (`(name, contents)`).
pub fn merge(logs: &[(String, Vec<u8>)]) -> anyhow::Result<Merged> {
    let mut intervals = Vec::new();
    for (name, text) in logs {
        intervals.extend(read_log(text).with_context(|| format!("reading {name}"))?);
    }
    anyhow::ensure!(!intervals.is_empty(), "no intervals in the logs");
    let start = intervals.iter().map(|i| i.0).fold(f64::MAX, f64::min);
    let end = intervals.iter().map(|i| i.0 + i.1).fold(f64::MIN, f64::max);
    let mut total = latency_histogram();
    let mut by_second: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for (at, _, hist) in &intervals {
        total.add(hist).expect("auto-resizing histograms merge");
        let second = (at - start + 1e-6).floor().max(0.0) as u64;
        by_second
            .entry(second)
            .or_insert_with(latency_histogram)
            .add(hist)
            .expect("auto-resizing histograms merge");
    }
    let last = by_second.keys().next_back().copied().unwrap_or(0);
    let series = (0..=last)
        .map(|second| {
            let h = by_second.get(&second);
            let q = |q: f64| h.filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q));
            MergedSecond {
                second,
                count: h.map_or(0, Histogram::len),
                ok_p50_us: q(0.5),
                ok_p99_us: q(0.99),
            }
        })
        .collect();
    let window_s = ((end - start) * 1e3).round() / 1e3;
    Ok(Merged {
        files: logs.iter().map(|(name, _)| name.clone()).collect(),
        intervals: intervals.len(),
        start_unix_s: (start * 1e3).round() / 1e3,
        window_s,
        count: total.len(),
        throughput_rps: if window_s > 0.0 {
            ((total.len() as f64 / window_s) * 1e3).round() / 1e3
        } else {
            0.0
        },
        latency_us: Latency::of(&total),
        series,
    })
}

impl fmt::Display for Merged {
    /// A summary table like a run's.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "merged      {} ({} intervals)",
            self.files.join(", "),
            self.intervals
        )?;
        writeln!(
            f,
            "window      {:.2}s from {}",
            self.window_s,
            humantime::format_rfc3339_seconds(
                std::time::SystemTime::UNIX_EPOCH + Duration::from_secs_f64(self.start_unix_s)
            )
        )?;
        writeln!(
            f,
            "throughput  {:.1} req/s OK ({} OK answers)",
            self.throughput_rps, self.count
        )?;
        writeln!(f)?;
        let heads = ["p50", "p90", "p95", "p99", "p99.9", "p99.99", "max", "mean"];
        write!(f, "{:<20}", "latency")?;
        for h in heads {
            write!(f, " {h:>9}")?;
        }
        writeln!(f)?;
        match &self.latency_us {
            Some(l) => {
                write!(f, "{:<20}", "OK")?;
                let values = [l.p50, l.p90, l.p95, l.p99, l.p99_9, l.p99_99, l.max];
                for v in values.into_iter().chain([l.mean.round() as u64]) {
                    write!(f, " {:>9}", fmt_us(v))?;
                }
                writeln!(f)?;
            }
            None => writeln!(f, "{:<20} no OK answers", "OK")?,
        }
        writeln!(f)?;
        writeln!(f, "{:<9} {:>9} {:>9} {:>9}", "second", "OK/s", "p50", "p99")?;
        for s in &self.series {
            let p = |v: Option<u64>| v.map_or("-".into(), fmt_us);
            writeln!(
                f,
                "{:<9} {:>9} {:>9} {:>9}",
                s.second,
                s.count,
                p(s.ok_p50_us),
                p(s.ok_p99_us)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::report as sample;

    #[test]
    fn log_has_one_interval_per_second_and_reads_back() {
        let r = sample(3);
        let log = interval_log(std::slice::from_ref(&r)).unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.starts_with("#kiln-loadtest: OK latency"), "{text}");
        assert!(text.contains("#[StartTime: "), "{text}");
        let intervals = read_log(&log).unwrap();
        assert_eq!(intervals.len(), 3);
        for (i, (at, len, hist)) in intervals.iter().enumerate() {
            assert!((at - (r.started_unix_s + i as f64)).abs() < 1e-3);
            assert_eq!(*len, 1.0);
            assert_eq!(hist.len(), 100);
        }
    }

    #[test]
    fn merging_two_generators_adds_counts_and_keeps_percentiles() {
        let a = sample(3);
        let mut b = sample(3);
        b.started_unix_s = a.started_unix_s + 1.0; // started a second later
        let logs = vec![
            (
                "a".to_string(),
                interval_log(std::slice::from_ref(&a)).unwrap(),
            ),
            ("b".to_string(), interval_log(&[b]).unwrap()),
        ];
        let merged = merge(&logs).unwrap();
        assert_eq!(merged.intervals, 6);
        assert_eq!(merged.count, 600);
        assert_eq!(merged.window_s, 4.0);
        assert_eq!(merged.throughput_rps, 150.0);
        let counts: Vec<u64> = merged.series.iter().map(|s| s.count).collect();
        assert_eq!(counts, [100, 200, 200, 100]);
        let l = merged.latency_us.as_ref().unwrap();
        let single = a.latency_us.as_ref().unwrap();
        assert_eq!((l.p50, l.p99, l.max), (single.p50, single.p99, single.max));
        let text = merged.to_string();
        assert!(text.contains("150.0 req/s"), "{text}");
        let json = serde_json::to_string(&merged).unwrap();
        assert_eq!(serde_json::from_str::<Merged>(&json).unwrap(), merged);
    }

    #[test]
    fn base_time_logs_and_bad_input() {
        let mut h = latency_histogram();
        h.record(1_000).unwrap();
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let base = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut writer = IntervalLogWriterBuilder::new()
            .with_base_time(base)
            .begin_log_with(&mut out, &mut serializer)
            .unwrap();
        writer
            .write_histogram(&h, Duration::from_secs(5), Duration::from_secs(1), None)
            .unwrap();
        let read = read_log(&out).unwrap();
        assert_eq!(read[0].0, 1_700_000_005.0);
        assert!(merge(&[("x".into(), b"garbage,1,2\n".to_vec())]).is_err());
        assert!(merge(&[("empty".into(), b"#only a comment\n".to_vec())]).is_err());
    }
}
