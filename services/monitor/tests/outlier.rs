//! Reference outlier models against NumPy / SciPy (`tests/fixtures/outlier/cases.json`, written
//! by `tests/fixtures/outlier/generate.py`), and on the digits demo package.
//!
//! Means, ridges, thresholds (chi-square quantiles) and squared Mahalanobis distances must agree
//! within 1e-6 (relative to magnitudes above 1); ranks exactly.

use std::path::{Path, PathBuf};

use kiln_monitor::reference::{self, outlier};
use kiln_proto::kiln::v1 as pb;
use kiln_telemetry::profile::{CoMoments, ModelProfile, OutlierModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL * want.abs().max(1.0)
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/outlier/cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read cases.json"))
        .expect("parse cases.json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

#[test]
fn models_and_distances_match_numpy() {
    let f = fixture();
    let tolerance = f["rank_tolerance"].as_f64().unwrap();
    let quantile = f["quantile"].as_f64().unwrap();
    let mut worst = 0.0f64;
    for c in f["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let rows = matrix(&c["rows"]);
        let p = rows[0].len();
        let mut acc = if c["diagonal"].as_bool().unwrap() {
            CoMoments::diagonal(p)
        } else {
            CoMoments::new(p)
        };
        rows.iter().for_each(|r| acc.add(r).unwrap());
        let config = outlier::OutlierConfig {
            quantile,
            ridge: c["ridge"].as_f64().unwrap(),
            rank_tolerance: tolerance,
        };
        let m = outlier::fit_with(&acc, &config).expect(name);
        assert_eq!(m.rank() as u64, c["rank"].as_u64().unwrap(), "{name}");
        assert_eq!(
            u64::from(m.degrees_of_freedom()),
            c["rank"].as_u64().unwrap()
        );
        for (got, want) in m.mean().iter().zip(floats(&c["mean"])) {
            assert!(close(*got, want), "{name}: mean {got} vs {want}");
        }
        let fit = m.fit();
        let want = c["threshold"].as_f64().unwrap();
        assert!(
            close(fit.threshold, want),
            "{name}: threshold {} vs {want}",
            fit.threshold
        );
        let want = c["ridge_lambda"].as_f64().unwrap();
        assert!(
            close(fit.ridge, want),
            "{name}: ridge {} vs {want}",
            fit.ridge
        );
        assert_eq!(fit.count, rows.len() as u64);
        // The wire form scores the same.
        let back = OutlierModel::try_from(&pb::OutlierModel::from(&m)).unwrap();
        assert_eq!(back, m);
        for (q, want) in matrix(&c["queries"]).iter().zip(floats(&c["d2"])) {
            let got = m.distance2(q).unwrap();
            worst = worst.max((got - want).abs() / want.abs().max(1.0));
            assert!(
                close(got, want),
                "{name}: d² {got} vs numpy {want} at {q:?}"
            );
        }
    }
    println!("largest d² difference (relative above 1): {worst:.3e}");
}

#[test]
fn thresholds_match_scipy_chi2_ppf() {
    let f = fixture();
    let mut worst = 0.0f64;
    for c in f["chi2_quantiles"].as_array().unwrap() {
        let (q, dof, want) = (
            c["q"].as_f64().unwrap(),
            c["dof"].as_u64().unwrap() as u32,
            c["x"].as_f64().unwrap(),
        );
        let got = outlier::chi_square_quantile(q, dof).unwrap();
        worst = worst.max((got - want).abs() / want.max(1.0));
        assert!(close(got, want), "chi2.ppf({q}, {dof}): {got} vs {want}");
    }
    println!("largest quantile difference (relative above 1): {worst:.3e}");
}

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1")
}

/// A 2-D little-endian float32 NPY array: (rows, cols, values).
fn read_npy_f32(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'<f4'") && header.contains("'fortran_order': False"));
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let values: Vec<f32> = bytes[10 + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(values.len(), shape[0] * shape[1]);
    (shape[0], shape[1], values)
}

fn rate(model: &OutlierModel, rows: usize, cols: usize, data: &[f32]) -> f64 {
    let mut live = ModelProfile::new(
        "digits",
        "1",
        &kiln_telemetry::profile::ProfileSchema::numeric("input", cols),
    )
    .unwrap();
    live.score_batch(model, rows, cols, data).unwrap();
    assert_eq!(live.scored_rows(), rows as u64);
    live.outlier_rate().unwrap()
}

/// The checked-in digits reference profile carries the outlier model `kiln profile` fits from
/// `reference.csv` today (regenerate with `cargo run -p kiln -- profile --package
/// models/digits/1` otherwise); held-out digits are rarely outliers, noised ones mostly are.
#[test]
fn digits_heldout_rows_are_rarely_outliers_and_noised_ones_mostly() {
    let dir = package();
    let checked_in = reference::load(&dir.join(reference::REFERENCE_PROFILE_FILE)).unwrap();
    let model = checked_in
        .outlier_model()
        .expect("models/digits/1/reference.profile.pb has an outlier model")
        .clone();
    let fresh = reference::build(&dir, &dir.join("reference.csv")).unwrap();
    let fresh = fresh.outlier_model().unwrap();
    assert_eq!((model.features(), model.rank()), (64, fresh.rank()));
    assert!(close(model.fit().threshold, fresh.fit().threshold));
    for (a, b) in model.mean().iter().zip(fresh.mean()) {
        assert!(
            close(*a, *b),
            "stale reference.profile.pb: re-run `kiln profile`"
        );
    }
    // Constant (always blank) pixels leave the rank below 64.
    assert!(
        model.rank() < 64 && model.rank() > 40,
        "rank {}",
        model.rank()
    );

    let (rows, cols, heldout) = read_npy_f32(&dir.join("../testdata/heldout.npy"));
    assert_eq!(cols, 64);
    let clean = rate(&model, rows, cols, &heldout);
    // Nominal 0.1 % for Gaussian data; digits have heavier tails (≈ 2 % measured).
    assert!(clean <= 0.05, "held-out outlier rate {clean}");

    // + N(0, 2²) per pixel (Box–Muller, fixed seed).
    let mut rng = StdRng::seed_from_u64(7);
    let noised: Vec<f32> = heldout
        .iter()
        .map(|v| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            v + (2.0 * z) as f32
        })
        .collect();
    let noisy = rate(&model, rows, cols, &noised);
    assert!(noisy >= 0.5, "noised outlier rate {noisy}");
    println!("digits outlier rate: held-out {clean:.4}, noised {noisy:.4} ({rows} rows)");
}

/// DriftReport adds up the scored and outlier rows of every pushed window in the look-back, and
/// says why there is no rate when nothing was scored.
#[test]
fn drift_report_carries_the_outlier_rate() {
    use kiln_monitor::telemetry::{ProfileStore, report};
    let store = ProfileStore::new(1000, 16, 8);
    let reference = reference::build(&package(), &package().join("reference.csv")).unwrap();
    let model = reference.outlier_model().unwrap().clone();
    let (rows, cols, heldout) = read_npy_f32(&package().join("../testdata/heldout.npy"));
    let schema = reference::schema_for(&kiln_model::Manifest::read(&package()).unwrap()).unwrap();
    let empty = ModelProfile::new("digits", "1", &schema).unwrap();
    let r = report::build(&store, "digits", "1", 60, Some(&reference)).unwrap();
    assert_eq!(r.outlier_rate, -1.0);
    assert!(!r.outlier_reason.is_empty());

    let now = report::now_ms();
    let half = rows / 2;
    let mut want = (0, 0);
    for (i, (start, n)) in [(0, half), (half, rows - half)].into_iter().enumerate() {
        let mut p = empty.clone();
        let data = &heldout[start * cols..(start + n) * cols];
        p.observe_batch(n, cols, data).unwrap();
        p.score_batch(&model, n, cols, data).unwrap();
        p.record_request(std::time::Duration::from_millis(1), true);
        want = (want.0 + p.scored_rows, want.1 + p.outlier_count);
        store.push(now - 1000 * (i as u64 + 1), &p).unwrap();
    }
    let r = report::build(&store, "digits", "1", 60, Some(&reference)).unwrap();
    assert_eq!((r.scored_rows, r.outlier_count), want);
    assert_eq!(r.scored_rows, rows as u64);
    assert!((r.outlier_rate - want.1 as f64 / want.0 as f64).abs() < 1e-12);
    assert!(r.outlier_reason.is_empty(), "{}", r.outlier_reason);

    // Live rows without scores (a worker that has no outlier model): no rate, and why.
    let mut p = empty.clone();
    p.observe_batch(rows, cols, &heldout).unwrap();
    p.record_request(std::time::Duration::from_millis(1), true);
    let other = ProfileStore::new(1000, 16, 8);
    other.push(now - 1000, &p).unwrap();
    let r = report::build(&other, "digits", "1", 60, Some(&reference)).unwrap();
    assert_eq!((r.outlier_rate, r.scored_rows), (-1.0, 0));
    assert!(
        r.outlier_reason.contains("no live row was scored"),
        "{}",
        r.outlier_reason
    );
}
