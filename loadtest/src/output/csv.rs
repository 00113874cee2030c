//! perf_analyzer's CSV (`perf_analyzer -f FILE --verbose-csv`, `ReportWriter::GenerateReport`
//! in triton-inference-server/perf_analyzer), one row per run, so spreadsheets and scripts made
//! for perf_analyzer read kiln-loadtest's results.
//!
//! Columns, all times in whole microseconds as perf_analyzer writes them:
//! `Concurrency` (closed loop) or `Request Rate` (open loop), `Inferences/Second`,
//! `Client Send`, then, when every run has server statistics, `Network+Server Send/Recv`,
//! `Server Queue`, `Server Compute Input`, `Server Compute Infer`, `Server Compute Output`,
//! then `Client Recv`, `p50 latency`, `p90 latency`, `p95 latency`, `p99 latency`,
//! `Avg latency`, `request/response`, `response wait`. Rows are sorted by increasing
//! Inferences/Second, as perf_analyzer does.
//!
//! kiln-loadtest does not time (un)marshalling apart from the call: `Client Send`,
//! `Client Recv` and `request/response` are 0 and `response wait` is the whole average
//! latency. `Network+Server Send/Recv` is, as in perf_analyzer, the average latency minus the
//! server's queue and compute time, floored at 0. Latencies are of OK answers.

use std::fmt::Write as _;

use crate::config::LoadMode;
use crate::report::Report;

/// The server-side columns, written when every run has server statistics.
pub const SERVER_COLUMNS: [&str; 5] = [
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
];

/// A float as C++'s `ostream <<` writes it by default (`%g`, 6 significant digits).
pub fn fmt_g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x.is_finite() {
            "0".into()
        } else {
            x.to_string()
        };
    }
    let sci = format!("{x:.5e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("integer exponent");
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-5..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa.to_string()), exp.abs())
    } else {
        let decimals = (5 - exp).max(0) as usize;
        trim(format!("{x:.decimals$}"))
    }
}

/// The CSV of `reports`: a header and one row per report (empty input: empty string).
pub fn perf_analyzer_csv(reports: &[Report]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let server = reports.iter().all(|r| r.server.is_some());
    let mut header = vec![match first.load.mode {
        LoadMode::Closed { .. } => "Concurrency",
        LoadMode::Open { .. } => "Request Rate",
    }];
    header.extend(["Inferences/Second", "Client Send"]);
    if server {
        header.extend(SERVER_COLUMNS);
    }
    header.extend(["Client Recv", "p50 latency", "p90 latency", "p95 latency"]);
    header.extend([
        "p99 latency",
        "Avg latency",
        "request/response",
        "response wait",
    ]);
    let mut out = header.join(",") + "\n";
    let mut sorted: Vec<&Report> = reports.iter().collect();
    sorted.sort_by(|a, b| a.inferences_per_s.total_cmp(&b.inferences_per_s));
    for r in sorted {
        writeln!(out, "{}", row(r, server).join(",")).expect("writing to a String");
    }
    out
}

fn row(r: &Report, server: bool) -> Vec<String> {
    let level = match r.load.mode {
        LoadMode::Closed { concurrency } => concurrency.to_string(),
        LoadMode::Open { rate, .. } => fmt_g(rate),
    };
    let l = r.latency_us.as_ref();
    let pick = |f: fn(&crate::report::Latency) -> u64| l.map_or(0, f).to_string();
    let avg_us = l.map_or(0.0, |l| l.mean);
    let mut cells = vec![level, fmt_g(r.inferences_per_s), "0".into()];
    if server && let Some(s) = &r.server {
        let whole = |us: f64| (us.max(0.0) as u64).to_string();
        cells.extend([
            whole(avg_us - s.accounted_us()),
            whole(s.queue_us),
            whole(s.compute_input_us),
            whole(s.compute_infer_us),
            whole(s.compute_output_us),
        ]);
    }
    cells.push("0".into());
    cells.extend([
        pick(|l| l.p50),
        pick(|l| l.p90),
        pick(|l| l.p95),
        pick(|l| l.p99),
    ]);
    let avg = (avg_us as u64).to_string();
    cells.extend([avg.clone(), "0".into(), avg]);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::report as sample;

    #[test]
    fn floats_print_like_cpp_streams() {
        assert_eq!(fmt_g(69.2), "69.2");
        assert_eq!(fmt_g(200.0), "200");
        assert_eq!(fmt_g(1234.5678), "1234.57");
        assert_eq!(fmt_g(0.000123), "0.000123");
        assert_eq!(fmt_g(1_234_567.0), "1.23457e+06");
        assert_eq!(fmt_g(999_999.7), "1e+06");
        assert_eq!(fmt_g(0.0), "0");
        assert_eq!(fmt_g(1e-7), "1e-07");
    }

    #[test]
    fn csv_has_perf_analyzer_columns_and_sorts_by_throughput() {
        let mut slow = sample(1);
        let fast = {
            let mut r = sample(1);
            r.inferences_per_s *= 2.0;
            r.load.mode = LoadMode::Closed { concurrency: 8 };
            r
        };
        slow.inferences_per_s = 200.0;
        let csv = perf_analyzer_csv(&[fast, slow.clone()]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
             Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,\
             p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,\
             response wait"
        );
        assert_eq!(lines.len(), 3);
        let cells: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cells.len(), 16);
        assert_eq!(&cells[..3], ["4", "200", "0"], "slower run first");
        assert!(lines[2].starts_with("8,400,"), "{csv}");
        let l = slow.latency_us.as_ref().unwrap();
        let s = slow.server.as_ref().unwrap();
        let network = (l.mean - s.accounted_us()) as u64;
        assert_eq!(cells[3], network.to_string());
        assert_eq!(&cells[4..8], ["20000", "100", "9000", "50"]);
        assert_eq!(cells[9], l.p50.to_string());
        assert_eq!(cells[11], l.p95.to_string());
        assert_eq!(cells[13], (l.mean as u64).to_string());
        assert_eq!(cells[14], "0");
        assert_eq!(cells[15], cells[13]);
    }

    #[test]
    fn open_loop_without_server_stats_drops_the_server_columns() {
        let mut r = sample(1);
        r.server = None;
        r.load.mode = LoadMode::Open {
            rate: 250.5,
            max_in_flight: 10,
        };
        let csv = perf_analyzer_csv(&[r]);
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("Request Rate,Inferences/Second,Client Send,Client Recv,"));
        assert!(!header.contains("Server Queue"));
        let row = lines.next().unwrap();
        assert!(row.starts_with("250.5,"), "{row}");
        assert_eq!(row.split(',').count(), header.split(',').count());
        assert_eq!(perf_analyzer_csv(&[]), "");
    }
}
