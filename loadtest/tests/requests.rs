//! What requests carry, against an in-process fake server (`y = 2x`): several weighted models
//! in one run, input data from files, output validation and input drift.

mod fake;

use std::time::Duration;

use kiln_loadtest::mix::parse_models;
use kiln_loadtest::{LoadConfig, LoadMode, Report, RunConfig, TargetConfig};

fn config(url: String, requests: u64) -> RunConfig {
    RunConfig {
        target: TargetConfig {
            url,
            model: "a".into(),
            ..TargetConfig::default()
        },
        load: LoadConfig {
            mode: LoadMode::Closed { concurrency: 2 },
            connections: 2,
            warmup: Duration::ZERO,
            duration: None,
            requests: Some(requests),
            ..LoadConfig::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_models_split_the_requests() {
    let server = fake::Fake::default().serve().await;
    let mut run = config(server.addr.to_string(), 800);
    run.target.models = parse_models(&["a:3,b:1"]).unwrap();
    let report: Report = kiln_loadtest::run(&run).await.unwrap();
    assert_eq!(report.sent, 800);
    assert_eq!(report.errors, 0);
    let models = &report.extras.models;
    assert_eq!(models.len(), 2);
    assert_eq!(models["a"].sent + models["b"].sent, 800);
    assert_eq!(models["a"].weight, 3);
    let share = models["b"].sent as f64 / 800.0;
    assert!((0.2..0.3).contains(&share), "{share}");
    let calls = server.fake.calls();
    assert_eq!(
        calls["a"], models["a"].sent,
        "the server saw the same split"
    );
    assert_eq!(calls["b"], models["b"].sent);
    assert!(models["a"].latency_us.is_some());
    let back: Report = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(back, report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_input_data_is_sent_and_validated() {
    let server = fake::Fake::default().keep_inputs().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    // y = 2x: rows 0 and 1 expect the truth, row 2 expects a wrong value.
    std::fs::write(
        &data,
        r#"{"data": [{"x": [1, 2, 3, 4]}, {"x": {"content": [[5, 6], [7, 8]], "shape": [4]}},
                     {"x": [0, 0, 0, 1]}],
           "validation_data": [{"y": [2, 4, 6, 8]}, {"y": [10, 12, 14, 16]}, {"y": [0, 0, 0, 3]}]}"#,
    )
    .unwrap();
    let mut run = config(server.addr.to_string(), 30);
    run.load.mode = LoadMode::Closed { concurrency: 1 };
    run.target.input_data = Some(data);
    run.target.validate = Some(1e-5);
    let report = kiln_loadtest::run(&run).await.unwrap();
    assert_eq!(report.ok, 30);
    assert_eq!(
        report.extras.validation_failed,
        Some(10),
        "row 2, every third request"
    );
    let a = &report.extras.models["a"];
    assert_eq!(a.validation_failed, 10);
    assert!(
        a.mismatch
            .as_deref()
            .unwrap()
            .contains("y[3]: got 2, expected 3")
    );
    let inputs = server.fake.inputs();
    assert_eq!(
        &inputs[..12],
        [1., 2., 3., 4., 5., 6., 7., 8., 0., 0., 0., 1.]
    );
    let mut table = String::new();
    report.extras.write_table(&mut table).unwrap();
    assert!(table.contains("VALIDATION_FAILED"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npy_and_csv_rows_are_batched_in_order() {
    use kiln_loadtest::inputs::npy;
    let server = fake::Fake::default().keep_inputs().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let values: Vec<f64> = (0..12).map(f64::from).collect();
    std::fs::write(&x, npy::write(&[3, 4], &values, false)).unwrap();
    let y = dir.path().join("y.npy");
    let doubled: Vec<f64> = values.iter().map(|v| 2.0 * v).collect();
    std::fs::write(&y, npy::write(&[3, 4], &doubled, true)).unwrap();
    let mut run = config(server.addr.to_string(), 2);
    run.load.mode = LoadMode::Closed { concurrency: 1 };
    run.target.batch_size = 2;
    run.target.input_data = Some(x);
    run.target.expected = Some(y);
    run.target.validate = Some(0.0);
    let report = kiln_loadtest::run(&run).await.unwrap();
    assert_eq!(report.ok, 2);
    assert_eq!(report.extras.validation_failed, Some(0), "{report:?}");
    // Rows 0, 1, then 2 and (wrapping) 0.
    let sent = server.fake.inputs();
    let rows: Vec<f64> = [0, 1, 2, 0]
        .iter()
        .flat_map(|r| values[r * 4..r * 4 + 4].to_vec())
        .collect();
    assert_eq!(sent, rows.iter().map(|v| *v as f32).collect::<Vec<_>>());

    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "a,b,c\n1,2,3\n").unwrap();
    run.target.input_data = Some(csv);
    run.target.expected = None;
    run.target.validate = None;
    let err = kiln_loadtest::run(&run).await.unwrap_err();
    assert!(format!("{err:#}").contains("input x: 3 values"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_moves_float_inputs() {
    let server = fake::Fake::default().keep_inputs().serve().await;
    let mut run = config(server.addr.to_string(), 20);
    // Complete at once: every measured value is x + 10 with x in [0, 1).
    run.target.drift = Some("shift=10,over=0s".parse().unwrap());
    let report = kiln_loadtest::run(&run).await.unwrap();
    assert_eq!(report.ok, 20);
    let inputs = server.fake.inputs();
    assert_eq!(inputs.len(), 20 * fake::FEATURES);
    assert!(
        inputs.iter().all(|v| (10.0..11.0).contains(v)),
        "{inputs:?}"
    );
    assert_eq!(report.extras.drift.as_ref().unwrap().shift, 10.0);

    // Not started yet over a long ramp: (almost) no drift.
    let server = fake::Fake::default().keep_inputs().serve().await;
    let mut run = config(server.addr.to_string(), 20);
    run.target.drift = Some("shift=10,over=1h".parse().unwrap());
    kiln_loadtest::run(&run).await.unwrap();
    assert!(server.fake.inputs().iter().all(|v| (0.0..1.01).contains(v)));
}
