//! The human summary table of a [`Report`] (its `Display`): target and load, counts,
//! throughput, OK latency percentiles up to p99.99, statuses with their first message, the
//! server's breakdown when it has statistics, the load generator's own CPU (with a warning when
//! it was short of it), and the per-second series (throughput by status
//! and OK p50/p99; long runs are grouped into at most [`SERIES_ROWS`] rows).

use std::fmt::{self, Write as _};

use crate::client_cpu::{ClientCpu, SATURATED};
use crate::config::LoadMode;
use crate::output::{Interval, intervals};
use crate::record::OK;
use crate::report::{LAG_WARNING_US, Report, fmt_us};
use crate::server_stats::ServerStats;

/// Most rows of the per-second section; longer runs show groups of seconds.
pub const SERIES_ROWS: usize = 30;

/// A latency in µs given as a float, with a readable unit.
fn fmt_us_f(us: f64) -> String {
    fmt_us(us.max(0.0).round() as u64)
}

impl fmt::Display for Report {
    /// The human summary table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        header(self, &mut out)?;
        warnings(self, &mut out)?;
        latency(self, &mut out)?;
        if let Some(server) = &self.server {
            server_section(self, server, &mut out)?;
        }
        if let Some(cpu) = &self.client_cpu {
            client_cpu(cpu, &mut out)?;
        }
        self.extras.write_table(&mut out)?;
        series(self, &mut out)?;
        f.write_str(&out)
    }
}

fn header(r: &Report, out: &mut String) -> fmt::Result {
    let t = &r.target;
    let version = if t.model_version.is_empty() {
        "default version".to_string()
    } else {
        format!("version {}", t.model_version)
    };
    let mode = match r.load.mode {
        LoadMode::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
        LoadMode::Open {
            rate,
            max_in_flight,
        } => format!("open loop, {rate} req/s, max in flight {max_in_flight}"),
    };
    writeln!(out, "target      {} ({version}) at {}", t.model, t.url)?;
    writeln!(
        out,
        "load        {mode}, {} connections, batch {}",
        r.load.connections, t.batch_size
    )?;
    writeln!(
        out,
        "measured    {:.2}s after {:.2}s warm-up",
        r.measured_s, r.load.warmup_s
    )?;
    writeln!(
        out,
        "requests    {} sent: {} ok, {} errors ({:.3}%), {} not sent",
        r.sent,
        r.ok,
        r.errors,
        r.error_rate * 100.0,
        r.not_sent
    )?;
    writeln!(
        out,
        "throughput  {:.1} req/s OK ({:.1} inferences/s)",
        r.throughput_rps, r.inferences_per_s
    )
}

fn warnings(r: &Report, out: &mut String) -> fmt::Result {
    if let Some(lag) = &r.send_lag_us {
        writeln!(
            out,
            "send lag    p50 {} p99 {} max {} (open loop: actual - due send time)",
            fmt_us(lag.p50),
            fmt_us(lag.p99),
            fmt_us(lag.max)
        )?;
        if lag.p99 > LAG_WARNING_US {
            writeln!(
                out,
                "WARNING     the client fell behind its schedule (send lag p99 > {}): latencies include it",
                fmt_us(LAG_WARNING_US)
            )?;
        }
    }
    if r.not_sent > 0 {
        writeln!(
            out,
            "WARNING     the client was saturated: {} requests not sent (raise --max-in-flight or lower --rate)",
            r.not_sent
        )?;
    }
    Ok(())
}

fn latency(r: &Report, out: &mut String) -> fmt::Result {
    writeln!(out)?;
    writeln!(
        out,
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency", "p50", "p90", "p95", "p99", "p99.9", "p99.99", "max", "mean"
    )?;
    match &r.latency_us {
        Some(l) => writeln!(
            out,
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            OK,
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p95),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.p99_99),
            fmt_us(l.max),
            fmt_us_f(l.mean)
        )?,
        None => writeln!(out, "{OK:<20} no OK answers")?,
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<20} {:>9} {:>9} {:>9} {:>9}",
        "status", "count", "per sec", "p50", "p99"
    )?;
    for (name, s) in &r.statuses {
        let rate = if r.measured_s > 0.0 {
            s.count as f64 / r.measured_s
        } else {
            0.0
        };
        writeln!(
            out,
            "{:<20} {:>9} {:>9.1} {:>9} {:>9}",
            name,
            s.count,
            rate,
            fmt_us(s.latency_us.p50),
            fmt_us(s.latency_us.p99)
        )?;
    }
    for (name, s) in &r.statuses {
        if let Some(message) = &s.message {
            writeln!(out, "{name}: {message}")?;
        }
    }
    Ok(())
}

fn server_section(r: &Report, s: &ServerStats, out: &mut String) -> fmt::Result {
    writeln!(out)?;
    writeln!(
        out,
        "server      {} requests ({} failed), {} inferences in {} executions (avg batch {:.2})",
        s.requests, s.failed, s.inferences, s.executions, s.avg_batch_size
    )?;
    writeln!(
        out,
        "server time {} per request: queue {}, compute input {}, infer {}, output {}",
        fmt_us_f(s.request_us),
        fmt_us_f(s.queue_us),
        fmt_us_f(s.compute_input_us),
        fmt_us_f(s.compute_infer_us),
        fmt_us_f(s.compute_output_us)
    )?;
    if let Some(l) = &r.latency_us {
        writeln!(
            out,
            "client      mean {} - server {} = {} network and client",
            fmt_us_f(l.mean),
            fmt_us_f(s.request_us),
            fmt_us_f(l.mean - s.request_us)
        )?;
    }
    Ok(())
}

fn client_cpu(c: &ClientCpu, out: &mut String) -> fmt::Result {
    let plural = if c.cpus == 1 { "" } else { "s" };
    writeln!(
        out,
        "client CPU  {} per request, {:.0}% of {} CPU{plural}",
        fmt_us_f(c.us_per_request),
        c.utilization * 100.0,
        c.cpus
    )?;
    if c.saturated() {
        writeln!(
            out,
            "WARNING     the load generator was short of CPU (>= {:.0}% busy): latencies include its own queueing; give it more CPUs or fewer callers",
            SATURATED * 100.0
        )?;
    }
    Ok(())
}

/// The non-OK statuses seen in `rows`, in name order.
fn error_names(rows: &[Interval]) -> Vec<String> {
    let mut names: Vec<String> = rows
        .iter()
        .flat_map(|i| i.counts.keys())
        .filter(|n| n.as_str() != OK)
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

fn series(r: &Report, out: &mut String) -> fmt::Result {
    let rows = intervals(r, SERIES_ROWS);
    if rows.is_empty() {
        return Ok(());
    }
    let errors = error_names(&rows);
    writeln!(out)?;
    write!(out, "{:<9} {:>9}", "second", "OK/s")?;
    for name in &errors {
        write!(
            out,
            " {:>w$}",
            format!("{name}/s"),
            w = name.len().max(7) + 2
        )?;
    }
    writeln!(out, " {:>10} {:>9} {:>9}", "not sent/s", "p50", "p99")?;
    for row in &rows {
        let secs = row.seconds() as f64;
        let label = if row.seconds() == 1 {
            row.from.to_string()
        } else {
            format!("{}-{}", row.from, row.to - 1)
        };
        let rate = |n: u64| n as f64 / secs;
        write!(out, "{label:<9} {:>9.1}", rate(row.count(OK)))?;
        for name in &errors {
            let w = name.len().max(7) + 2;
            write!(out, " {:>w$.1}", rate(row.count(name)))?;
        }
        let p = |v: Option<u64>| v.map_or("-".to_string(), fmt_us);
        writeln!(
            out,
            " {:>10.1} {:>9} {:>9}",
            rate(row.not_sent),
            p(row.ok_p50_us),
            p(row.ok_p99_us)
        )?;
    }
    Ok(())
}
