//! Fitting a reference profile's Mahalanobis outlier model ([`OutlierModel`]) from the
//! streaming co-moments ([`CoMoments`]) of its rows.
//!
//! Recipe (constants below, or an [`OutlierConfig`]):
//! 1. Σ = the sample covariance (co-moments / (n − 1)).
//! 2. Eigendecomposition Σ = V diag(w) Vᵀ (nalgebra's symmetric QR algorithm). Eigenvalues at
//!    or below [`RANK_TOLERANCE`] × the largest are numerically zero (constant features such
//!    as the always-blank border pixels of the digits, exact linear dependencies) and dropped:
//!    d² measures nothing along them (a pseudo-inverse). The kept count is the **effective
//!    rank** k.
//! 3. Ridge: λ = [`RIDGE`] × tr(Σ) / p (a fraction of the mean variance) is added to every kept
//!    eigenvalue, so small, badly estimated directions (500 reference rows for 64 features)
//!    cannot dominate d². W = diag(1/√(wᵢ + λ)) V_kᵀ, d² = ‖W (x − μ)‖² =
//!    (x − μ)ᵀ V_k diag(1/(wᵢ + λ)) V_kᵀ (x − μ). The ridge only shrinks d², so the nominal
//!    rate below is an upper bound for Gaussian data.
//! 4. Threshold = the chi-square [`OUTLIER_QUANTILE`] (0.999) quantile with k degrees of
//!    freedom: for Gaussian data about 0.1 % of the rows are outliers. Real inputs have heavier
//!    tails: the held-out digits give ≈ 2 % (tests/outlier.rs), digits with N(0, 2²) noise per
//!    pixel ≈ 75 %.
//!
//! Inputs wider than [`MAX_FULL_COVARIANCE_FEATURES`] get a diagonal model: per-feature
//! standardised distances, the same ridge and tolerance, k = the non-constant features.

use kiln_telemetry::profile::{CoMoments, MAX_FULL_COVARIANCE_FEATURES, OutlierFit, OutlierModel};
use nalgebra::{DMatrix, SymmetricEigen};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// The chi-square quantile of the outlier threshold: about 0.1 % of Gaussian rows are outliers.
pub const OUTLIER_QUANTILE: f64 = 0.999;
/// The ridge, as a fraction of the mean variance tr(Σ)/p, added to every kept eigenvalue.
pub const RIDGE: f64 = 0.05;
/// Eigenvalues at or below this fraction of the largest count as zero (dropped).
pub const RANK_TOLERANCE: f64 = 1e-9;

/// How [`fit`] regularises and thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Chi-square quantile of the threshold, in (0, 1).
    pub quantile: f64,
    /// Ridge as a fraction of the mean variance (0: the plain pseudo-inverse).
    pub ridge: f64,
    /// Relative eigenvalue cutoff of the effective rank.
    pub rank_tolerance: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            quantile: OUTLIER_QUANTILE,
            ridge: RIDGE,
            rank_tolerance: RANK_TOLERANCE,
        }
    }
}

/// The chi-square `q`-quantile with `dof` degrees of freedom (statrs' inverse CDF, polished
/// with Newton steps on its CDF to ~1e-12 relative); `None` for `dof` = 0 or `q` outside (0, 1).
pub fn chi_square_quantile(q: f64, dof: u32) -> Option<f64> {
    let in_range = q > 0.0 && q < 1.0;
    if dof == 0 || !in_range {
        return None;
    }
    let d = ChiSquared::new(f64::from(dof)).ok()?;
    let mut x = d.inverse_cdf(q);
    for _ in 0..8 {
        let density = statrs::distribution::Continuous::pdf(&d, x);
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (d.cdf(x) - q) / density;
        x -= step;
        if step.abs() <= 1e-14 * x.abs() {
            break;
        }
    }
    x.is_finite().then_some(x)
}

/// The outlier model of the rows folded into `acc` with the default configuration; `None` with
/// fewer than 2 rows or when every feature is constant.
pub fn fit(acc: &CoMoments) -> Option<OutlierModel> {
    fit_with(acc, &OutlierConfig::default())
}

/// [`fit`] with an explicit configuration.
pub fn fit_with(acc: &CoMoments, config: &OutlierConfig) -> Option<OutlierModel> {
    let cov = acc.covariance()?;
    let p = acc.features();
    if p == 0 {
        return None;
    }
    let mean = acc.mean().to_vec();
    if !acc.is_full() || p > MAX_FULL_COVARIANCE_FEATURES {
        let variances = if acc.is_full() {
            (0..p).map(|i| cov[i * p + i]).collect()
        } else {
            cov
        };
        return diagonal(mean, &variances, acc.count(), config);
    }
    let sigma = DMatrix::from_row_slice(p, p, &cov);
    let trace = sigma.trace();
    let eig = SymmetricEigen::new(sigma);
    let largest = eig.eigenvalues.iter().copied().fold(0.0f64, f64::max);
    if largest.is_nan() || largest <= 0.0 {
        return None;
    }
    let lambda = config.ridge * trace / p as f64;
    let mut whitening = Vec::with_capacity(p * p);
    for (i, w) in eig.eigenvalues.iter().enumerate() {
        if *w <= config.rank_tolerance * largest {
            continue;
        }
        let scale = 1.0 / (w + lambda).sqrt();
        whitening.extend(eig.eigenvectors.column(i).iter().map(|v| v * scale));
    }
    let rank = u32::try_from(whitening.len() / p).ok()?;
    let fit = OutlierFit {
        threshold: chi_square_quantile(config.quantile, rank)?,
        quantile: config.quantile,
        ridge: lambda,
        count: acc.count(),
    };
    OutlierModel::full(mean, whitening, fit).ok()
}

fn diagonal(
    mean: Vec<f64>,
    variances: &[f64],
    count: u64,
    config: &OutlierConfig,
) -> Option<OutlierModel> {
    let largest = variances.iter().copied().fold(0.0f64, f64::max);
    if largest.is_nan() || largest <= 0.0 {
        return None;
    }
    let lambda = config.ridge * variances.iter().sum::<f64>() / variances.len() as f64;
    let scales: Vec<f64> = variances
        .iter()
        .map(|v| {
            if *v <= config.rank_tolerance * largest {
                0.0
            } else {
                1.0 / (v + lambda).sqrt()
            }
        })
        .collect();
    let rank = u32::try_from(scales.iter().filter(|s| **s != 0.0).count()).ok()?;
    let fit = OutlierFit {
        threshold: chi_square_quantile(config.quantile, rank)?,
        quantile: config.quantile,
        ridge: lambda,
        count,
    };
    OutlierModel::diagonal(mean, scales, fit).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_quantiles() {
        // scipy.stats.chi2.ppf(0.999, k) for k = 1, 2.
        assert!((chi_square_quantile(0.999, 1).unwrap() - 10.827566170662733).abs() < 1e-9);
        assert!((chi_square_quantile(0.999, 2).unwrap() - 13.815510557964274).abs() < 1e-9);
        assert_eq!(chi_square_quantile(0.999, 0), None);
        assert_eq!(chi_square_quantile(1.0, 3), None);
    }

    #[test]
    fn constant_features_reduce_the_rank() {
        let mut acc = CoMoments::new(3);
        for i in 0..20 {
            let t = f64::from(i);
            acc.add(&[t, 7.0, (t * 0.9).sin()]).unwrap();
        }
        let m = fit(&acc).unwrap();
        assert_eq!((m.rank(), m.degrees_of_freedom()), (2, 2));
        // The constant feature is not measured.
        let d0 = m.distance2(&[3.0, 7.0, 0.1]).unwrap();
        let d1 = m.distance2(&[3.0, 1e6, 0.1]).unwrap();
        assert!((d0 - d1).abs() < 1e-6 * d0.max(1.0), "{d0} vs {d1}");
        let mut wide = CoMoments::diagonal(3);
        wide.add(&[0.0, 7.0, 1.0]).unwrap();
        wide.add(&[2.0, 7.0, 3.0]).unwrap();
        let d = fit(&wide).unwrap();
        assert!(d.is_diagonal());
        assert_eq!(d.rank(), 2);
        assert!(fit(&CoMoments::new(2)).is_none());
    }
}
