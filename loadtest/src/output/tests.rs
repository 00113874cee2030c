//! A synthetic report shared by the output tests, and tests of the table and the grouping.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use crate::client_cpu::ClientCpu;
use crate::config::{LoadConfig, LoadMode, RunConfig, TargetConfig};
use crate::output::intervals;
use crate::record::{Recorder, Sample};
use crate::report::Report;
use crate::server_stats::ServerStats;
use crate::target::ModelPlan;

/// A closed-loop run of `seconds` seconds, concurrency 4, batch 2: per second 100 OK answers
/// taking 1..=100 ms and 10 RESOURCE_EXHAUSTED ones ("queue full") taking 1 ms; server stats
/// present; the load generator used 30 % of 2 CPUs.
pub(crate) fn report(seconds: u64) -> Report {
    let origin = Instant::now();
    let mut rec = Recorder::new(origin);
    let ms = Duration::from_millis;
    for s in 0..seconds {
        let base = origin + Duration::from_secs(s);
        for i in 1..=100 {
            let start = base + ms(i);
            let done = start + ms(i);
            rec.record(Sample {
                start,
                done: done.min(base + ms(999)),
                code: Code::Ok,
            });
        }
        for i in 0..10 {
            let start = base + ms(500 + i);
            let code = Code::ResourceExhausted;
            rec.record(Sample {
                start,
                done: start + ms(1),
                code,
            });
            rec.note_message(code, "queue full");
        }
    }
    let config = RunConfig {
        target: TargetConfig {
            url: "127.0.0.1:8001".into(),
            model: "digits".into(),
            batch_size: 2,
            timeout: Some(Duration::from_millis(500)),
            ..TargetConfig::default()
        },
        load: LoadConfig {
            mode: LoadMode::Closed { concurrency: 4 },
            connections: 2,
            duration: Some(Duration::from_secs(seconds)),
            ..LoadConfig::default()
        },
    };
    let mut report = Report::new(
        &config,
        &ModelPlan::default(),
        &rec,
        Duration::from_secs(seconds),
    );
    report.server = Some(ServerStats {
        requests: 110 * seconds,
        failed: 0,
        inferences: 220 * seconds,
        executions: 55 * seconds,
        avg_batch_size: 4.0,
        request_us: 30_000.0,
        queue_us: 20_000.0,
        compute_input_us: 100.0,
        compute_infer_us: 9_000.0,
        compute_output_us: 50.0,
    });
    report.client_cpu = Some(ClientCpu::of(
        Duration::from_millis(600 * seconds),
        Duration::from_secs(seconds),
        2,
        110 * seconds,
    ));
    report
}

#[test]
fn table_shows_tail_percentiles_statuses_per_second_and_the_server() {
    let r = report(3);
    let text = r.to_string();
    println!("{text}");
    for needle in [
        "p95",
        "p99.99",
        "RESOURCE_EXHAUSTED: queue full",
        "avg batch 4.00",
        "queue 20.00ms",
        "infer 9.00ms",
        "OK/s",
        "RESOURCE_EXHAUSTED/s",
        "client CPU  5.46ms per request, 30% of 2 CPUs",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    assert!(!text.contains("short of CPU"), "{text}");
    let per_second: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("second"))
        .skip(1)
        .collect();
    assert_eq!(per_second.len(), 3, "{text}");
    assert!(per_second[0].starts_with("0 "), "{text}");
    assert!(per_second[0].contains("100.0"), "{text}");
    assert!(per_second[0].contains("10.0"), "{text}");
}

#[test]
fn table_warns_when_the_load_generator_was_short_of_cpu() {
    let mut r = report(1);
    r.client_cpu = Some(ClientCpu::of(
        Duration::from_millis(950),
        Duration::from_secs(1),
        1,
        100_000,
    ));
    let text = r.to_string();
    assert!(
        text.contains("client CPU  10µs per request, 95% of 1 CPU\n"),
        "{text}"
    );
    assert!(
        text.contains("WARNING     the load generator was short of CPU"),
        "{text}"
    );
}

#[test]
fn long_series_are_grouped_with_merged_percentiles() {
    let r = report(7);
    let rows = intervals(&r, 3);
    let spans: Vec<_> = rows.iter().map(|i| (i.from, i.to)).collect();
    assert_eq!(spans, [(0, 3), (3, 6), (6, 7)]);
    assert_eq!(rows[0].count("OK"), 300);
    assert_eq!(rows[0].count("RESOURCE_EXHAUSTED"), 30);
    let hist = r.ok_histogram().unwrap();
    // Every second has the same distribution, so merged percentiles equal the whole run's.
    assert_eq!(rows[0].ok_p99_us, Some(hist.value_at_quantile(0.99)));
    assert_eq!(rows[2].ok_p50_us, r.series[6].ok_p50_us);

    let mut old = r.clone();
    for s in &mut old.series {
        s.ok_hist = None;
    }
    let rows = intervals(&old, 3);
    assert_eq!(
        rows[0].ok_p99_us,
        r.series[..3].iter().filter_map(|s| s.ok_p99_us).max()
    );
    assert!(intervals(&report(0), 30).is_empty());
}

#[test]
fn reports_round_trip_and_older_json_still_loads() {
    let r = report(2);
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
    assert!(r.started_unix_s > 1.6e9, "{}", r.started_unix_s);
    let mut value: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let object = value.as_object_mut().unwrap();
    for added in ["started_unix_s", "latency_hist", "server", "client_cpu"] {
        object.remove(added);
    }
    object["latency_us"].as_object_mut().unwrap().remove("p95");
    let old: Report = serde_json::from_value(value).unwrap();
    assert_eq!(old.server, None);
    assert_eq!(old.client_cpu, None);
    assert_eq!(old.latency_us.unwrap().p95, 0);
}
