//! Multiple-testing corrections of a vector of p-values, matching
//! `statsmodels.stats.multitest.multipletests(pvals, alpha, method)` for `"bonferroni"` and
//! `"fdr_bh"` (statsmodels 0.15): adjusted p-values (clipped to 1) in input order and the reject
//! decisions. NaN p-values are not supported (statsmodels propagates them unpredictably): the
//! caller drops them first.

/// Adjusted p-values and decisions, in the order of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrected {
    /// Adjusted p-values, each in [0, 1].
    pub p_adjusted: Vec<f64>,
    /// `true` where the hypothesis is rejected (drift) at the family-wise / FDR level `alpha`.
    pub reject: Vec<bool>,
}

/// Bonferroni: `p * m` clipped to 1; reject where `p <= alpha / m`.
pub fn bonferroni(p_values: &[f64], alpha: f64) -> Corrected {
    let m = p_values.len() as f64;
    Corrected {
        p_adjusted: p_values.iter().map(|&p| (p * m).min(1.0)).collect(),
        reject: p_values.iter().map(|&p| p <= alpha / m).collect(),
    }
}

/// Benjamini–Hochberg step-up: with sorted `p_(1) ≤ … ≤ p_(m)`, reject the `k` smallest where `k`
/// is the largest index with `p_(k) ≤ k/m · alpha`; adjusted `p_(i) = min_{j ≥ i} p_(j) · m / j`,
/// clipped to 1.
pub fn benjamini_hochberg(p_values: &[f64], alpha: f64) -> Corrected {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let sorted: Vec<f64> = order.iter().map(|&i| p_values[i]).collect();
    let factor = |i: usize| (i + 1) as f64 / m as f64;
    let last_reject = (0..m).rev().find(|&i| sorted[i] <= factor(i) * alpha);
    let mut adjusted = vec![0.0; m];
    let mut running = f64::INFINITY;
    for i in (0..m).rev() {
        running = running.min(sorted[i] / factor(i));
        adjusted[i] = running.min(1.0);
    }
    let mut out = Corrected {
        p_adjusted: vec![0.0; m],
        reject: vec![false; m],
    };
    for (rank, &i) in order.iter().enumerate() {
        out.p_adjusted[i] = adjusted[rank];
        out.reject[i] = last_reject.is_some_and(|k| rank <= k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bh_textbook_example() {
        let c = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.005], 0.05);
        assert_eq!(c.reject, vec![true, true, true, true]);
        assert!((c.p_adjusted[3] - 0.02).abs() < 1e-15);
        assert!((c.p_adjusted[1] - 0.04).abs() < 1e-15);
    }

    #[test]
    fn bonferroni_clips() {
        let c = bonferroni(&[0.5, 0.01], 0.05);
        assert_eq!(c.p_adjusted, vec![1.0, 0.02]);
        assert_eq!(c.reject, vec![false, true]);
    }

    #[test]
    fn empty_input() {
        assert!(benjamini_hochberg(&[], 0.05).p_adjusted.is_empty());
    }
}
