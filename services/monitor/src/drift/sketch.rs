//! Evidently's default drift rule fed from mergeable profiles (KLL sketches, moments, category
//! counts) instead of raw samples: what the monitor computes for `DriftReport`.
//!
//! Per numeric feature (reference sketch R with n1 values, live sketch C with n2):
//! - Support points: the union of both sketches' quantile grids (`GRID` = 1000 quantiles at
//!   `(i + 0.5) / GRID`, plus the exact min and max). Every grid quantile is a retained item, so
//!   with few distinct values the points are those values; `n_values` (for the test choice) is
//!   the number of distinct points.
//! - KS (reference ≤ 1000 rows, > 5 values): statistic `D = max |F_R(x) - F_C(x)|` over the
//!   points, p-value [`ks::ks_p_value`]`(n1, n2, D)`. **Approximate**: every sketch CDF value is
//!   within the KLL rank error ε (k = 200: ε ≈ 1.33 %, usually far less) of the exact one, so
//!   `|D - D_exact| ≤ 2ε` and the p-value is that of a statistic within 2ε of SciPy's.
//! - Wasserstein / std (reference > 1000 rows): W1 between the two 1000-quantile grids (equal
//!   weights) divided by `max(std_ref, 0.001)` (population std from the exact moments). The grid
//!   discretisation and the rank error bound the error by the distribution's spread within ε
//!   (and 1/GRID) in rank.
//! - ≤ 5 distinct values: counts per point from CDF differences (exact when the sketch still
//!   holds every value, rank error ε otherwise), then chi-square / z / Jensen–Shannon on counts.
//!   A value that one sketch holds with at most 2ε of its mass and the other not at all is
//!   treated as compaction noise and left out (KLL may drop a value seen once or twice), so a
//!   genuinely new value with a share ≤ 2ε does not count as drift here.
//! - PSI on reference deciles: edges = reference quantiles 0.1..0.9 (deduplicated), shares from
//!   CDF differences, Evidently's empty-bin filling.
//!
//! Categorical features compare exact category counts (tracked labels plus the "other" bucket)
//! with [`rule::categorical_feature_drift`] and [`stats::psi_counts`].

use kiln_telemetry::profile::{CategoryLabel, FeatureKind, FeatureProfile};

use super::rule::{self, FeatureDrift, StatTest};
use super::{DriftError, ks, stats};

/// Quantiles per sketch on the grid.
pub const GRID: usize = 1000;

/// A feature's verdict with its extra scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SketchDrift {
    /// Evidently's default-rule verdict.
    pub verdict: FeatureDrift,
    /// The p-value when the test is a p-value test (KS, chi-square, z).
    pub p_value: Option<f64>,
    /// PSI on reference deciles.
    pub psi: f64,
}

/// Default-rule drift of one feature from the reference and live profiles.
pub fn feature_drift(
    reference: &FeatureProfile,
    live: &FeatureProfile,
) -> Result<SketchDrift, DriftError> {
    if reference.kind() != live.kind() {
        return Err(DriftError::LengthMismatch);
    }
    if reference.count() == 0 || live.count() == 0 {
        return Err(DriftError::Empty);
    }
    let out = match reference.kind() {
        FeatureKind::Numeric => numeric(reference, live)?,
        FeatureKind::Categorical => categorical(reference, live)?,
    };
    Ok(out)
}

fn is_p_value(test: StatTest) -> bool {
    matches!(test, StatTest::Ks | StatTest::ChiSquare | StatTest::Z)
}

fn grid(f: &FeatureProfile) -> Vec<f64> {
    (0..GRID)
        .filter_map(|i| f.quantile((i as f64 + 0.5) / GRID as f64))
        .collect()
}

fn rank_error(f: &FeatureProfile) -> f64 {
    f.sketch().map_or(0.0, |s| s.rank_error())
}

fn cdf(f: &FeatureProfile, x: f64) -> f64 {
    f.cdf(x).unwrap_or(0.0)
}

/// Counts per support point from CDF differences, rounded, summing to `n`.
fn point_counts(f: &FeatureProfile, points: &[f64]) -> Vec<u64> {
    let n = f.count() as f64;
    let mut prev = 0.0;
    points
        .iter()
        .map(|&x| {
            let c = cdf(f, x);
            let k = ((c - prev).max(0.0) * n).round() as u64;
            prev = c;
            k
        })
        .collect()
}

fn numeric(r: &FeatureProfile, c: &FeatureProfile) -> Result<SketchDrift, DriftError> {
    let (qr, qc) = (grid(r), grid(c));
    let mut points: Vec<f64> = qr.iter().chain(&qc).copied().collect();
    points.extend(
        [
            r.quantile(0.0),
            r.quantile(1.0),
            c.quantile(0.0),
            c.quantile(1.0),
        ]
        .into_iter()
        .flatten(),
    );
    if points.iter().any(|x| !x.is_finite()) {
        return Err(DriftError::NonFinite);
    }
    points.sort_by(f64::total_cmp);
    points.dedup();
    let (n1, n2) = (r.count(), c.count());
    let mut counts = None;
    let mut n_values = points.len();
    if n_values <= 5 {
        // Few values: count them. A point both sketches give no mass is a rounding artefact; a
        // point one sketch gives no mass and the other at most 2ε of its mass is compaction
        // noise (a rare value the other sketch dropped), not a new category: both are left out.
        let eps = 2.0 * rank_error(r).max(rank_error(c));
        let (rc, cc): (Vec<u64>, Vec<u64>) = point_counts(r, &points)
            .into_iter()
            .zip(point_counts(c, &points))
            .filter(|&(a, b)| {
                let noise = (a == 0 && (b as f64) <= eps * n2 as f64)
                    || (b == 0 && (a as f64) <= eps * n1 as f64);
                (a > 0 || b > 0) && !noise
            })
            .unzip();
        n_values = rc.len();
        counts = Some((rc, cc));
    }
    let test = rule::default_stattest(rule::FeatureKind::Numerical, n1 as usize, n_values);
    let score = match test {
        StatTest::Ks => {
            let d = points
                .iter()
                .map(|&x| (cdf(r, x) - cdf(c, x)).abs())
                .fold(0.0, f64::max);
            ks::ks_p_value(n1, n2, d).p_value
        }
        StatTest::Wasserstein => {
            let w = |q: &[f64]| q.iter().map(|&x| (x, 1.0)).collect::<Vec<_>>();
            let d = stats::wasserstein_weighted(&w(&qr), &w(&qc))?;
            let std = r.moments().std_dev().unwrap_or(0.0);
            d / std.max(0.001)
        }
        StatTest::ChiSquare | StatTest::Z | StatTest::JensenShannon => {
            let (rc, cc) = counts.ok_or(DriftError::Empty)?;
            match test {
                StatTest::ChiSquare => stats::chi_square(&rc, &cc)?.p_value,
                StatTest::Z => stats::z_test(&rc, &cc)?,
                _ => stats::jensen_shannon_counts(&rc, &cc)?,
            }
        }
    };
    let mut edges: Vec<f64> = (1..10)
        .filter_map(|k| r.quantile(k as f64 / 10.0))
        .collect();
    edges.dedup();
    let shares = |f: &FeatureProfile| {
        let mut prev = 0.0;
        let mut out: Vec<f64> = edges
            .iter()
            .map(|&e| {
                let v = cdf(f, e);
                let s = (v - prev).max(0.0);
                prev = v;
                s
            })
            .collect();
        out.push((1.0 - prev).max(0.0));
        out
    };
    let psi = stats::psi_shares(&shares(r), &shares(c))?;
    if score.is_nan() {
        return Err(DriftError::Empty);
    }
    Ok(SketchDrift {
        verdict: verdict(test, score),
        p_value: is_p_value(test).then_some(score),
        psi,
    })
}

fn verdict(test: StatTest, score: f64) -> FeatureDrift {
    let threshold = test.default_threshold();
    FeatureDrift {
        test,
        score,
        threshold,
        drifted: test.drifted(score, threshold),
    }
}

fn categorical(r: &FeatureProfile, c: &FeatureProfile) -> Result<SketchDrift, DriftError> {
    let (Some(rc), Some(cc)) = (r.categories(), c.categories()) else {
        return Err(DriftError::Empty);
    };
    let mut labels: Vec<CategoryLabel> = rc
        .counts()
        .into_iter()
        .chain(cc.counts())
        .map(|(l, _)| l)
        .collect();
    labels.sort();
    labels.dedup();
    let mut ref_counts: Vec<u64> = labels.iter().map(|l| rc.get(l)).collect();
    let mut cur_counts: Vec<u64> = labels.iter().map(|l| cc.get(l)).collect();
    if rc.other() > 0 || cc.other() > 0 {
        ref_counts.push(rc.other());
        cur_counts.push(cc.other());
    }
    let v = rule::categorical_feature_drift(&ref_counts, &cur_counts)?;
    if v.score.is_nan() {
        return Err(DriftError::Empty);
    }
    let psi = stats::psi_counts(&ref_counts, &cur_counts)?;
    Ok(SketchDrift {
        verdict: v,
        p_value: is_p_value(v.test).then_some(v.score),
        psi,
    })
}

#[cfg(test)]
mod tests {
    use kiln_telemetry::profile::SketchConfig;

    use super::*;

    fn numeric_profile(values: impl IntoIterator<Item = f64>) -> FeatureProfile {
        let mut f =
            FeatureProfile::new("x", FeatureKind::Numeric, &SketchConfig::default()).unwrap();
        values.into_iter().for_each(|v| f.observe(v));
        f
    }

    /// With samples small enough for the sketch to keep every value, KS matches SciPy's.
    #[test]
    fn small_samples_match_the_exact_ks() {
        let a: Vec<f64> = (0..150).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..120)
            .map(|i| (i as f64 * 0.53).cos() * 0.9 + 0.1)
            .collect();
        let exact = rule::numeric_feature_drift(&a, &b).unwrap();
        let got = feature_drift(&numeric_profile(a), &numeric_profile(b)).unwrap();
        assert_eq!(got.verdict.test, StatTest::Ks);
        assert!(
            (got.verdict.score - exact.score).abs() < 1e-9,
            "{got:?} vs {exact:?}"
        );
    }

    #[test]
    fn few_values_use_count_tests() {
        let a = (0..600).map(|i| (i % 3) as f64);
        let b = (0..600).map(|i| if i % 2 == 0 { 0.0 } else { 2.0 });
        let got = feature_drift(&numeric_profile(a), &numeric_profile(b)).unwrap();
        assert_eq!(got.verdict.test, StatTest::ChiSquare);
        assert!(got.verdict.drifted);
        assert!(got.psi > 0.25);
    }

    #[test]
    fn identical_few_valued_samples_do_not_drift() {
        let a = || (0..700).map(|i| (i % 4) as f64);
        let got = feature_drift(&numeric_profile(a()), &numeric_profile(a())).unwrap();
        assert_eq!(got.verdict.test, StatTest::ChiSquare);
        assert_eq!(got.verdict.score, 1.0);
        assert!(!got.verdict.drifted);
        let zeros = || (0..300).map(|_| 0.0);
        let got = feature_drift(&numeric_profile(zeros()), &numeric_profile(zeros())).unwrap();
        assert_eq!(got.verdict.test, StatTest::Z);
        assert!(!got.verdict.drifted);
    }

    #[test]
    fn large_references_use_wasserstein() {
        let a = (0..5000).map(|i| (i % 100) as f64);
        let b = (0..3000).map(|i| (i % 100) as f64 + 20.0);
        let got = feature_drift(&numeric_profile(a), &numeric_profile(b)).unwrap();
        assert_eq!(got.verdict.test, StatTest::Wasserstein);
        // W1 = 20, std ≈ 28.9.
        assert!((got.verdict.score - 20.0 / 28.866).abs() < 0.02, "{got:?}");
        assert!(got.verdict.drifted);
    }
}
