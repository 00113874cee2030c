//! Evidently's default drift rule fed from mergeable profiles (KLL sketches, moments, category
//! counts) instead of raw samples: what the monitor computes for `DriftReport`.
//!
//! Per numeric feature (reference sketch R with n1 values, live sketch C with n2), everything
//! is computed from the two sketches' distributions themselves: their retained items with
//! weights ([`QuantileSketch::weighted_items`]), merged on the union of their values (the
//! support points; `n_values`, for the test choice, is their number). A sketch that still holds
//! every value (n ≤ k: live windows up to [`DEFAULT_K`] = 1024 rows, references up to
//! [`REFERENCE_K`] = 8192 rows) is the sample itself, and then every statistic below is SciPy's
//! / Evidently's on the raw values (up to the `f32` rounding of the values, ~1e-7 relative).
//! - KS (reference ≤ 1000 rows, > 5 values): statistic `D = max |F_R(x) - F_C(x)|` over the
//!   points (exact for the sketches' step CDFs), p-value [`ks::ks_p_value`]`(n1_eff, n2_eff,
//!   D)` (SciPy's `ks_2samp` null, exact branch up to 10 000). An exact sketch has
//!   `n_eff = n`. A compacted sketch answers the CDF with a random rank error of standard
//!   deviation `σ ≈ ε / 2.576` (ε = KLL rank error at 99 %: 0.27 % at k = 1024), which adds to
//!   the empirical CDF's own variance `F(1 - F) / n ≤ 1 / (4n)`; the null is therefore taken at
//!   the effective size `1 / n_eff = 1 / n + 4σ²` (k = 1024: n = 2000 → 1982; 10 000 → 9 573;
//!   at most ≈ 224 000 however large n). Without it the noise in `D` biases it upwards and the
//!   false-alarm rate on undrifted data rises above SciPy's (measured at k = 200: 5.7 % vs
//!   3.7 %, 600 feature-trials; `tests/drift_false_alarms.rs`).
//! - Wasserstein / std (reference > 1000 rows): W1 between the two weighted item sets (SciPy's
//!   `wasserstein_distance` with weights: `∫ |F_R - F_C| dx` over the merged support) divided by
//!   `max(std_ref, 0.001)` (population std from the exact moments). A distance test has no
//!   p-value to absorb sketch noise, and noise biases W1 upwards (the distance of a perturbed
//!   distribution to another is on average larger); hence exact windows and references where
//!   affordable. Measured with a 5000-row reference and 500-row windows: a compacted live
//!   window (k = 200) flagged undrifted features 38–47 times per 100 windows where Evidently
//!   flagged 35–41; a compacted reference (k = 1024) still 37–47; both exact: identical
//!   verdicts (docs/MONITORING.md).
//! - ≤ 5 distinct values: the item weights per point are the counts (exact when the sketch
//!   holds every value, within ε of the mass otherwise), then chi-square / z / Jensen–Shannon.
//!   A value that one sketch holds with at most 2ε of its mass and the other, compacted, not at
//!   all is treated as compaction noise and left out (KLL may drop a value seen once or
//!   twice), so a genuinely new value with a share ≤ 2ε does not count as drift there.
//! - PSI on reference deciles: edges = reference quantiles 0.1..0.9 (deduplicated), shares from
//!   CDF differences, Evidently's empty-bin filling.
//!
//! Categorical features compare exact category counts (tracked labels plus the "other" bucket)
//! with [`rule::categorical_feature_drift`] and [`stats::psi_counts`].

use kiln_telemetry::profile::{CategoryLabel, FeatureKind, FeatureProfile};
#[cfg(doc)]
use kiln_telemetry::profile::{DEFAULT_K, QuantileSketch, REFERENCE_K};

use super::rule::{self, FeatureDrift, StatTest};
use super::{DriftError, ks, stats};

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

/// The sketch's distribution: distinct values ascending with their weights (summing to the
/// count); every value with count 1 while the sketch holds them all.
fn items(f: &FeatureProfile) -> Vec<(f64, u64)> {
    f.sketch().map(|s| s.weighted_items()).unwrap_or_default()
}

/// Whether the sketch has compacted (dropped values for weighted survivors).
fn compacted(f: &FeatureProfile) -> bool {
    f.sketch()
        .is_some_and(|s| (s.retained() as u64) < s.count())
}

/// Rank error of a compacted sketch (99 %); 0 while it holds every value.
fn rank_error(f: &FeatureProfile) -> f64 {
    match f.sketch() {
        Some(s) if compacted(f) => s.rank_error(),
        _ => 0.0,
    }
}

/// Normal quantile of the confidence behind [`QuantileSketch::rank_error`]: it bounds a rank
/// answer's error at 99 %, so the error's standard deviation is about `rank_error / Z99`.
///
/// [`QuantileSketch::rank_error`]: kiln_telemetry::profile::QuantileSketch::rank_error
const Z99: f64 = 2.576;

/// The sample size whose empirical CDF is as noisy as this sketch's CDF: the sketch answers
/// `F_n(x) + e(x)`, with the sampling variance `F(1 - F) / n ≤ 1 / (4n)` (the Brownian-bridge
/// variance the KS null is scaled by) and an independent rank error of standard deviation `σ`,
/// so `1 / n_eff = 1 / n + 4σ²`. A sketch still holding every value is exact: `n_eff = n`.
fn effective_n(f: &FeatureProfile) -> u64 {
    let n = f.count();
    let sigma = rank_error(f) / Z99;
    if sigma == 0.0 {
        return n;
    }
    let n_eff = 1.0 / (1.0 / n as f64 + 4.0 * sigma * sigma);
    (n_eff.round() as u64).clamp(1, n)
}

/// The CDF at strictly increasing `xs` (one sorted view; zeros when empty).
fn cdfs(f: &FeatureProfile, xs: &[f64]) -> Vec<f64> {
    f.cdfs(xs).unwrap_or_else(|| vec![0.0; xs.len()])
}

/// `max |F_R - F_C|` over the merged support of two aligned weight vectors.
fn ks_statistic(wr: &[u64], wc: &[u64]) -> f64 {
    let (tr, tc) = (wr.iter().sum::<u64>() as f64, wc.iter().sum::<u64>() as f64);
    let (mut cr, mut cc, mut d) = (0u64, 0u64, 0.0f64);
    for (a, b) in wr.iter().zip(wc) {
        cr += a;
        cc += b;
        d = d.max((cr as f64 / tr - cc as f64 / tc).abs());
    }
    d
}

fn numeric(r: &FeatureProfile, c: &FeatureProfile) -> Result<SketchDrift, DriftError> {
    let (ir, ic) = (items(r), items(c));
    if ir.is_empty() || ic.is_empty() {
        return Err(DriftError::Empty);
    }
    if ir.iter().chain(&ic).any(|p| !p.0.is_finite()) {
        return Err(DriftError::NonFinite);
    }
    let (n1, n2) = (r.count(), c.count());
    // Weights of both sketches on the union of their values (the support points).
    let (wr, wc) = stats::aligned_counts(&ir, &ic);
    let mut n_values = wr.len();
    let mut counts = None;
    if n_values <= 5 {
        // Few values: count them. A value one sketch holds and a compacted other lacks, with at
        // most 2ε of the holder's mass, is compaction noise (KLL may drop a value seen once or
        // twice), not a new category: it is left out.
        let (er, ec) = (2.0 * rank_error(r), 2.0 * rank_error(c));
        let (rc, cc): (Vec<u64>, Vec<u64>) = wr
            .iter()
            .zip(&wc)
            .map(|(&a, &b)| (a, b))
            .filter(|&(a, b)| {
                let noise = (a == 0 && (b as f64) <= er * n2 as f64)
                    || (b == 0 && (a as f64) <= ec * n1 as f64);
                !noise
            })
            .unzip();
        n_values = rc.len();
        counts = Some((rc, cc));
    }
    let test = rule::default_stattest(rule::FeatureKind::Numerical, n1 as usize, n_values);
    let score = match test {
        StatTest::Ks => {
            let d = ks_statistic(&wr, &wc);
            ks::ks_p_value(effective_n(r), effective_n(c), d).p_value
        }
        StatTest::Wasserstein => {
            let w = |s: &[(f64, u64)]| s.iter().map(|&(x, k)| (x, k as f64)).collect::<Vec<_>>();
            let d = stats::wasserstein_weighted(&w(&ir), &w(&ic))?;
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
    let deciles: Vec<f64> = (1..10).map(|k| k as f64 / 10.0).collect();
    let mut edges = r.quantiles(&deciles).unwrap_or_default();
    edges.dedup();
    let shares = |f: &FeatureProfile| {
        let mut prev = 0.0;
        let mut out: Vec<f64> = cdfs(f, &edges)
            .into_iter()
            .map(|v| {
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

    /// A reference profile as `kiln profile` builds it (`REFERENCE_K`).
    fn reference_profile(values: &[f64]) -> FeatureProfile {
        let config = SketchConfig {
            kll_k: kiln_telemetry::profile::REFERENCE_K,
            ..SketchConfig::default()
        };
        let mut f = FeatureProfile::new("x", FeatureKind::Numeric, &config).unwrap();
        values.iter().for_each(|&v| f.observe(v));
        f
    }

    /// `f32`-representable pseudo-normal values (the sketch stores `f32`).
    fn sample(n: usize, seed: f64, shift: f64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let u = ((i as f64 + seed) * 0.618_033_988_75).fract();
                let z = (u * 0.98 + 0.01).ln() * -0.5 + (i as f64 * 0.37 + seed).sin();
                f64::from((z + shift) as f32)
            })
            .collect()
    }

    /// Windows up to `DEFAULT_K` rows and references up to `REFERENCE_K` rows are held exactly,
    /// and then the sketch rule is Evidently's rule on the raw values: KS with a ≤ 1000-row
    /// reference, normed Wasserstein with a larger one.
    #[test]
    fn exact_sketches_give_the_raw_sample_verdicts() {
        for (ref_rows, live_rows, test) in [
            (1000, 1000, StatTest::Ks),
            (1000, 500, StatTest::Ks),
            (5000, 500, StatTest::Wasserstein),
            (8000, 1000, StatTest::Wasserstein),
        ] {
            for shift in [0.0, 0.05, 0.2] {
                let a = sample(ref_rows, 0.3, 0.0);
                let b = sample(live_rows, 7.1, shift);
                let exact = rule::numeric_feature_drift(&a, &b).unwrap();
                let (r, c) = (reference_profile(&a), numeric_profile(b.iter().copied()));
                assert_eq!(r.sketch().unwrap().retained(), ref_rows);
                assert_eq!(c.sketch().unwrap().retained(), live_rows);
                let got = feature_drift(&r, &c).unwrap();
                assert_eq!(got.verdict.test, test);
                assert_eq!(exact.test, test);
                assert!(
                    (got.verdict.score - exact.score).abs() < 1e-9,
                    "{ref_rows}/{live_rows}/{shift}: {got:?} vs {exact:?}"
                );
                assert_eq!(got.verdict.drifted, exact.drifted);
            }
        }
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
        let (r, c) = (numeric_profile(a), numeric_profile(b));
        let got = feature_drift(&r, &c).unwrap();
        assert_eq!(got.verdict.test, StatTest::Wasserstein);
        // W1 = 20, std ≈ 28.9. KLL compaction is randomised: each sketch's CDF is off by at
        // most its rank error ε (99 %), so W1 = ∫ |F_R - F_C| by at most 2ε × the value range.
        let eps = r.sketch().unwrap().rank_error();
        let bound = 2.0 * eps * 99.0 / 28.866;
        assert!(
            (got.verdict.score - 20.0 / 28.866).abs() < bound,
            "{got:?} (bound {bound})"
        );
        assert!(got.verdict.drifted);
    }
}
