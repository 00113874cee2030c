//! End-to-end runs against a real worker started in-process (ephemeral ports, in-memory
//! coordinator) serving the digits demo model: closed and open loops through the library, and
//! the binary's JSON and `--assert` exit codes.

// The worker's own test fixture (digits package, in-memory coordinator, READY wait).
#[path = "../../services/worker/tests/common/mod.rs"]
mod worker_fixture;

use std::time::Duration;

use kiln_loadtest::target::InputPlan;
use kiln_loadtest::{LoadConfig, LoadMode, Report, RunConfig, TargetConfig};

/// Starts a worker with digits/1 assigned and waits until its replica is READY.
async fn digits_worker() -> kiln_worker::Running {
    worker_fixture::ready_worker(worker_fixture::config("w1"))
        .await
        .worker
}

fn run_config(url: String, mode: LoadMode, batch_size: usize) -> RunConfig {
    RunConfig {
        target: TargetConfig {
            url,
            model: "digits".into(),
            model_version: "1".into(),
            batch_size,
            ..TargetConfig::default()
        },
        load: LoadConfig {
            mode,
            connections: 2,
            warmup: Duration::from_millis(200),
            duration: Some(Duration::from_secs(1)),
            ..LoadConfig::default()
        },
    }
}

/// Invariants every report must satisfy.
fn assert_consistent(report: &Report) {
    assert_eq!(report.sent, report.ok + report.errors, "no lost requests");
    assert_eq!(report.intended, report.sent + report.not_sent);
    let by_status: u64 = report.statuses.values().map(|s| s.count).sum();
    assert_eq!(by_status, report.sent);
    let series: u64 = report.series.iter().flat_map(|s| s.counts.values()).sum();
    assert_eq!(series, report.sent, "the series accounts for every answer");
    for s in report.statuses.values() {
        assert!(s.latency_us.min > 0 && s.latency_us.min <= s.latency_us.p50);
        assert!(s.latency_us.p50 <= s.latency_us.p99 && s.latency_us.p99 <= s.latency_us.max);
    }
    let back: Report = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(&back, report, "JSON round-trips");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_open_and_timed_out_runs_against_a_real_worker() {
    let worker = digits_worker().await;
    let url = worker.grpc_addr.to_string();

    let closed = run_config(url.clone(), LoadMode::Closed { concurrency: 4 }, 2);
    let report = kiln_loadtest::run(&closed).await.unwrap();
    println!("{report}");
    assert_consistent(&report);
    assert!(report.ok > 0);
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.not_sent, 0);
    assert_eq!(report.measured_s, 1.0);
    assert_eq!(report.inferences_per_s, report.throughput_rps * 2.0);
    assert_eq!(report.target.max_batch_size, 64);
    let input = InputPlan {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![2, 64],
    };
    assert_eq!(report.target.inputs, [input]);

    let open = LoadMode::Open {
        rate: 200.0,
        max_in_flight: 10_000,
    };
    let report = kiln_loadtest::run(&run_config(url.clone(), open, 1))
        .await
        .unwrap();
    println!("{report}");
    assert_consistent(&report);
    assert_eq!(report.intended, 200, "the schedule fixes the count");
    assert_eq!(report.ok, 200, "{report}");
    assert!(report.send_lag_us.is_some());

    // A deadline no answer can meet: every request ends DEADLINE_EXCEEDED, none is lost.
    let mut hopeless = run_config(url.clone(), LoadMode::Closed { concurrency: 2 }, 1);
    hopeless.target.timeout = Some(Duration::from_nanos(1));
    hopeless.load.duration = Some(Duration::from_millis(300));
    let report = kiln_loadtest::run(&hopeless).await.unwrap();
    assert_consistent(&report);
    assert!(report.errors > 0);
    assert_eq!(report.ok, 0);
    assert_eq!(report.statuses["DEADLINE_EXCEEDED"].count, report.errors);

    let mut unknown = run_config(url, LoadMode::Closed { concurrency: 1 }, 1);
    unknown.target.model = "no-such-model".into();
    let err = kiln_loadtest::run(&unknown).await.unwrap_err();
    assert!(format!("{err:#}").contains("no-such-model"), "{err:#}");

    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_json_and_fails_unmet_assertions() {
    let worker = digits_worker().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let run = |assertions: &'static str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln-loadtest"))
            .args(["--url", &worker.grpc_addr.to_string(), "--model", "digits"])
            .args(["--concurrency", "2", "--requests", "40", "--warmup", "0"])
            .args(["--json", json.to_str().unwrap(), "--assert", assertions])
            .output()
    };

    let out = run("errors=0,p99<1h,sent=40").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("throughput"), "{stdout}");
    let report: Report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report.sent, 40);
    assert_eq!(report.ok, 40);

    let out = run("errors=0,rps>1e12").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED rps>1e12: got"), "{stdout}");
    assert!(!stdout.contains("FAILED errors"), "{stdout}");

    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_every_output_format_and_merges_logs() {
    let worker = digits_worker().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let bin = env!("CARGO_BIN_EXE_kiln-loadtest");
    let out = tokio::process::Command::new(bin)
        .args(["--url", &worker.grpc_addr.to_string(), "--model", "digits"])
        .args(["--concurrency", "2", "--duration", "2", "--warmup", "0.2"])
        .args([
            "--format",
            "ghz",
            "--progress",
            "lines",
            "--json",
            &path("r.json"),
        ])
        .args(["--csv", &path("r.csv"), "--html", &path("r.html")])
        .args(["--ghz-json", &path("g.json"), "--hist-log", &path("r.hlog")])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: Report = serde_json::from_slice(&std::fs::read(path("r.json")).unwrap()).unwrap();
    assert!(report.ok > 0 && report.errors == 0, "{report}");
    let ghz: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(ghz["count"], report.sent);
    assert_eq!(ghz["statusCodeDistribution"]["OK"], report.ok);
    assert_eq!(ghz["total"], 2_000_000_000u64);
    let ghz_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path("g.json")).unwrap()).unwrap();
    assert_eq!(ghz_file["count"], ghz["count"]);

    // The worker has ModelStatistics: the window's requests, one inference each.
    let server = report
        .server
        .as_ref()
        .expect("the worker reports statistics");
    let sent = report.sent as f64;
    let requests = server.requests as f64;
    assert!(
        requests >= sent * 0.9 && requests <= sent * 1.1 + 50.0,
        "{server:?} vs {sent}"
    );
    assert_eq!(server.inferences, server.requests);
    assert!(
        server.executions > 0 && server.avg_batch_size >= 1.0,
        "{server:?}"
    );
    assert!(server.compute_infer_us > 0.0, "{server:?}");
    // The generator measured its own CPU over the window: some, and at most all of its CPUs.
    let cpu = report.client_cpu.as_ref().expect("getrusage works here");
    assert!(
        cpu.cpu_s > 0.0 && cpu.us_per_request > 0.0 && cpu.cpus >= 1,
        "{cpu:?}"
    );
    assert!(cpu.utilization > 0.0 && cpu.utilization <= 1.05, "{cpu:?}");

    let csv = std::fs::read_to_string(path("r.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("Concurrency,Inferences/Second,Client Send,Network+Server"));
    assert!(lines[1].starts_with("2,"), "{csv}");
    let html = std::fs::read_to_string(path("r.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);

    let merged = tokio::process::Command::new(bin)
        .args([
            "merge",
            &path("r.hlog"),
            &path("r.hlog"),
            "--json",
            &path("m.json"),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path("m.json")).unwrap()).unwrap();
    assert_eq!(m["count"], 2 * report.ok, "the same log twice counts twice");
    assert!(String::from_utf8_lossy(&merged.stdout).contains("throughput"));

    // A sweep: one CSV row and one HTML section per level, the plan JSON on stdout.
    let sweep = tokio::process::Command::new(bin)
        .args(["--url", &worker.grpc_addr.to_string(), "--model", "digits"])
        .args(["--concurrency", "1,2", "--duration", "0.5", "--warmup", "0"])
        .args(["--format", "json", "--progress", "off"])
        .args(["--csv", &path("s.csv"), "--html", &path("s.html")])
        .output()
        .await
        .unwrap();
    assert!(
        sweep.status.success(),
        "{}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&sweep.stdout).unwrap();
    assert_eq!(plan["runs"].as_array().map(Vec::len), Some(2), "{plan}");
    let csv = std::fs::read_to_string(path("s.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let html = std::fs::read_to_string(path("s.html")).unwrap();
    assert_eq!(
        html.matches("<section>").count(),
        3,
        "overview and two runs"
    );

    worker.shutdown().await;
}
