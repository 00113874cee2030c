//! Drift statistics other than KS, each a pure function matching a named reference
//! implementation (SciPy 1.17.1, NumPy 2.4, Evidently 0.7.23 `evidently.legacy.calculations.
//! stattests`) to floating-point rounding — checked against stored fixtures in
//! `tests/drift_stats.rs`.
//!
//! Categorical inputs are count vectors aligned by category (`reference[i]` and `current[i]` count
//! the same category; a category absent on one side has count 0 there). Numeric inputs are raw
//! samples (finite values only: non-finite values are an error, drop them first as Evidently
//! does) or `(value, weight)` pairs where noted.

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::gamma::gamma_ur;

use super::DriftError;

/// Sorted distinct values with their multiplicities. Errors on empty input or non-finite values.
pub fn value_counts(sample: &[f64]) -> Result<Vec<(f64, u64)>, DriftError> {
    if sample.is_empty() {
        return Err(DriftError::Empty);
    }
    normalize_counts(&sample.iter().map(|&v| (v, 1)).collect::<Vec<_>>())
}

/// Sorts `(value, count)` pairs, merges equal values (`-0.0 == 0.0`), drops zero counts.
pub fn normalize_counts(pairs: &[(f64, u64)]) -> Result<Vec<(f64, u64)>, DriftError> {
    if pairs.iter().any(|(v, _)| !v.is_finite()) {
        return Err(DriftError::NonFinite);
    }
    let mut v: Vec<(f64, u64)> = pairs.iter().copied().filter(|&(_, k)| k > 0).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, u64)> = Vec::with_capacity(v.len());
    for (x, k) in v {
        match out.last_mut() {
            Some(last) if last.0 == x => last.1 += k,
            _ => out.push((x, k)),
        }
    }
    Ok(out)
}

fn check_counts(reference: &[u64], current: &[u64]) -> Result<(f64, f64), DriftError> {
    if reference.len() != current.len() {
        return Err(DriftError::LengthMismatch);
    }
    let n_ref: u64 = reference.iter().sum();
    let n_cur: u64 = current.iter().sum();
    if n_ref == 0 || n_cur == 0 {
        return Err(DriftError::Empty);
    }
    Ok((n_ref as f64, n_cur as f64))
}

/// Result of a chi-square goodness-of-fit test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquare {
    /// Pearson's statistic `sum((obs - exp)^2 / exp)`; infinite when a category has zero
    /// reference count but a non-zero current count.
    pub statistic: f64,
    /// `chi2.sf(statistic, k - 1)`; NaN when fewer than two categories are present.
    pub p_value: f64,
}

/// Evidently's `chisquare` stattest: `scipy.stats.chisquare(f_obs = current counts, f_exp =
/// reference counts * n_cur / n_ref)` over the categories present on either side.
pub fn chi_square(reference: &[u64], current: &[u64]) -> Result<ChiSquare, DriftError> {
    let (n_ref, n_cur) = check_counts(reference, current)?;
    let k_norm = n_cur / n_ref;
    let mut statistic = 0.0;
    let mut k = 0usize;
    for (&r, &c) in reference.iter().zip(current) {
        if r == 0 && c == 0 {
            continue;
        }
        k += 1;
        let exp = r as f64 * k_norm;
        let diff = c as f64 - exp;
        statistic += diff * diff / exp;
    }
    let p_value = if k < 2 {
        f64::NAN
    } else if statistic.is_infinite() {
        0.0
    } else if statistic <= 0.0 {
        // Identical shares: chi2.sf(0, df) = 1 (statrs' gamma_ur panics at x = 0).
        1.0
    } else {
        gamma_ur((k - 1) as f64 / 2.0, statistic / 2.0)
    };
    Ok(ChiSquare { statistic, p_value })
}

/// Evidently's `z` stattest (two proportions, pooled variance) for a feature with at most two
/// categories: two-sided p-value `2 * (1 - Φ(|z|))`; 1.0 when both sides hold the same single
/// category. Which category counts as "success" does not change the two-sided p-value.
pub fn z_test(reference: &[u64], current: &[u64]) -> Result<f64, DriftError> {
    let (n_ref, n_cur) = check_counts(reference, current)?;
    let present: Vec<usize> = (0..reference.len())
        .filter(|&i| reference[i] > 0 || current[i] > 0)
        .collect();
    if present.len() > 2 {
        return Err(DriftError::TooManyCategories);
    }
    if present.len() == 1 {
        return Ok(1.0);
    }
    // Evidently codes the first (sorted) category as 0, the other as 1.
    let first = present[0];
    let p1 = (n_ref - reference[first] as f64) / n_ref;
    let p2 = (n_cur - current[first] as f64) / n_cur;
    let pooled = (p1 * n_ref + p2 * n_cur) / (n_ref + n_cur);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_cur)).sqrt();
    let normal = Normal::standard();
    Ok(2.0 * (1.0 - normal.cdf(z.abs())))
}

/// `scipy.stats.wasserstein_distance(u_values, v_values, u_weights, v_weights)` on `(value,
/// weight)` pairs (weights > 0; equal weights = raw samples).
pub fn wasserstein_weighted(u: &[(f64, f64)], v: &[(f64, f64)]) -> Result<f64, DriftError> {
    let prep = |s: &[(f64, f64)]| -> Result<(Vec<(f64, f64)>, f64), DriftError> {
        if s.iter()
            .any(|(x, w)| !x.is_finite() || !w.is_finite() || *w < 0.0)
        {
            return Err(DriftError::NonFinite);
        }
        let mut s = s.to_vec();
        s.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = s.iter().map(|p| p.1).sum();
        if s.is_empty() || total <= 0.0 {
            return Err(DriftError::Empty);
        }
        Ok((s, total))
    };
    let (u, tu) = prep(u)?;
    let (v, tv) = prep(v)?;
    // Walk the merged support; between consecutive support points both CDFs are constant.
    let (mut i, mut j) = (0usize, 0usize);
    let (mut cu, mut cv) = (0.0f64, 0.0f64);
    let mut dist = 0.0;
    let mut prev: Option<f64> = None;
    while i < u.len() || j < v.len() {
        let x = match (u.get(i), v.get(j)) {
            (Some(a), Some(b)) => a.0.min(b.0),
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => unreachable!(),
        };
        if let Some(p) = prev {
            dist += (cu / tu - cv / tv).abs() * (x - p);
        }
        while u.get(i).is_some_and(|a| a.0 == x) {
            cu += u[i].1;
            i += 1;
        }
        while v.get(j).is_some_and(|b| b.0 == x) {
            cv += v[j].1;
            j += 1;
        }
        prev = Some(x);
    }
    Ok(dist)
}

/// `scipy.stats.wasserstein_distance(reference, current)` on raw samples.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    let w = |s: &[f64]| s.iter().map(|&x| (x, 1.0)).collect::<Vec<_>>();
    wasserstein_weighted(&w(reference), &w(current))
}

/// `np.std(sample)` (population standard deviation, ddof = 0, two-pass).
pub fn population_std(sample: &[f64]) -> f64 {
    let n = sample.len() as f64;
    let mean = sample.iter().sum::<f64>() / n;
    (sample.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

/// Evidently's `wasserstein` stattest: Wasserstein distance divided by
/// `max(np.std(reference), 0.001)`.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    let d = wasserstein(reference, current)?;
    Ok(d / population_std(reference).max(0.001))
}

/// Evidently's `get_binned_data`: per-bin shares of reference and current.
///
/// A numeric feature with more than 20 distinct reference values is binned with
/// `np.histogram_bin_edges(concat(reference, current), bins="sturges")` (equal-width bins over the
/// combined range, the last bin closed); otherwise each distinct value of either side is a bin.
pub fn evidently_binned_shares(
    reference: &[f64],
    current: &[f64],
) -> Result<(Vec<f64>, Vec<f64>), DriftError> {
    let r = value_counts(reference)?;
    let c = value_counts(current)?;
    let (n_ref, n_cur) = (reference.len() as f64, current.len() as f64);
    if r.len() > 20 {
        let edges = sturges_edges(&r, &c);
        let rh = histogram(reference, &edges);
        let ch = histogram(current, &edges);
        Ok((
            rh.iter().map(|&k| k as f64 / n_ref).collect(),
            ch.iter().map(|&k| k as f64 / n_cur).collect(),
        ))
    } else {
        let (rc, cc) = aligned_counts(&r, &c);
        Ok((
            rc.iter().map(|&k| k as f64 / n_ref).collect(),
            cc.iter().map(|&k| k as f64 / n_cur).collect(),
        ))
    }
}

/// Counts of two value-count lists aligned on the union of their values (sorted).
pub fn aligned_counts(r: &[(f64, u64)], c: &[(f64, u64)]) -> (Vec<u64>, Vec<u64>) {
    let mut keys: Vec<f64> = r.iter().chain(c).map(|p| p.0).collect();
    keys.sort_by(f64::total_cmp);
    keys.dedup_by(|a, b| a == b);
    let lookup = |s: &[(f64, u64)], k: f64| -> u64 {
        s.binary_search_by(|p| p.0.total_cmp(&k))
            .map(|i| s[i].1)
            .unwrap_or(0)
    };
    (
        keys.iter().map(|&k| lookup(r, k)).collect(),
        keys.iter().map(|&k| lookup(c, k)).collect(),
    )
}

/// NumPy's "sturges" edges over the combined sample: `ceil(ptp / (ptp / (log2(n) + 1)))` bins,
/// `np.linspace(min, max, bins + 1)` (range widened by ±0.5 when min == max).
fn sturges_edges(r: &[(f64, u64)], c: &[(f64, u64)]) -> Vec<f64> {
    let n: u64 = r.iter().chain(c).map(|p| p.1).sum();
    let lo = r[0].0.min(c[0].0);
    let hi = r[r.len() - 1].0.max(c[c.len() - 1].0);
    let ptp = hi - lo;
    let width = ptp / ((n as f64).log2() + 1.0);
    let (first, last) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|k| k as f64 * step + first).collect();
    edges[bins] = last;
    edges
}

/// `np.histogram(sample, edges)[0]` for explicit edges: `[e_i, e_{i+1})`, the last bin closed,
/// values outside `[e_0, e_last]` dropped.
fn histogram(sample: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut s = sample.to_vec();
    s.sort_by(f64::total_cmp);
    let below = |e: f64| s.partition_point(|&x| x < e);
    let last = edges.len() - 1;
    let cum: Vec<usize> = edges
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            if i == last {
                s.partition_point(|&x| x <= e)
            } else {
                below(e)
            }
        })
        .collect();
    cum.windows(2).map(|w| (w[1] - w[0]) as u64).collect()
}

/// `scipy.spatial.distance.jensenshannon(p, q)` (natural log; inputs normalised to sum 1).
pub fn jensen_shannon_shares(p: &[f64], q: &[f64]) -> Result<f64, DriftError> {
    if p.len() != q.len() {
        return Err(DriftError::LengthMismatch);
    }
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let rel_entr = |x: f64, y: f64| -> f64 {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let (mut left, mut right) = (0.0, 0.0);
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        left += rel_entr(a, m);
        right += rel_entr(b, m);
    }
    Ok(((left + right) / 2.0).sqrt())
}

/// Evidently's `jensenshannon` stattest on numeric samples ([`evidently_binned_shares`], no
/// zero filling, natural log).
pub fn jensen_shannon(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    let (r, c) = evidently_binned_shares(reference, current)?;
    jensen_shannon_shares(&r, &c)
}

/// Evidently's `jensenshannon` stattest on category counts.
pub fn jensen_shannon_counts(reference: &[u64], current: &[u64]) -> Result<f64, DriftError> {
    let (r, c) = present_shares(reference, current)?;
    jensen_shannon_shares(&r, &c)
}

fn present_shares(reference: &[u64], current: &[u64]) -> Result<(Vec<f64>, Vec<f64>), DriftError> {
    let (n_ref, n_cur) = check_counts(reference, current)?;
    let (mut r, mut c) = (Vec::new(), Vec::new());
    for (&a, &b) in reference.iter().zip(current) {
        if a > 0 || b > 0 {
            r.push(a as f64 / n_ref);
            c.push(b as f64 / n_cur);
        }
    }
    Ok((r, c))
}

/// Evidently's empty-bin handling (`feel_zeroes`): zero shares become `min_nonzero / 1e6` when the
/// smallest non-zero share is ≤ 1e-4, else `1e-4`.
pub fn fill_zeroes(shares: &mut [f64]) {
    let min_nz = shares
        .iter()
        .copied()
        .filter(|&x| x != 0.0)
        .fold(f64::INFINITY, f64::min);
    let fill = if min_nz <= 0.0001 {
        min_nz / 1e6
    } else {
        0.0001
    };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = fill;
    }
}

/// PSI of two share vectors after [`fill_zeroes`]: `sum((r - c) * ln(r / c))`.
pub fn psi_shares(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    if reference.len() != current.len() {
        return Err(DriftError::LengthMismatch);
    }
    let (mut r, mut c) = (reference.to_vec(), current.to_vec());
    fill_zeroes(&mut r);
    fill_zeroes(&mut c);
    Ok(r.iter().zip(&c).map(|(a, b)| (a - b) * (a / b).ln()).sum())
}

/// Evidently's `psi` stattest on numeric samples (binning of [`evidently_binned_shares`]).
pub fn psi(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    let (r, c) = evidently_binned_shares(reference, current)?;
    psi_shares(&r, &c)
}

/// Evidently's `psi` stattest on category counts.
pub fn psi_counts(reference: &[u64], current: &[u64]) -> Result<f64, DriftError> {
    let (r, c) = present_shares(reference, current)?;
    psi_shares(&r, &c)
}

/// `np.quantile(sample, q)` (method "linear") of a sorted sample.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virt = (n - 1) as f64 * q;
    let prev = virt.floor();
    if virt >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    let (a, b) = (sorted[prev as usize], sorted[prev as usize + 1]);
    let t = virt - prev;
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Interior decile edges of the reference: `np.unique(np.quantile(reference, [0.1, …, 0.9]))`.
pub fn decile_edges(reference: &[f64]) -> Result<Vec<f64>, DriftError> {
    value_counts(reference)?;
    let mut s = reference.to_vec();
    s.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10)
        .map(|k| quantile_sorted(&s, k as f64 / 10.0))
        .collect();
    edges.dedup_by(|a, b| a == b);
    Ok(edges)
}

/// Counts per decile bin: bin `i` is `(e_{i-1}, e_i]` with `e_{-1} = -inf`, `e_last = +inf`
/// (`np.searchsorted(edges, x, side="left")`), so current values outside the reference range
/// land in the outer bins.
pub fn decile_bin_counts(sample: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; edges.len() + 1];
    for &x in sample {
        counts[edges.partition_point(|&e| e < x)] += 1;
    }
    counts
}

/// The "PSI on reference deciles": bins from [`decile_edges`] of the reference (ties merge
/// bins), shares per bin, Evidently's empty-bin filling ([`fill_zeroes`]), then the PSI sum.
pub fn psi_deciles(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    if current.is_empty() {
        return Err(DriftError::Empty);
    }
    if current.iter().any(|x| !x.is_finite()) {
        return Err(DriftError::NonFinite);
    }
    let edges = decile_edges(reference)?;
    let share = |s: &[f64]| -> Vec<f64> {
        decile_bin_counts(s, &edges)
            .iter()
            .map(|&k| k as f64 / s.len() as f64)
            .collect()
    };
    psi_shares(&share(reference), &share(current))
}

/// PSI alert level: < 0.1 none, 0.1 ..< 0.25 warn, ≥ 0.25 alert (issue 6's thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiLevel {
    /// PSI < 0.1.
    Ok,
    /// 0.1 ≤ PSI < 0.25.
    Warn,
    /// PSI ≥ 0.25.
    Alert,
}

impl PsiLevel {
    /// Classifies a PSI value (NaN counts as `Ok`).
    pub fn of(psi: f64) -> PsiLevel {
        if psi >= 0.25 {
            PsiLevel::Alert
        } else if psi >= 0.1 {
            PsiLevel::Warn
        } else {
            PsiLevel::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_shift_is_the_shift() {
        let a = [0.0, 1.0, 2.0, 3.0];
        let b: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
        assert!((wasserstein(&a, &b).unwrap() - 0.5).abs() < 1e-15);
    }

    #[test]
    fn psi_of_identical_is_zero_and_levels() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(psi_deciles(&a, &a).unwrap(), 0.0);
        assert_eq!(PsiLevel::of(0.05), PsiLevel::Ok);
        assert_eq!(PsiLevel::of(0.1), PsiLevel::Warn);
        assert_eq!(PsiLevel::of(0.3), PsiLevel::Alert);
    }

    #[test]
    fn z_test_single_shared_category_is_one() {
        assert_eq!(z_test(&[5, 0], &[7, 0]).unwrap(), 1.0);
        assert!(z_test(&[1, 1, 1], &[1, 1, 1]).is_err());
    }

    #[test]
    fn histogram_closes_the_last_bin() {
        assert_eq!(
            histogram(&[0.0, 0.5, 1.0, 2.0], &[0.0, 1.0, 2.0]),
            vec![2, 2]
        );
    }
}
