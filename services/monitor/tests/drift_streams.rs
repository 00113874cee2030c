//! CI guard for `bench/drift/streams.py` (docs/MONITORING.md, "Drift detection accuracy"): a
//! small scripted stream through the report's judge (`telemetry::report::judge_profiles`), the
//! code path of `DriftReport`. Reference 1000 rows; windows of 500 rows; 10 N(0, 1) features
//! and 2 few-valued ones (0..3 with shares 0.4 / 0.3 / 0.2 / 0.1, judged by chi-square).
//!
//! The data are seeded; KLL compaction is not, so the bounds leave margin.

use kiln_proto::kiln::v1::DriftReportResponse;
use kiln_telemetry::profile::{ModelProfile, ProfileSchema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NUMERIC: usize = 10;
const FEATURES: usize = NUMERIC + 2;
const SHARES: [f64; 4] = [0.4, 0.3, 0.2, 0.1];
const SWAPPED: [f64; 4] = [0.1, 0.3, 0.2, 0.4];

/// How a window departs from the reference distribution.
#[derive(Clone, Copy)]
enum Drift {
    None,
    /// +0.5 std on features 0 and 1.
    Shift,
    /// Categories 0 and 3 of feature 10 trade shares.
    Swap,
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn category(rng: &mut StdRng, shares: &[f64; 4]) -> f64 {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, s) in shares.iter().enumerate() {
        acc += s;
        if u < acc {
            return i as f64;
        }
    }
    3.0
}

fn window(rng: &mut StdRng, rows: usize, drift: Drift) -> ModelProfile {
    let mut p = ModelProfile::new("m", "1", &ProfileSchema::numeric("x", FEATURES)).unwrap();
    let mut row = [0.0; FEATURES];
    for _ in 0..rows {
        for (i, x) in row.iter_mut().enumerate() {
            *x = match (i, drift) {
                (0 | 1, Drift::Shift) => normal(rng) + 0.5,
                (NUMERIC, Drift::Swap) => category(rng, &SWAPPED),
                (i, _) if i < NUMERIC => normal(rng),
                _ => category(rng, &SHARES),
            };
        }
        p.observe_row(&row).unwrap();
    }
    p
}

fn judge(reference: &ModelProfile, live: &ModelProfile) -> DriftReportResponse {
    let r = kiln_monitor::telemetry::report::judge_profiles(reference, live);
    assert_eq!(r.reason, "");
    r
}

/// Features the Benjamini–Hochberg correction rejects.
fn flagged(r: &DriftReportResponse) -> Vec<u32> {
    r.features
        .iter()
        .filter(|f| f.p_value_adjusted >= 0.0 && f.p_value_adjusted <= 0.05)
        .map(|f| f.index)
        .collect()
}

#[test]
fn undrifted_windows_rarely_alarm() {
    let mut rng = StdRng::seed_from_u64(21);
    let reference = window(&mut rng, 1000, Drift::None);
    let reports: Vec<_> = (0..40)
        .map(|_| judge(&reference, &window(&mut rng, 500, Drift::None)))
        .collect();
    let tests: Vec<&str> = reports[0]
        .features
        .iter()
        .map(|f| f.test.as_str())
        .collect();
    assert_eq!(tests[..NUMERIC], ["ks"; NUMERIC]);
    assert_eq!(tests[NUMERIC..], ["chisquare"; 2]);
    let alarms = reports.iter().filter(|r| !flagged(r).is_empty()).count();
    println!("windows with a BH rejection: {alarms}/40");
    // Under the global null BH keeps the family-wise rate at 5 %: 2 of 40 expected,
    // P(≥ 9) < 1e-3 at that rate.
    assert!(alarms <= 8, "{alarms} of 40 undrifted windows alarmed");
    assert!(reports.iter().all(|r| !r.drifted));
}

#[test]
fn a_shift_and_a_swap_are_detected_in_the_first_window() {
    let mut rng = StdRng::seed_from_u64(22);
    let reference = window(&mut rng, 1000, Drift::None);
    let r = judge(&reference, &window(&mut rng, 500, Drift::Shift));
    let f = flagged(&r);
    assert!(f.contains(&0) && f.contains(&1), "flagged {f:?}: {r:?}");
    assert!(f.len() <= 4, "flagged {f:?}");
    assert!(!r.drifted);
    let r = judge(&reference, &window(&mut rng, 500, Drift::Swap));
    let f = flagged(&r);
    assert!(f.contains(&(NUMERIC as u32)), "flagged {f:?}: {r:?}");
    assert!(f.len() <= 3, "flagged {f:?}");
    assert!(!r.drifted);
}
