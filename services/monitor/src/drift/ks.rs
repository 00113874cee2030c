//! Two-sample Kolmogorov–Smirnov test, ported from `scipy.stats.ks_2samp` (SciPy 1.17.1) with its
//! defaults: `alternative='two-sided'`, `method='auto'`.
//!
//! Guarantees:
//! - The statistic is SciPy's: the largest gap between the two empirical CDFs evaluated at every
//!   sample value (right-continuous, `searchsorted(side='right') / n`); in the exact branch it is
//!   then snapped to `h / lcm(n1, n2)` exactly as SciPy does.
//! - `method='auto'` is SciPy's: exact when `max(n1, n2) <= 10_000` (Hodges' lattice-path counts:
//!   `_compute_prob_outside_square` for `n1 == n2`, the Viehmann-stabilised
//!   `_compute_outer_prob_inside_method` otherwise); if that is not finite or not in [0, 1] — or the
//!   samples are larger — the asymptotic branch runs.
//! - The asymptotic branch is SciPy's `kstwo.sf(d, round(n1*n2/(n1+n2)))`, ported in
//!   [`super::kstwo`]. [`KsMethod`] says which branch ran.
//! - The weighted-count form ([`ks_2samp_counts`]) gives bit-identical statistics to the raw-sample
//!   form on the expanded samples, so mergeable sketches that keep exact counts can feed it.

use super::DriftError;

/// Largest sample size for which SciPy's `method='auto'` tries the exact distribution.
pub const MAX_EXACT_N: u64 = 10_000;

/// Which branch computed a KS p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMethod {
    /// Exact lattice-path count (matches SciPy to rounding).
    Exact,
    /// Limiting-distribution approximation (see the module doc).
    Asymptotic,
}

/// Result of a two-sample KS test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The KS statistic `D` (after SciPy's snapping to `h / lcm` in the exact branch).
    pub statistic: f64,
    /// Two-sided p-value, clipped to [0, 1].
    pub p_value: f64,
    /// Which branch computed the p-value.
    pub method: KsMethod,
}

/// `scipy.stats.ks_2samp(reference, current)`: two-sided, `method='auto'`.
///
/// Non-finite values are an error (drop them first, as Evidently does); empty samples too.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> Result<KsResult, DriftError> {
    let r = super::stats::value_counts(reference)?;
    let c = super::stats::value_counts(current)?;
    ks_2samp_counts(&r, &c)
}

/// KS test on `(value, count)` pairs (any order, values may repeat), e.g. from an exact sketch.
pub fn ks_2samp_counts(
    reference: &[(f64, u64)],
    current: &[(f64, u64)],
) -> Result<KsResult, DriftError> {
    let r = super::stats::normalize_counts(reference)?;
    let c = super::stats::normalize_counts(current)?;
    let n1: u64 = r.iter().map(|&(_, k)| k).sum();
    let n2: u64 = c.iter().map(|&(_, k)| k).sum();
    if n1 == 0 || n2 == 0 {
        return Err(DriftError::Empty);
    }
    let d = ks_statistic(&r, &c, n1, n2);
    Ok(ks_p_value(n1, n2, d))
}

/// SciPy's statistic: max over all sample values of `|cdf1 - cdf2|` (max of the positive part and
/// of the clipped negative part). Inputs sorted by value, values distinct, counts > 0.
fn ks_statistic(r: &[(f64, u64)], c: &[(f64, u64)], n1: u64, n2: u64) -> f64 {
    let (mut i, mut j) = (0usize, 0usize);
    let (mut cum1, mut cum2) = (0u64, 0u64);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < r.len() || j < c.len() {
        let v = match (r.get(i), c.get(j)) {
            (Some(a), Some(b)) => a.0.min(b.0),
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => unreachable!(),
        };
        if r.get(i).is_some_and(|a| a.0 == v) {
            cum1 += r[i].1;
            i += 1;
        }
        if c.get(j).is_some_and(|b| b.0 == v) {
            cum2 += c[j].1;
            j += 1;
        }
        let diff = cum1 as f64 / n1 as f64 - cum2 as f64 / n2 as f64;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    if min_s > max_s { min_s } else { max_s }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The p-value of statistic `d` for sample sizes `n1`, `n2` as `ks_2samp(method='auto')` computes
/// it (two-sided). Returns the (possibly snapped) statistic too.
pub fn ks_p_value(n1: u64, n2: u64, d: f64) -> KsResult {
    let mut d = d;
    if n1.max(n2) <= MAX_EXACT_N {
        let (d_snapped, p) = exact_2samp(n1, n2, d);
        if let Some(p) = p {
            return KsResult {
                statistic: d_snapped,
                p_value: p,
                method: KsMethod::Exact,
            };
        }
        // SciPy keeps the snapped statistic when the exact branch fails.
        d = d_snapped;
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = (m * n / (m + n)).round_ties_even();
    KsResult {
        statistic: d,
        p_value: asymptotic_sf(d, en).clamp(0.0, 1.0),
        method: KsMethod::Asymptotic,
    }
}

/// `_attempt_exact_2kssamp` (two-sided): the statistic snapped to `h / lcm` and the p-value, `None`
/// when the computation is not usable (SciPy then switches to the asymptotic branch).
fn exact_2samp(n1: u64, n2: u64, d: f64) -> (f64, Option<f64>) {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return (d, Some(1.0));
    }
    let prob = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, g, h)
    };
    if !prob.is_finite() || !(0.0..=1.0).contains(&prob) {
        return (d, None);
    }
    (d, Some(prob))
}

/// `_compute_prob_outside_square(n, h)`: Pr(D_{n,n} >= h/n), Horner-like form.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as f64, h as f64);
    let mut p = 0.0;
    let mut k = (n / h).floor() as i64;
    while k >= 0 {
        let kf = k as f64;
        let mut p1 = 1.0;
        let mut j = 0.0;
        while j < h {
            p1 = (n - kf * h - j) * p1 / (n + kf * h + j + 1.0);
            j += 1.0;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// `_compute_outer_prob_inside_method(m, n, g, h)` (SciPy's pythran kernel): the proportion of
/// lattice paths from (0,0) to (m,n) that leave the band `|x/m - y/n| < h/lcm`.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n {
        (n as i64, m as i64)
    } else {
        (m as i64, n as i64)
    };
    let (g, h) = (g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let ceil_div = |a: i64, b: i64| -> i64 { -((-a).div_euclid(b)) };
    let mut minj: i64 = 0;
    let mut maxj: i64 = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in &mut a[minj as usize..(maxj as usize).min(len_a)] {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((ng * i - h).div_euclid(mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let (fi, shift) = (i as f64, (minj - lastminj) as usize);
        for jj in 0..(maxj - minj) as usize {
            let j = (jj as i64 + minj) as f64;
            val = (a[jj + shift] * fi + val * j) / (fi + j);
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(len_a);
            for v in &mut a[from.min(len_a)..to] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// `kstwo.sf(d, en)` (see [`super::kstwo`]).
fn asymptotic_sf(d: f64, en: f64) -> f64 {
    super::kstwo::kstwo_sf(en as u64, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_have_zero_statistic_and_p_one() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let r = ks_2samp(&x, &x).unwrap();
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.method, KsMethod::Exact);
    }

    #[test]
    fn disjoint_samples_have_statistic_one() {
        let r = ks_2samp(&[1.0, 2.0, 3.0], &[10.0, 11.0, 12.0, 13.0]).unwrap();
        assert_eq!(r.statistic, 1.0);
        assert!(r.p_value < 0.06);
    }

    /// Pr(D >= h/lcm) by brute force: the share of lattice paths leaving `|n x - m y| < h g`.
    fn brute_force(m: u64, n: u64, h: u64) -> f64 {
        let lim = (h * gcd(m, n)) as i64;
        let (mu, nu) = (m as usize, n as usize);
        let mut a = vec![vec![0f64; nu + 1]; mu + 1];
        for x in 0..=mu {
            for y in 0..=nu {
                if (n as i64 * x as i64 - m as i64 * y as i64).abs() >= lim {
                    continue;
                }
                a[x][y] = if x + y == 0 {
                    1.0
                } else {
                    let s = (x + y) as f64;
                    let left = if x > 0 {
                        a[x - 1][y] * x as f64 / s
                    } else {
                        0.0
                    };
                    let down = if y > 0 {
                        a[x][y - 1] * y as f64 / s
                    } else {
                        0.0
                    };
                    left + down
                };
            }
        }
        1.0 - a[mu][nu]
    }

    #[test]
    fn exact_branch_matches_brute_force_path_counts() {
        for m in 1..=14u64 {
            for n in 1..=14u64 {
                let lcm = m / gcd(m, n) * n;
                for h in 1..=lcm {
                    let r = ks_p_value(m, n, h as f64 / lcm as f64);
                    if r.method == KsMethod::Exact {
                        let want = brute_force(m, n, h);
                        assert!((r.p_value - want).abs() < 1e-12, "m={m} n={n} h={h}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_or_nan_is_an_error() {
        assert!(ks_2samp(&[], &[1.0]).is_err());
        assert!(ks_2samp(&[f64::NAN], &[1.0]).is_err());
    }
}
