//! [`QuantileSketch`]: a KLL sketch (Apache DataSketches) of `f32` values.
//!
//! Guarantees: while a sketch has seen at most `k` values it holds every one of them (no
//! compaction yet), so every answer is the sample's own. Past that, any rank or CDF answer is
//! within [`QuantileSketch::rank_error`] (k = [`DEFAULT_K`] = 1024: ≈ 0.27 %; k =
//! [`REFERENCE_K`] = 8192: ≈ 0.036 %; single-sided, 99 % confidence) of the true normalized
//! rank, whatever the distribution, its location or its scale; a quantile answer is a value
//! whose true rank is within that error of the asked rank. Merging two sketches keeps the same
//! guarantee for the union stream (and a merge of at most `k` values in all stays exact). At
//! most [`max_retained`]`(k, n)` items are retained (`≈ 3k + 8·L`, `L` the number of levels,
//! `L ≤ ⌈log2(n / 8)⌉ + 1` for `n` values), so memory stays bounded whatever the number of
//! values (figures: the [`profile`](super) module's memory bounds).

use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch};

use super::ProfileError;

/// KLL parameter of live profiles (what workers push per window): a window of up to 1024 rows
/// per feature (Evidently's rule compares windows of hundreds of rows with references of
/// ≤ 1000 rows in its KS regime) is held exactly, so its drift statistics are the raw
/// sample's; a larger one is within ≈ 0.27 % in rank. ≤ 3124 items (12 KiB) per feature after
/// 10⁶ values, ≤ 3476 ever. With k = 200 (≈ 1.33 %, ≤ 1036 items) a 500-row window was
/// compacted and its noise made the drift rule flag undrifted features more often than
/// Evidently on the raw rows (docs/MONITORING.md, "Drift detection accuracy").
pub const DEFAULT_K: u16 = 1024;

/// KLL parameter of reference profiles (built once from training data by `kiln profile`, one
/// per model version, never merged with live ones): a reference of up to 8192 rows is held
/// exactly (the Wasserstein regime of Evidently's rule starts above 1000 rows, and a distance
/// test has no p-value to absorb sketch noise), a larger one is within ≈ 0.036 % in rank;
/// ≤ 24 946 items (≤ 98 KiB) per feature whatever the number of rows.
pub const REFERENCE_K: u16 = 8192;

/// Upper bound on the items a KLL sketch with parameter `k` retains after `n` values: the sum
/// of its level capacities (`k·(2/3)^d`, at least 8) over at most `⌊log2 n⌋ + 2` levels (an
/// item of level `h` stands for `2^h` values, so a non-empty top level needs `n ≥ 2^h`).
pub fn max_retained(k: u16, n: u64) -> usize {
    let levels = (64 - n.leading_zeros()) as usize + 1;
    (0..levels)
        .map(|depth| {
            let cap = (k as f64) * (2.0f64 / 3.0).powi(depth as i32);
            (cap.ceil() as usize).max(8)
        })
        .sum()
}

/// A mergeable quantile sketch of `f32` values (KLL, DataSketches compact binary format).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileSketch {
    kll: KllSketch<KllFloat<f32>>,
}

impl QuantileSketch {
    /// The `sketch_format` string of the serialized form.
    pub const FORMAT: &'static str = "kll-f32";

    /// An empty sketch with accuracy parameter `k` (8..=65535; larger is more accurate).
    pub fn new(k: u16) -> Result<Self, ProfileError> {
        let kll = KllSketch::new(k).map_err(|e| ProfileError::Config(e.to_string()))?;
        Ok(Self { kll })
    }

    /// Folds in one value; NaN is ignored (callers count it as missing before).
    #[inline]
    pub fn add(&mut self, value: f32) {
        if let Ok(v) = KllFloat::<f32>::new(value) {
            self.kll.update(v);
        }
    }

    /// Folds in `other` (the result summarizes both streams).
    pub fn merge(&mut self, other: &QuantileSketch) -> Result<(), ProfileError> {
        self.kll
            .merge(&other.kll)
            .map_err(|e| ProfileError::Merge(e.to_string()))
    }

    /// Number of values folded in.
    pub fn count(&self) -> u64 {
        self.kll.n()
    }

    /// Items currently retained (the memory driver: 4 bytes each).
    pub fn retained(&self) -> usize {
        self.kll.num_retained()
    }

    /// Heap memory held, estimated: the retained items plus the levels' bookkeeping.
    pub fn heap_bytes(&self) -> usize {
        self.retained() * std::mem::size_of::<f32>() + 256
    }

    /// The KLL parameter `k`.
    pub fn k(&self) -> u16 {
        self.kll.k()
    }

    /// Normalized single-sided rank error of this sketch (99 % confidence).
    pub fn rank_error(&self) -> f64 {
        self.kll.normalized_rank_error()
    }

    /// The approximate `q`-quantile (`q` clamped to `[0, 1]`; 0 and 1 give the exact min and
    /// max). `None` when empty or `q` is NaN.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        self.kll
            .quantile(q, SearchCriteria::Inclusive)
            .ok()
            .flatten()
            .map(|v| f64::from(v.into_inner()))
    }

    /// The approximate fraction of values `<= x`. `None` when empty or `x` is NaN.
    pub fn cdf(&self, x: f64) -> Option<f64> {
        let item = KllFloat::<f32>::new(x as f32).ok()?;
        self.kll.rank(&item, SearchCriteria::Inclusive)
    }

    /// The approximate quantiles at `qs` (each clamped to `[0, 1]`), from one sorted view of
    /// the sketch: what a grid of quantiles should use ([`Self::quantile`] sorts per call).
    /// `None` when empty or a `q` is NaN.
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        if qs.iter().any(|q| q.is_nan()) {
            return None;
        }
        let qs: Vec<f64> = qs.iter().map(|q| q.clamp(0.0, 1.0)).collect();
        let items = self.kll.quantiles(&qs, SearchCriteria::Inclusive).ok()??;
        Some(
            items
                .into_iter()
                .map(|v| f64::from(v.into_inner()))
                .collect(),
        )
    }

    /// The approximate fractions of values `<= x` for strictly increasing `xs`, from one sorted
    /// view. `None` when empty, or when `xs` has a NaN or is not strictly increasing as `f32`.
    pub fn cdfs(&self, xs: &[f64]) -> Option<Vec<f64>> {
        let items = xs
            .iter()
            .map(|&x| KllFloat::<f32>::new(x as f32).ok())
            .collect::<Option<Vec<_>>>()?;
        let mut out = self.kll.cdf(&items, SearchCriteria::Inclusive).ok()??;
        out.truncate(xs.len());
        Some(out)
    }

    /// The sketch's distribution exactly as it answers queries: its distinct retained values in
    /// increasing order, each with its weight (how many stream values it stands for; an item
    /// kept at KLL level `h` weighs `2^h`, equal values are summed). The weights sum to
    /// [`Self::count`]; while the sketch holds every value ([`Self::retained`] = count) these
    /// are the exact value counts of the stream. At most [`Self::retained`] pairs; empty when
    /// the sketch is.
    ///
    /// The crate exposes no iterator over its sorted view, so the pairs are read through it:
    /// the item at cumulative weight `w` (quantile at rank `(w - ½) / n`, which rounds up to
    /// `w` exactly) and the cumulative weight up to and including that item (its inclusive
    /// rank × n), one step per distinct value.
    pub fn weighted_items(&self) -> Vec<(f64, u64)> {
        let view = self.kll.sorted_view();
        let total = view.total_weight();
        let mut out = Vec::new();
        let mut below = 0u64;
        while below < total {
            let rank = (below as f64 + 0.5) / total as f64;
            let Ok(Some(item)) = view.quantile(rank, SearchCriteria::Inclusive) else {
                break;
            };
            let Some(upto) = view.rank(&item, SearchCriteria::Inclusive) else {
                break;
            };
            let upto = ((upto * total as f64).round() as u64).clamp(below + 1, total);
            out.push((f64::from(item.into_inner()), upto - below));
            below = upto;
        }
        out
    }

    /// The sketch in DataSketches' compact binary format.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.kll.serialize()
    }

    /// Reads a sketch written by [`QuantileSketch::to_bytes`] (or another DataSketches port's
    /// `kll_floats_sketch`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProfileError> {
        let kll = KllSketch::deserialize(bytes)
            .map_err(|e| ProfileError::Decode(format!("quantile sketch: {e}")))?;
        Ok(Self { kll })
    }

    /// Empties the sketch, keeping `k`.
    pub fn reset(&mut self) {
        self.kll.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity_and_round_trips() {
        let mut s = QuantileSketch::new(DEFAULT_K).unwrap();
        for v in [-3.0f32, -1.0, 0.0, 2.0, 5.0] {
            s.add(v);
        }
        s.add(f32::NAN);
        assert_eq!(s.count(), 5);
        assert_eq!(s.quantile(0.0), Some(-3.0));
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_eq!(s.quantile(1.0), Some(5.0));
        assert_eq!(s.cdf(0.0), Some(0.6));
        assert_eq!(s.cdf(f64::NAN), None);
        let back = QuantileSketch::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.quantile(0.5), Some(0.0));
        assert_eq!(back.count(), 5);
        assert!(QuantileSketch::from_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn batch_queries_match_single_ones() {
        let mut s = QuantileSketch::new(DEFAULT_K).unwrap();
        for i in 0..5000 {
            s.add(((i * 7919) % 1000) as f32 / 10.0);
        }
        let qs = [0.0, 0.1, 0.5, 0.93, 1.0];
        let batch = s.quantiles(&qs).unwrap();
        for (q, b) in qs.iter().zip(&batch) {
            assert_eq!(s.quantile(*q), Some(*b), "q = {q}");
        }
        let xs = [-1.0, 3.5, 50.0, 99.9, 200.0];
        let batch = s.cdfs(&xs).unwrap();
        for (x, b) in xs.iter().zip(&batch) {
            assert_eq!(s.cdf(*x), Some(*b), "x = {x}");
        }
        assert_eq!(s.cdfs(&[2.0, 1.0]), None);
        assert_eq!(s.quantiles(&[f64::NAN]), None);
        assert_eq!(QuantileSketch::new(DEFAULT_K).unwrap().cdfs(&[1.0]), None);
    }

    #[test]
    fn weighted_items_are_the_sketch_distribution() {
        let mut s = QuantileSketch::new(DEFAULT_K).unwrap();
        assert!(s.weighted_items().is_empty());
        for v in [2.0f32, -1.0, 2.0, 7.5, 2.0] {
            s.add(v);
        }
        assert_eq!(s.weighted_items(), vec![(-1.0, 1), (2.0, 3), (7.5, 1)]);
        // Compacted: weights are powers of two summed per value, the total is the count, and
        // the CDF of the pairs is the sketch's CDF at every pair.
        let mut s = QuantileSketch::new(8).unwrap();
        (0..5000).for_each(|i| s.add(((i * 7919) % 1000) as f32 / 10.0));
        let items = s.weighted_items();
        assert!(items.len() <= s.retained() && s.retained() < 5000);
        assert_eq!(items.iter().map(|p| p.1).sum::<u64>(), 5000);
        assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
        let mut below = 0;
        for &(x, w) in &items {
            below += w;
            assert_eq!(s.cdf(x), Some(below as f64 / 5000.0), "x = {x}");
        }
    }

    #[test]
    fn sketches_hold_their_first_k_values_exactly() {
        for k in [DEFAULT_K, REFERENCE_K] {
            let mut s = QuantileSketch::new(k).unwrap();
            (0..k).rev().for_each(|i| s.add(f32::from(i)));
            assert_eq!(s.retained(), usize::from(k));
            assert_eq!(s.cdf(f64::from(k / 2 - 1)), Some(0.5));
            let items = s.weighted_items();
            assert_eq!(items.len(), usize::from(k));
            assert!(items.iter().enumerate().all(|(i, &p)| p == (i as f64, 1)));
            s.add(0.5);
            assert!(s.retained() < usize::from(k), "compacted past k");
        }
    }

    #[test]
    fn bad_k_is_a_config_error() {
        assert!(matches!(
            QuantileSketch::new(2),
            Err(ProfileError::Config(_))
        ));
    }
}
