//! `kiln drift` against a real in-process monitor: the reference profile of the digits package,
//! live profiles pushed by a fake worker, the report printed as a table.

use std::path::Path;
use std::sync::Arc;

use kiln::args::{DriftArgs, OutputFormat, ProfileArgs};
use kiln::commands::drift::{drift, drift_table, write_profile};
use kiln_coord::codec::{self, ModelVersionRecord};
use kiln_coord::{MemoryCoordinator, SharedCoordinator, keys};
use kiln_proto::kiln::v1 as pb;
use kiln_proto::kiln::v1::telemetry_client::TelemetryClient;

#[tokio::test]
async fn drift_reports_digits_traffic() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1");
    let dir = tempfile::tempdir().unwrap();
    for f in ["kiln.toml", "reference.csv"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let written = write_profile(&ProfileArgs {
        package: dir.path().to_path_buf(),
        input: None,
    })
    .unwrap();

    let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
    let monitor = kiln_monitor::start(kiln_monitor::Config::ephemeral(), coord.clone())
        .await
        .unwrap();
    let record = ModelVersionRecord {
        model: "digits".into(),
        version: "1".into(),
        package_uri: dir.path().display().to_string(),
        reference_profile_uri: written.path.display().to_string(),
        ..Default::default()
    };
    codec::put(
        coord.as_ref(),
        &keys::model_version("digits", "1"),
        &record,
        0,
    )
    .await
    .unwrap();

    // Live traffic: the reference rows themselves, pushed by one worker.
    let live = kiln_monitor::reference::load(&dir.path().join("reference.csv")).unwrap();
    let url = format!("http://{}", monitor.grpc_addr);
    let mut telemetry = TelemetryClient::connect(url.clone()).await.unwrap();
    telemetry
        .push_profile(pb::ProfileBatch {
            worker_id: "w0".into(),
            window_start_unix_ms: kiln_monitor::telemetry::report::now_ms(),
            profiles: vec![pb::ModelProfile::from(&live)],
            ..Default::default()
        })
        .await
        .unwrap();

    let mut admin = kiln::admin::connect(&url, &Default::default())
        .await
        .unwrap();
    let report = admin
        .drift_report(pb::DriftReportRequest {
            model: "digits".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.version, "1");
    assert_eq!(report.features.len(), 64);
    assert_eq!(report.drifted_features, 0, "{}", drift_table(&report));
    let table = drift_table(&report);
    assert!(table.contains("dataset drift: no"), "{table}");
    assert!(table.contains("input[63]"), "{table}");

    let args = DriftArgs {
        model: "digits".into(),
        version: Some("1".into()),
        window: 30,
        output: OutputFormat::Json,
    };
    drift(&mut admin, args).await.unwrap();
    monitor.shutdown().await;
}
