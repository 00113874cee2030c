//! The binary against an in-process fake server: a rate sweep writes one report per level
//! (the plan JSON), and a single level keeps the plain report.

mod fake;

use kiln_loadtest::Report;
use kiln_loadtest::plan::PlanOutcome;

async fn binary(args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln-loadtest"))
        .args(args)
        .args([
            "--progress",
            "off",
            "--warmup",
            "0",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (out, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_sweep_writes_one_report_per_level() {
    let server = fake::Fake::default().serve().await;
    let url = server.addr.to_string();
    let common = ["--url", &url, "--model", "m", "--duration", "0.5"];

    let (out, json) = binary(&[&common[..], &["--rate", "20,40"]].concat()).await;
    let plan: PlanOutcome = serde_json::from_value(json).unwrap();
    assert_eq!(plan.schema, "kiln-loadtest-plan/v1");
    let intended: Vec<u64> = plan.runs.iter().map(|r| r.intended).collect();
    assert_eq!(intended, [10, 20]);
    assert!(plan.runs.iter().all(|r| r.errors == 0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("throughput").count(), 2, "{stdout}");

    let (_, json) = binary(&[&common[..], &["--concurrency", "2"]].concat()).await;
    let report: Report = serde_json::from_value(json).unwrap();
    assert_eq!(report.schema, "kiln-loadtest/v1");
    assert!(report.ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_slo_search_reports_every_probe_and_the_answer() {
    let server = fake::Fake::default().serve().await;
    let url = server.addr.to_string();
    let args = ["--url", &url, "--model", "m", "--duration", "0.3"];
    let search = ["--slo", "p99=1s", "--rate-range", "50,200"];
    let (out, json) = binary(&[&args[..], &search[..]].concat()).await;
    let plan: PlanOutcome = serde_json::from_value(json).unwrap();
    let slo = plan.slo.unwrap();
    let rates: Vec<f64> = slo.probes.iter().map(|p| p.rate).collect();
    assert_eq!(rates, [50.0, 100.0, 200.0], "doubling up to hi");
    assert_eq!(slo.best_rate, Some(200.0));
    assert_eq!(plan.runs.len(), 3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("answer      200.0 req/s meets p99=1s"),
        "{stdout}"
    );
}
