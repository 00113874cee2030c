//! Monte-Carlo check of the sketch-based KS rule (`drift::sketch`) through the report's judge
//! (`telemetry::report::judge_profiles`): on undrifted data the per-feature false-alarm rate
//! is the nominal 5 % (the sketches' rank error would otherwise inflate it), and a 0.5-std
//! mean shift with 200 live rows is still detected.
//!
//! The data are seeded; KLL compaction is not (the datasketches crate draws its own random
//! bits), so the bounds leave several standard deviations of margin for the trial counts used.

use kiln_proto::kiln::v1::DriftReportResponse;
use kiln_telemetry::profile::{ModelProfile, ProfileSchema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FEATURES: usize = 20;

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A worker's profile of `rows` rows of N(`shift`, 1) features.
fn profile(rng: &mut StdRng, rows: usize, shift: f64) -> ModelProfile {
    let mut p = ModelProfile::new("m", "1", &ProfileSchema::numeric("x", FEATURES)).unwrap();
    let mut row = vec![0.0; FEATURES];
    for _ in 0..rows {
        row.iter_mut().for_each(|x| *x = normal(rng) + shift);
        p.observe_row(&row).unwrap();
    }
    p
}

/// Judges `trials` live profiles (each the merge of `parts` worker profiles of `rows` rows)
/// against fresh 1000-row references; returns every report.
fn judge(
    seed: u64,
    trials: usize,
    parts: usize,
    rows: usize,
    shift: f64,
) -> Vec<DriftReportResponse> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..trials)
        .map(|_| {
            let reference = profile(&mut rng, 1000, 0.0);
            let mut live = profile(&mut rng, rows, shift);
            for _ in 1..parts {
                live.merge(&profile(&mut rng, rows, shift)).unwrap();
            }
            let r = kiln_monitor::telemetry::report::judge_profiles(&reference, &live);
            assert_eq!(r.reason, "");
            assert!(r.features.iter().all(|f| f.test == "ks"), "{r:?}");
            r
        })
        .collect()
}

/// Share of features with Evidently's (uncorrected) verdict `drifted`.
fn drifted_share(reports: &[DriftReportResponse]) -> f64 {
    let n: usize = reports.iter().map(|r| r.features.len()).sum();
    let d = reports
        .iter()
        .flat_map(|r| &r.features)
        .filter(|f| f.drifted)
        .count();
    d as f64 / n as f64
}

/// The telemetry test's setting (1000-row reference, 2 × 1000 live rows merged), 600
/// feature-trials: the nominal rate is 5 % (binomial σ ≈ 0.9 % at that count, so ≤ 7 % holds
/// with > 2σ margin even at exactly 5 %). With live sketches at k = 1024 the merged 2000 rows
/// are compacted (within 0.27 % in rank): 5.5-5.7 % here; on seeds 11-14 the sketch rule gave
/// 5.5 / 5.3 / 4.0 / 4.5 % where the exact KS on the same raw values gave 5.2 / 5.2 / 3.7 /
/// 4.2 % (a residual +0.2-0.3 points; windows of ≤ 1024 rows are exact). At k = 200: 5.0 %
/// and 3.8 % with the rank-error correction, 5.7 % without it (`n_eff = n`) where SciPy's exact
/// KS on the raw values gave 3.7 %.
#[test]
fn undrifted_features_alarm_at_the_nominal_rate() {
    let reports = judge(11, 30, 2, 1000, 0.0);
    let rate = drifted_share(&reports);
    let windows = reports
        .iter()
        .filter(|r| r.drifted_features_adjusted > 0)
        .count();
    println!("per-feature false-alarm rate {rate:.4}; reports with a BH rejection {windows}/30");
    assert!(rate <= 0.07, "false-alarm rate {rate}");
    assert!(
        rate >= 0.01,
        "false-alarm rate {rate}: the correction is far too conservative"
    );
    assert!(reports.iter().all(|r| !r.drifted));
}

/// A 0.5-std mean shift in 200 live rows (the fewest a report judges) against a 1000-row
/// reference, 200 feature-trials.
#[test]
fn a_half_std_shift_in_200_rows_is_detected() {
    let reports = judge(12, 10, 1, 200, 0.5);
    let power = drifted_share(&reports);
    println!("detection rate {power:.4}");
    assert!(power >= 0.9, "detection rate {power}");
    assert!(reports.iter().all(|r| r.drifted));
}
