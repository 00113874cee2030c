//! A self-contained HTML report (`--html FILE`): no scripts, no external resources, so it
//! opens offline and can be attached to a ticket. Per run: the configuration, the summary
//! table, and three inline SVG charts: OK latency p50/p99 per second, answers per second by
//! status (and not sent), and the OK latency distribution by percentile (log scale to
//! 99.999%). Several runs (a sweep) get an overview first: OK p50/p99 against throughput.

use std::fmt::Write as _;

use crate::config::LoadMode;
use crate::output::svg::{Chart, Series, escape, integer_ticks, line_chart};
use crate::output::{Interval, intervals};
use crate::record::OK;
use crate::report::{Report, fmt_us};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:60em;color:#222}\
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}\
table{border-collapse:collapse}td{padding:2px 12px 2px 0;vertical-align:top}\
td:first-child{color:#666}section{margin-bottom:3em}";

/// The HTML page of `reports` (one section per run).
pub fn page(reports: &[Report]) -> String {
    let title = match reports.first() {
        Some(r) => format!("kiln-loadtest: {}", r.target.model),
        None => "kiln-loadtest".into(),
    };
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    if reports.len() > 1 {
        html.push_str("<section><h2>All runs</h2>\n");
        html.push_str(&latency_vs_throughput(reports));
        html.push_str("</section>\n");
    }
    for (i, r) in reports.iter().enumerate() {
        section(&mut html, i, reports.len(), r);
    }
    html.push_str("</body></html>\n");
    html
}

fn mode(r: &Report) -> String {
    match r.load.mode {
        LoadMode::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
        LoadMode::Open {
            rate,
            max_in_flight,
        } => format!("open loop, {rate} req/s (max in flight {max_in_flight})"),
    }
}

fn section(html: &mut String, i: usize, runs: usize, r: &Report) {
    let heading = if runs > 1 {
        format!("Run {}: {}", i + 1, mode(r))
    } else {
        mode(r)
    };
    let _ = writeln!(html, "<section><h2>{}</h2>", escape(&heading));
    config_table(html, r);
    let _ = writeln!(
        html,
        "<h3>Summary</h3><pre>{}</pre>",
        escape(&r.to_string())
    );
    let rows = intervals(r, usize::MAX);
    html.push_str(&latency_over_time(&rows));
    html.push_str(&throughput_over_time(&rows));
    if let Some(chart) = distribution(r) {
        html.push_str(&chart);
    }
    html.push_str("</section>\n");
}

fn config_table(html: &mut String, r: &Report) {
    let t = &r.target;
    let inputs: Vec<String> = t
        .inputs
        .iter()
        .map(|i| format!("{} {} {:?}", i.name, i.datatype, i.shape))
        .collect();
    let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s}s"));
    let rows = [
        ("server", t.url.clone()),
        (
            "model",
            format!("{} (version {:?})", t.model, t.model_version),
        ),
        (
            "batch size",
            format!("{} (max {})", t.batch_size, t.max_batch_size),
        ),
        ("inputs", inputs.join(", ")),
        ("load", mode(r)),
        ("connections", r.load.connections.to_string()),
        ("warm-up", format!("{}s", r.load.warmup_s)),
        ("duration", secs(r.load.duration_s)),
        (
            "requests",
            r.load.requests.map_or("-".into(), |n| n.to_string()),
        ),
        (
            "timeout",
            t.timeout_ms.map_or("-".into(), |ms| format!("{ms}ms")),
        ),
        ("request pool", format!("{} (seed {})", t.pool_size, t.seed)),
        (
            "started",
            humantime::format_rfc3339_seconds(r.started()).to_string(),
        ),
    ];
    html.push_str("<h3>Configuration</h3><table>\n");
    for (k, v) in rows {
        let _ = writeln!(html, "<tr><td>{k}</td><td>{}</td></tr>", escape(&v));
    }
    html.push_str("</table>\n");
}

/// Whole-second ticks over the rows.
fn second_ticks(rows: &[Interval]) -> Option<Vec<(f64, String)>> {
    let last = rows.last().map_or(0, |i| i.from);
    Some(integer_ticks(0.0, last as f64))
}

fn latency_over_time(rows: &[Interval]) -> String {
    let line = |name: &str, f: fn(&Interval) -> Option<u64>| Series {
        name: name.into(),
        points: rows
            .iter()
            .filter_map(|i| f(i).map(|us| (i.from as f64, us as f64)))
            .collect(),
    };
    line_chart(&Chart {
        title: "OK latency per second",
        x_label: "second of the measured window",
        series: vec![line("p50", |i| i.ok_p50_us), line("p99", |i| i.ok_p99_us)],
        x_ticks: second_ticks(rows),
        y_format: &|us| fmt_us(us.round() as u64),
    })
}

fn throughput_over_time(rows: &[Interval]) -> String {
    let mut names: Vec<String> = rows.iter().flat_map(|i| i.counts.keys().cloned()).collect();
    names.sort_by_key(|n| (n != OK, n.clone()));
    names.dedup();
    let mut series: Vec<Series> = names
        .iter()
        .map(|name| Series {
            name: name.clone(),
            points: rows
                .iter()
                .map(|i| (i.from as f64, i.count(name) as f64))
                .collect(),
        })
        .collect();
    if rows.iter().any(|i| i.not_sent > 0) {
        series.push(Series {
            name: "not sent".into(),
            points: rows
                .iter()
                .map(|i| (i.from as f64, i.not_sent as f64))
                .collect(),
        });
    }
    line_chart(&Chart {
        title: "Answers per second by status",
        x_label: "second of the measured window",
        series,
        x_ticks: second_ticks(rows),
        y_format: &|n| format!("{n}"),
    })
}

/// OK p50/p99 against throughput, one point per run (perf_analyzer's latency-vs-throughput
/// view of a sweep).
fn latency_vs_throughput(reports: &[Report]) -> String {
    let mut runs: Vec<&Report> = reports.iter().filter(|r| r.latency_us.is_some()).collect();
    runs.sort_by(|a, b| a.inferences_per_s.total_cmp(&b.inferences_per_s));
    let line = |name: &str, f: fn(&crate::report::Latency) -> u64| Series {
        name: name.into(),
        points: runs
            .iter()
            .filter_map(|r| Some((r.inferences_per_s, f(r.latency_us.as_ref()?) as f64)))
            .collect(),
    };
    line_chart(&Chart {
        title: "OK latency against throughput, one point per run",
        x_label: "inferences per second",
        series: vec![line("p50", |l| l.p50), line("p99", |l| l.p99)],
        x_ticks: None,
        y_format: &|us| fmt_us(us.round() as u64),
    })
}

/// Percentile `1 - 10^-x` as a label (`x = 2` → `99%`).
fn percentile_label(x: u32) -> String {
    match x {
        0 => "0%".into(),
        _ => format!("{}%", 100.0 - 100.0 / 10f64.powi(x as i32)),
    }
}

fn distribution(r: &Report) -> Option<String> {
    let hist = r.ok_histogram()?;
    let nines = ((hist.len() as f64).log10().ceil() as u32).clamp(1, 5);
    const STEPS: u32 = 200;
    let points = (0..=STEPS)
        .map(|i| {
            let x = f64::from(nines) * f64::from(i) / f64::from(STEPS);
            let q = 1.0 - 10f64.powf(-x);
            (x, hist.value_at_quantile(q) as f64)
        })
        .collect();
    let ticks = (0..=nines)
        .map(|x| (f64::from(x), percentile_label(x)))
        .collect();
    Some(line_chart(&Chart {
        title: "OK latency by percentile",
        x_label: "percentile",
        series: vec![Series {
            name: "latency".into(),
            points,
        }],
        x_ticks: Some(ticks),
        y_format: &|us| fmt_us(us.round() as u64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::report as sample;

    #[test]
    fn percentile_labels() {
        let labels: Vec<String> = (0..=4).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn page_is_self_contained_with_three_charts_per_run() {
        let mut first = sample(3);
        first.target.model = "digits<&>".into();
        let second = sample(2);
        let html = page(&[first, second]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert_eq!(
            html.matches("<svg").count(),
            7,
            "3 charts × 2 runs and the overview"
        );
        assert_eq!(html.matches("<section>").count(), 3);
        assert!(html.contains("All runs"));
        assert!(html.contains("digits&lt;&amp;&gt;"));
        assert!(!html.contains("digits<&>"));
        for offline in ["<script", "http://cdn", "https://", "<link", "src="] {
            assert!(!html.contains(offline), "{offline} in the page");
        }
        for needle in [
            "Run 1: closed loop",
            "RESOURCE_EXHAUSTED",
            "99.9%",
            "p99.99",
        ] {
            assert!(html.contains(needle), "{needle} missing");
        }
    }

    #[test]
    fn runs_without_ok_answers_skip_the_distribution() {
        let mut r = sample(1);
        r.latency_hist = None;
        assert_eq!(page(&[r]).matches("<svg").count(), 2);
    }
}
