//! Evidently's default drift rule for one feature and for a dataset, matching
//! `evidently.legacy.calculations.stattests.registry._get_default_stattest` and
//! `evidently.legacy.calculations.data_drift.get_dataset_drift` of Evidently 0.7.23.
//!
//! With `n_values` = distinct non-missing values of reference and current together (Evidently
//! counts `pd.concat([reference, current]).nunique()`, not the reference alone):
//!
//! | reference rows | numerical, n_values > 5 | numerical, ≤ 5 values / categorical |
//! |---|---|---|
//! | ≤ 1000 | KS, drift when p ≤ 0.05 | chi-square (p < 0.05) if n_values > 2, else z-test (p < 0.05) |
//! | > 1000 | Wasserstein / std(ref) ≥ 0.1 | Jensen–Shannon ≥ 0.1 |
//!
//! (KS drifts on `p <= threshold`, chi-square and z on `p < threshold`, distances on
//! `score >= threshold`, exactly as in Evidently.) Dataset drift: share of drifted features
//! `>= 0.5`. Non-finite values must be dropped by the caller first (Evidently replaces ±inf by NaN
//! and drops NaN before testing).

use super::{DriftError, ks, stats};

/// Whether a feature is numerical or categorical (Evidently's `ColumnType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Numeric feature.
    Numerical,
    /// Categorical feature.
    Categorical,
}

/// A stattest Evidently's default rule can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatTest {
    /// Two-sample KS p-value (`ks`).
    Ks,
    /// Chi-square goodness-of-fit p-value (`chisquare`).
    ChiSquare,
    /// Two-proportion z-test p-value (`z`).
    Z,
    /// Wasserstein distance normed by the reference std (`wasserstein`).
    Wasserstein,
    /// Jensen–Shannon distance (`jensenshannon`).
    JensenShannon,
}

impl StatTest {
    /// Evidently's registered name of the test.
    pub fn name(self) -> &'static str {
        match self {
            StatTest::Ks => "ks",
            StatTest::ChiSquare => "chisquare",
            StatTest::Z => "z",
            StatTest::Wasserstein => "wasserstein",
            StatTest::JensenShannon => "jensenshannon",
        }
    }

    /// Evidently's default threshold of the test.
    pub fn default_threshold(self) -> f64 {
        match self {
            StatTest::Ks | StatTest::ChiSquare | StatTest::Z => 0.05,
            StatTest::Wasserstein | StatTest::JensenShannon => 0.1,
        }
    }

    /// Whether `score` means drift at `threshold` (Evidently's comparison for this test).
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            StatTest::Ks => score <= threshold,
            StatTest::ChiSquare | StatTest::Z => score < threshold,
            StatTest::Wasserstein | StatTest::JensenShannon => score >= threshold,
        }
    }
}

/// Reference rows above which Evidently switches from tests to distances.
pub const LARGE_REFERENCE_ROWS: usize = 1000;

/// Evidently's `_get_default_stattest` for `reference_rows` rows and `n_values` distinct values of
/// reference and current together.
pub fn default_stattest(kind: FeatureKind, reference_rows: usize, n_values: usize) -> StatTest {
    let few = kind == FeatureKind::Categorical || n_values <= 5;
    match (reference_rows <= LARGE_REFERENCE_ROWS, few) {
        (true, false) => StatTest::Ks,
        (true, true) if n_values > 2 => StatTest::ChiSquare,
        (true, true) => StatTest::Z,
        (false, false) => StatTest::Wasserstein,
        (false, true) => StatTest::JensenShannon,
    }
}

/// One feature's drift verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureDrift {
    /// The test Evidently's default rule chose.
    pub test: StatTest,
    /// Its score (p-value or distance).
    pub score: f64,
    /// The threshold applied.
    pub threshold: f64,
    /// Whether the feature drifted.
    pub drifted: bool,
}

impl FeatureDrift {
    fn new(test: StatTest, score: f64) -> FeatureDrift {
        let threshold = test.default_threshold();
        FeatureDrift {
            test,
            score,
            threshold,
            drifted: test.drifted(score, threshold),
        }
    }
}

/// Default-rule drift of a numeric feature from raw samples (finite values only).
pub fn numeric_feature_drift(
    reference: &[f64],
    current: &[f64],
) -> Result<FeatureDrift, DriftError> {
    let r = stats::value_counts(reference)?;
    let c = stats::value_counts(current)?;
    let (rc, cc) = stats::aligned_counts(&r, &c);
    let test = default_stattest(FeatureKind::Numerical, reference.len(), rc.len());
    let score = match test {
        StatTest::Ks => ks::ks_2samp_counts(&r, &c)?.p_value,
        StatTest::ChiSquare => stats::chi_square(&rc, &cc)?.p_value,
        StatTest::Z => stats::z_test(&rc, &cc)?,
        StatTest::Wasserstein => stats::wasserstein_normed(reference, current)?,
        StatTest::JensenShannon => stats::jensen_shannon(reference, current)?,
    };
    Ok(FeatureDrift::new(test, score))
}

/// Default-rule drift of a categorical feature from counts aligned by category.
pub fn categorical_feature_drift(
    reference: &[u64],
    current: &[u64],
) -> Result<FeatureDrift, DriftError> {
    if reference.len() != current.len() {
        return Err(DriftError::LengthMismatch);
    }
    let rows: u64 = reference.iter().sum();
    let n_values = reference
        .iter()
        .zip(current)
        .filter(|(a, b)| **a > 0 || **b > 0)
        .count();
    let test = default_stattest(FeatureKind::Categorical, rows as usize, n_values);
    let score = match test {
        StatTest::ChiSquare => stats::chi_square(reference, current)?.p_value,
        StatTest::Z => stats::z_test(reference, current)?,
        _ => stats::jensen_shannon_counts(reference, current)?,
    };
    Ok(FeatureDrift::new(test, score))
}

/// Dataset-level verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetDrift {
    /// Number of drifted features.
    pub drifted_features: usize,
    /// Share of drifted features (0 when there are none).
    pub share: f64,
    /// `share >= drift_share`.
    pub drifted: bool,
}

/// Evidently's `get_dataset_drift`: drift when the share of drifted features is `>= drift_share`
/// (Evidently's default 0.5).
pub fn dataset_drift(features: &[FeatureDrift], drift_share: f64) -> DatasetDrift {
    let drifted_features = features.iter().filter(|f| f.drifted).count();
    let share = if features.is_empty() {
        0.0
    } else {
        drifted_features as f64 / features.len() as f64
    };
    DatasetDrift {
        drifted_features,
        share,
        drifted: !features.is_empty() && share >= drift_share,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_table() {
        use FeatureKind::*;
        assert_eq!(default_stattest(Numerical, 1000, 6), StatTest::Ks);
        assert_eq!(default_stattest(Numerical, 1000, 5), StatTest::ChiSquare);
        assert_eq!(default_stattest(Numerical, 1000, 2), StatTest::Z);
        assert_eq!(default_stattest(Categorical, 10, 40), StatTest::ChiSquare);
        assert_eq!(default_stattest(Numerical, 1001, 6), StatTest::Wasserstein);
        assert_eq!(
            default_stattest(Numerical, 1001, 5),
            StatTest::JensenShannon
        );
        assert_eq!(
            default_stattest(Categorical, 5000, 2),
            StatTest::JensenShannon
        );
    }

    #[test]
    fn threshold_comparisons_follow_evidently() {
        assert!(StatTest::Ks.drifted(0.05, 0.05));
        assert!(!StatTest::ChiSquare.drifted(0.05, 0.05));
        assert!(!StatTest::Z.drifted(0.05, 0.05));
        assert!(StatTest::Wasserstein.drifted(0.1, 0.1));
        assert!(StatTest::JensenShannon.drifted(0.1, 0.1));
    }

    #[test]
    fn dataset_share_rule() {
        let f = |d| FeatureDrift {
            test: StatTest::Ks,
            score: 0.0,
            threshold: 0.05,
            drifted: d,
        };
        assert!(dataset_drift(&[f(true), f(false)], 0.5).drifted);
        assert!(!dataset_drift(&[f(true), f(false), f(false)], 0.5).drifted);
        assert!(!dataset_drift(&[], 0.5).drifted);
    }
}
