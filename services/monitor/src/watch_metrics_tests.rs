use kiln_proto::kiln::v1::DriftReportResponse;

use super::*;
use crate::watch::{Alert, AlertKind, SloStatus};

/// A collector over a fixed snapshot (the loop itself is not needed to test the encoding).
#[derive(Debug)]
struct Fixed(Snapshot);

impl Collector for Fixed {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.0, encoder)
    }
}

fn scrape(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(snapshot)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

fn feature(index: u32, test: &str, score: f64, drifted: bool, psi: f64) -> FeatureDrift {
    FeatureDrift {
        index,
        name: format!("input[{index}]"),
        test: test.into(),
        score,
        threshold: 0.05,
        drifted,
        psi,
        ..Default::default()
    }
}

fn health(version: &str, drift: DriftReportResponse) -> VersionHealth {
    VersionHealth {
        model: "digits".into(),
        version: version.into(),
        traffic_weight: 100,
        serving: true,
        window_start_unix_ms: 1_700_000_000_000,
        drift,
        slo: SloStatus {
            requests: 200,
            errors: 2,
            p99_ms: 12.5,
            p50_ms: 2.0,
            error_rate: 0.01,
            judged: true,
            breached: true,
        },
        consecutive_drifted: 3,
        consecutive_good: 0,
    }
}

fn drifted_report() -> DriftReportResponse {
    DriftReportResponse {
        model: "digits".into(),
        version: "1".into(),
        features: vec![
            feature(0, "ks", 0.001, true, 0.4),
            feature(1, "chisquare", 0.5, false, 0.01),
            // Not judged: not exported.
            FeatureDrift {
                index: 2,
                name: "input[2]".into(),
                ..Default::default()
            },
        ],
        drifted: true,
        drifted_features: 1,
        drift_share: 0.5,
        sample_count: 400,
        outlier_rate: 0.25,
        outlier_count: 100,
        scored_rows: 400,
        ..Default::default()
    }
}

#[test]
fn exports_the_judged_window_of_each_version_and_firing_alerts() {
    let unjudged = DriftReportResponse {
        reason: "too few live samples".into(),
        outlier_rate: -1.0,
        ..Default::default()
    };
    let text = scrape(Snapshot {
        evaluated_unix_ms: 1_700_000_012_500,
        window_ms: 10_000,
        versions: vec![health("1", drifted_report()), health("2", unjudged)],
        firing: vec![Alert {
            kind: AlertKind::DataDrift,
            model: "digits".into(),
            version: "1".into(),
            summary: "drift".into(),
            starts_at_unix_ms: 1,
        }],
        events: vec![],
    });
    let has = |line: &str| {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        )
    };
    has("kiln_watch_last_evaluation_timestamp_seconds 1700000012.5");
    has("kiln_watch_window_seconds 10.0");
    has("# TYPE kiln_drift_feature_score gauge");
    has(
        r#"kiln_drift_feature_score{model="digits",version="1",feature="input[0]",test="ks"} 0.001"#,
    );
    has(
        r#"kiln_drift_feature_drifted{model="digits",version="1",feature="input[0]",test="ks"} 1.0"#,
    );
    has(
        r#"kiln_drift_feature_drifted{model="digits",version="1",feature="input[1]",test="chisquare"} 0.0"#,
    );
    has(r#"kiln_drift_feature_psi{model="digits",version="1",feature="input[0]",test="ks"} 0.4"#);
    has(r#"kiln_drift_dataset_drifted{model="digits",version="1"} 1.0"#);
    has(r#"kiln_drift_share{model="digits",version="1"} 0.5"#);
    has(r#"kiln_drift_consecutive_windows{model="digits",version="1"} 3.0"#);
    has(r#"kiln_outlier_ratio{model="digits",version="1"} 0.25"#);
    has(r#"kiln_slo_window_p99_seconds{model="digits",version="1"} 0.0125"#);
    has(r#"kiln_slo_window_error_ratio{model="digits",version="1"} 0.01"#);
    has(r#"kiln_slo_breached{model="digits",version="2"} 1.0"#);
    has(
        r#"kiln_alerts_firing{alertname="KilnDataDrift",severity="warning",model="digits",version="1"} 1"#,
    );
    assert!(
        !text.contains("input[2]"),
        "unjudged feature exported:\n{text}"
    );
    // Version 2's report judged nothing: no drift or outlier verdict for it.
    for name in [
        "kiln_drift_dataset_drifted",
        "kiln_drift_share",
        "kiln_outlier_ratio",
    ] {
        assert!(
            !text.contains(&format!(r#"{name}{{model="digits",version="2"}}"#)),
            "{name} exported for an unjudged window:\n{text}"
        );
    }
}

#[test]
fn versions_not_in_the_snapshot_are_not_exported() {
    let text = scrape(Snapshot::default());
    assert!(!text.contains("digits"), "{text}");
    assert!(!text.contains("kiln_watch_last_evaluation"), "{text}");
    // The families are still described, so dashboards see their help text.
    assert!(text.contains("# TYPE kiln_drift_share gauge"), "{text}");
    // A version deployed but never judged yet (window 0) has no series either.
    let mut fresh = health("3", drifted_report());
    fresh.window_start_unix_ms = 0;
    let text = scrape(Snapshot {
        evaluated_unix_ms: 5,
        versions: vec![fresh],
        ..Snapshot::default()
    });
    assert!(!text.contains("version=\"3\""), "{text}");
}
