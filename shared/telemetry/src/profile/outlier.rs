//! Per-row outlier scoring: the squared Mahalanobis distance of a row from the reference data,
//! d² = (x − μ)ᵀ Σ⁺ (x − μ), against a chi-square threshold.
//!
//! Two parts:
//! - [`CoMoments`] accumulates the mean vector and the co-moment matrix
//!   Σᵢ (xᵢ − μ)(xᵢ − μ)ᵀ of the reference rows in one pass (multivariate Welford; two
//!   accumulators merge with Chan et al.'s formula), so building a reference profile never holds
//!   its rows. Rows with a NaN or infinite value are skipped (counted in
//!   [`CoMoments::skipped`]).
//! - [`OutlierModel`] is what the fit leaves (the monitor's `reference::outlier::fit` does the
//!   eigendecomposition and the chi-square quantile): the mean μ, a whitening matrix W with
//!   Wᵀ W = Σ⁺ (regularised), the threshold and its degrees of freedom. Scoring a row is
//!   d² = ‖W (x − μ)‖²: `rank × features` multiply-adds (≤ p²; 64 features: ≤ 4,096), no
//!   allocation per row. Rows with a non-finite value are not scored.
//!
//! # Memory
//!
//! Full covariance up to [`MAX_FULL_COVARIANCE_FEATURES`] = 256 features: the accumulator holds
//! a p × p `f64` matrix (256 features: 512 KiB; 64: 32 KiB) and the model a rank × p whitening
//! matrix (the same at most; it travels in the reference profile, ≤ 512 KiB of the message).
//! Above 256 features both are diagonal (p `f64`s: per-feature standardised distance, the
//! correlations ignored), since a p² matrix would be 8 MiB at 1,024 features and p² work per
//! scored row too slow for the worker's profiling thread.

use super::ProfileError;

/// Most features given a full covariance matrix; wider inputs get a diagonal one (see the
/// module docs for the memory this bounds).
pub const MAX_FULL_COVARIANCE_FEATURES: usize = 256;

/// Streaming mean vector and co-moment matrix of numeric rows (multivariate Welford).
#[derive(Debug, Clone, PartialEq)]
pub struct CoMoments {
    features: usize,
    full: bool,
    count: u64,
    skipped: u64,
    mean: Vec<f64>,
    /// Full: the upper triangle of the p × p co-moment matrix, row-major (the lower half is
    /// unused until [`CoMoments::covariance`] mirrors it). Diagonal: p sums of squares.
    m2: Vec<f64>,
    delta: Vec<f64>,
}

impl CoMoments {
    /// An accumulator of `features`-wide rows: full covariance up to
    /// [`MAX_FULL_COVARIANCE_FEATURES`], diagonal above.
    pub fn new(features: usize) -> Self {
        Self::with_shape(features, features <= MAX_FULL_COVARIANCE_FEATURES)
    }

    /// An accumulator keeping only the variances (the diagonal), whatever the width.
    pub fn diagonal(features: usize) -> Self {
        Self::with_shape(features, false)
    }

    fn with_shape(features: usize, full: bool) -> Self {
        Self {
            features,
            full,
            count: 0,
            skipped: 0,
            mean: vec![0.0; features],
            m2: vec![0.0; if full { features * features } else { features }],
            delta: vec![0.0; features],
        }
    }

    /// Folds in one row (`row.len()` must be the width); a row with a non-finite value is
    /// skipped and counted.
    pub fn add(&mut self, row: &[f64]) -> Result<(), ProfileError> {
        if row.len() != self.features {
            return Err(ProfileError::Shape(format!(
                "row has {} features, the accumulator {}",
                row.len(),
                self.features
            )));
        }
        if !row.iter().all(|v| v.is_finite()) {
            self.skipped += 1;
            return Ok(());
        }
        self.count += 1;
        let n = self.count as f64;
        for ((d, m), x) in self.delta.iter_mut().zip(&mut self.mean).zip(row) {
            *d = x - *m;
            *m += *d / n;
        }
        let p = self.features;
        if self.full {
            // C += δ_old (x − μ_new)ᵀ, upper triangle only (symmetric by construction).
            for i in 0..p {
                let di = self.delta[i];
                let out = &mut self.m2[i * p + i..(i + 1) * p];
                for ((c, x), m) in out.iter_mut().zip(&row[i..]).zip(&self.mean[i..]) {
                    *c += di * (x - m);
                }
            }
        } else {
            for ((c, d), (x, m)) in self
                .m2
                .iter_mut()
                .zip(&self.delta)
                .zip(row.iter().zip(&self.mean))
            {
                *c += d * (x - m);
            }
        }
        Ok(())
    }

    /// Folds in `rows` rows of `f32` values, row-major.
    pub fn add_batch(&mut self, rows: usize, data: &[f32]) -> Result<(), ProfileError> {
        if rows.checked_mul(self.features) != Some(data.len()) {
            return Err(ProfileError::Shape(format!(
                "{rows} rows × {} features need {} values, got {}",
                self.features,
                rows.saturating_mul(self.features),
                data.len()
            )));
        }
        let mut row = vec![0.0; self.features];
        for chunk in data.chunks_exact(self.features.max(1)) {
            row.iter_mut()
                .zip(chunk)
                .for_each(|(r, v)| *r = f64::from(*v));
            self.add(&row)?;
        }
        Ok(())
    }

    /// Folds in another accumulator of the same shape (Chan, Golub, LeVeque 1979).
    pub fn merge(&mut self, other: &CoMoments) -> Result<(), ProfileError> {
        if self.features != other.features || self.full != other.full {
            return Err(ProfileError::Mismatch(format!(
                "co-moments of {} features (full: {}) vs {} (full: {})",
                self.features, self.full, other.features, other.full
            )));
        }
        self.skipped += other.skipped;
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            let skipped = self.skipped;
            *self = other.clone();
            self.skipped = skipped;
            return Ok(());
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let w = na * nb / n;
        for ((d, a), b) in self.delta.iter_mut().zip(&self.mean).zip(&other.mean) {
            *d = b - a;
        }
        let p = self.features;
        if self.full {
            for i in 0..p {
                for j in i..p {
                    self.m2[i * p + j] += other.m2[i * p + j] + self.delta[i] * self.delta[j] * w;
                }
            }
        } else {
            for ((c, o), d) in self.m2.iter_mut().zip(&other.m2).zip(&self.delta) {
                *c += o + d * d * w;
            }
        }
        for (m, d) in self.mean.iter_mut().zip(&self.delta) {
            *m += d * (nb / n);
        }
        self.count += other.count;
        Ok(())
    }

    /// Row width.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Whether the full matrix is kept (else only the variances).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Rows folded in.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Rows skipped for a non-finite value.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The mean vector (zeros when empty).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The sample covariance (co-moments / (n − 1)): the full p × p matrix row-major, or the p
    /// variances of a diagonal accumulator; `None` with fewer than 2 rows.
    pub fn covariance(&self) -> Option<Vec<f64>> {
        if self.count < 2 {
            return None;
        }
        let scale = 1.0 / (self.count - 1) as f64;
        let p = self.features;
        let mut c: Vec<f64> = self.m2.iter().map(|v| v * scale).collect();
        if self.full {
            for i in 0..p {
                for j in 0..i {
                    c[i * p + j] = c[j * p + i];
                }
            }
        }
        Some(c)
    }
}

/// A fitted outlier model (see the module docs): d² = ‖W (x − μ)‖² against `threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierModel {
    features: usize,
    mean: Vec<f64>,
    /// Full: `rank` rows of `features`, row-major. Diagonal: one scale per feature.
    whitening: Vec<f64>,
    rank: usize,
    diagonal: bool,
    threshold: f64,
    quantile: f64,
    ridge: f64,
    count: u64,
}

/// How a fitted model was regularised and thresholded (carried for reports and audits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierFit {
    /// d² above which a row is an outlier (the chi-square `quantile` at the model's degrees of
    /// freedom).
    pub threshold: f64,
    /// The chi-square quantile the threshold is (e.g. 0.999).
    pub quantile: f64,
    /// The ridge λ added to every kept eigenvalue (absolute, in the features' squared units).
    pub ridge: f64,
    /// Reference rows the model was fitted on.
    pub count: u64,
}

impl OutlierModel {
    /// A full model: `whitening` holds `rank = whitening.len() / mean.len()` rows of W.
    pub fn full(
        mean: Vec<f64>,
        whitening: Vec<f64>,
        fit: OutlierFit,
    ) -> Result<Self, ProfileError> {
        let p = mean.len();
        if p == 0 || !whitening.len().is_multiple_of(p) {
            return Err(ProfileError::Shape(format!(
                "a whitening matrix of {} values does not fit {p} features",
                whitening.len()
            )));
        }
        let rank = whitening.len() / p;
        Self::checked(mean, whitening, rank, false, fit)
    }

    /// A diagonal model: one scale 1/σⱼ per feature (0 for a feature that is ignored).
    pub fn diagonal(
        mean: Vec<f64>,
        scales: Vec<f64>,
        fit: OutlierFit,
    ) -> Result<Self, ProfileError> {
        if scales.len() != mean.len() {
            return Err(ProfileError::Shape(format!(
                "{} scales for {} features",
                scales.len(),
                mean.len()
            )));
        }
        let rank = scales.iter().filter(|s| **s != 0.0).count();
        Self::checked(mean, scales, rank, true, fit)
    }

    fn checked(
        mean: Vec<f64>,
        whitening: Vec<f64>,
        rank: usize,
        diagonal: bool,
        fit: OutlierFit,
    ) -> Result<Self, ProfileError> {
        let finite = mean.iter().chain(&whitening).all(|v| v.is_finite());
        let threshold_ok = fit.threshold > 0.0 && fit.threshold.is_finite();
        let quantile_ok = fit.quantile > 0.0 && fit.quantile < 1.0;
        if !finite || !threshold_ok || !quantile_ok {
            return Err(ProfileError::Config(
                "an outlier model needs finite values, a positive threshold and a quantile in (0, 1)"
                    .into(),
            ));
        }
        if rank > mean.len() {
            return Err(ProfileError::Shape(format!(
                "rank {rank} above the {} features",
                mean.len()
            )));
        }
        Ok(Self {
            features: mean.len(),
            mean,
            whitening,
            rank,
            diagonal,
            threshold: fit.threshold,
            quantile: fit.quantile,
            ridge: fit.ridge,
            count: fit.count,
        })
    }

    /// Row width the model scores.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The reference mean μ.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// W: `rank × features` row-major (full), or one scale per feature (diagonal).
    pub fn whitening(&self) -> &[f64] {
        &self.whitening
    }

    /// Whether the model ignores correlations (wide inputs).
    pub fn is_diagonal(&self) -> bool {
        self.diagonal
    }

    /// Effective rank of the reference covariance: the directions d² measures.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Degrees of freedom of the threshold's chi-square distribution (the effective rank).
    pub fn degrees_of_freedom(&self) -> u32 {
        u32::try_from(self.rank).unwrap_or(u32::MAX)
    }

    /// Threshold, quantile, ridge and reference row count.
    pub fn fit(&self) -> OutlierFit {
        OutlierFit {
            threshold: self.threshold,
            quantile: self.quantile,
            ridge: self.ridge,
            count: self.count,
        }
    }

    /// d² of `row` (f64 values); `None` when the width is wrong or a value is not finite.
    pub fn distance2(&self, row: &[f64]) -> Option<f64> {
        if row.len() != self.features || !row.iter().all(|v| v.is_finite()) {
            return None;
        }
        let mut diff = vec![0.0; self.features];
        diff.iter_mut()
            .zip(row.iter().zip(&self.mean))
            .for_each(|(d, (x, m))| *d = x - m);
        Some(self.distance2_centered(&diff))
    }

    /// ‖W diff‖² of an already centred row.
    #[inline]
    fn distance2_centered(&self, diff: &[f64]) -> f64 {
        if self.diagonal {
            return self
                .whitening
                .iter()
                .zip(diff)
                .map(|(s, d)| (s * d) * (s * d))
                .sum();
        }
        let mut d2 = 0.0;
        for w in self.whitening.chunks_exact(self.features) {
            let z = dot(w, diff);
            d2 += z * z;
        }
        d2
    }

    /// Scores `rows` rows of `cols` `f32` features (row-major): `(scored, outliers)`, rows with
    /// a non-finite value not scored. One scratch allocation per call, none per row.
    pub fn count_outliers(
        &self,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> Result<(u64, u64), ProfileError> {
        if cols != self.features {
            return Err(ProfileError::Shape(format!(
                "rows have {cols} features, the outlier model {}",
                self.features
            )));
        }
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ProfileError::Shape(format!(
                "{rows} rows × {cols} features need {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        let (mut scored, mut outliers) = (0, 0);
        let mut diff = vec![0.0f64; cols];
        for row in data.chunks_exact(cols) {
            if !row.iter().all(|v| v.is_finite()) {
                continue;
            }
            diff.iter_mut()
                .zip(row.iter().zip(&self.mean))
                .for_each(|(d, (x, m))| *d = f64::from(*x) - m);
            scored += 1;
            if self.distance2_centered(&diff) > self.threshold {
                outliers += 1;
            }
        }
        Ok((scored, outliers))
    }
}

/// A dot product with four independent accumulators (lets the compiler vectorise it).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<[f64; 3]> {
        (0..50)
            .map(|i| {
                let t = f64::from(i);
                [t, 2.0 * t + (t * 0.7).sin(), 5.0 - (t * 1.3).cos()]
            })
            .collect()
    }

    #[test]
    fn welford_matches_two_pass_and_merges() {
        let rows = rows();
        let mut all = CoMoments::new(3);
        rows.iter().for_each(|r| all.add(r).unwrap());
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let cov = all.covariance().unwrap();
        for i in 0..3 {
            assert!((all.mean()[i] - mean[i]).abs() < 1e-12);
            for j in 0..3 {
                let c: f64 = rows
                    .iter()
                    .map(|r| (r[i] - mean[i]) * (r[j] - mean[j]))
                    .sum::<f64>()
                    / (n - 1.0);
                assert!(
                    (cov[i * 3 + j] - c).abs() < 1e-9 * c.abs().max(1.0),
                    "{i},{j}"
                );
            }
        }
        let (mut a, mut b) = (CoMoments::new(3), CoMoments::new(3));
        rows[..17].iter().for_each(|r| a.add(r).unwrap());
        rows[17..].iter().for_each(|r| b.add(r).unwrap());
        b.add(&[f64::NAN, 0.0, 0.0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!((a.count(), a.skipped()), (50, 1));
        for (x, y) in a.covariance().unwrap().iter().zip(&cov) {
            assert!((x - y).abs() < 1e-9 * y.abs().max(1.0));
        }
        let mut d = CoMoments::diagonal(3);
        rows.iter().for_each(|r| d.add(r).unwrap());
        let var = d.covariance().unwrap();
        for j in 0..3 {
            assert!((var[j] - cov[j * 4]).abs() < 1e-9 * cov[j * 4].max(1.0));
        }
        assert!(CoMoments::new(3).merge(&CoMoments::diagonal(3)).is_err());
        assert!(all.add(&[1.0]).is_err());
    }

    #[test]
    fn profiles_count_merge_reset_and_carry_the_model() {
        use crate::profile::{ModelProfile, ProfileSchema};
        use kiln_proto::kiln::v1 as pb;
        use std::sync::Arc;
        let fit = OutlierFit {
            threshold: 4.0,
            quantile: 0.999,
            ridge: 0.5,
            count: 3,
        };
        let m = OutlierModel::full(vec![1.0, 2.0], vec![0.5, 0.5, 0.25, -0.25], fit).unwrap();
        let schema = ProfileSchema::numeric("x", 2);
        let mut a = ModelProfile::new("m", "1", &schema).unwrap();
        assert_eq!(a.outlier_rate(), None);
        a.score_batch(&m, 2, 2, &[1.0, 2.0, 9.0, 9.0]).unwrap();
        assert_eq!((a.scored_rows(), a.outlier_count()), (2, 1));
        let mut b = a.empty_like();
        assert_eq!((b.scored_rows, b.outlier_count), (0, 0));
        b.score_batch(&m, 1, 2, &[1.0, 2.0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!((a.scored_rows, a.outlier_count), (3, 1));
        a.set_outlier_model(Some(Arc::new(m.clone())));
        let back = ModelProfile::try_from(&pb::ModelProfile::from(&a)).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.outlier_model().map(|x| x.as_ref()), Some(&m));
        let mut bad = pb::ModelProfile::from(&a);
        bad.outlier.as_mut().unwrap().rank = 1;
        assert!(ModelProfile::try_from(&bad).is_err());
    }

    #[test]
    fn scores_and_counts_rows_beyond_the_threshold() {
        let fit = OutlierFit {
            threshold: 9.0,
            quantile: 0.999,
            ridge: 0.0,
            count: 10,
        };
        // W = diag(1, 1/2): d² = x² + (y/2)².
        let m = OutlierModel::full(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 0.5], fit).unwrap();
        assert_eq!((m.rank(), m.degrees_of_freedom()), (2, 2));
        assert_eq!(m.distance2(&[1.0, 4.0]), Some(5.0));
        assert_eq!(m.distance2(&[f64::NAN, 4.0]), None);
        let data = [0.0, 0.0, 3.0, 1.0, 1.0, 8.0, f32::INFINITY, 0.0];
        assert_eq!(m.count_outliers(4, 2, &data).unwrap(), (3, 2));
        assert!(m.count_outliers(4, 3, &data).is_err());
        let d = OutlierModel::diagonal(vec![1.0, 0.0], vec![1.0, 0.0], fit).unwrap();
        assert_eq!(d.rank(), 1);
        assert_eq!(d.distance2(&[4.0, 100.0]), Some(9.0));
        assert!(OutlierModel::full(vec![0.0; 2], vec![1.0; 3], fit).is_err());
    }
}
