//! Mergeability and accuracy of profiles: merging the profiles of split data must equal
//! profiling all of it (exact fields exactly, sketches within their stated rank error), for
//! several distributions including negatives, zeros, offsets and heavy tails. Seeded RNG.

use kiln_telemetry::profile::{
    CategoryLabel, DEFAULT_K, FeatureKind, FeatureProfile, QuantileSketch, SketchConfig,
    max_retained,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 100_000;

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Named generators of `N` values each.
fn distributions(seed: u64) -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gen_n = |f: &mut dyn FnMut(&mut StdRng) -> f64| -> Vec<f64> {
        (0..N).map(|_| f(&mut rng)).collect()
    };
    vec![
        ("standard normal", gen_n(&mut |r| normal(r))),
        // Large offset, small spread: relative-error sketches fail here, rank error does not.
        ("normal(2000, 3)", gen_n(&mut |r| 2000.0 + 3.0 * normal(r))),
        ("lognormal", gen_n(&mut |r| (2.0 * normal(r)).exp())),
        (
            "uniform(-100, 100)",
            gen_n(&mut |r| r.random_range(-100.0..100.0)),
        ),
        (
            "half zeros, half negative exponential",
            gen_n(&mut |r| {
                if r.random_bool(0.5) {
                    0.0
                } else {
                    r.random_range(f64::EPSILON..1.0f64).ln()
                }
            }),
        ),
        (
            "small integers -5..=5",
            gen_n(&mut |r| r.random_range(-5i32..=5) as f64),
        ),
    ]
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

/// Splits `0..len` at `parts - 1` random points.
fn split_points(rng: &mut StdRng, len: usize, parts: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..parts - 1).map(|_| rng.random_range(0..=len)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts
}

/// Fraction of `sorted` values `<= x` (as the sketch sees them: rounded to f32).
fn true_cdf(sorted: &[f32], x: f32) -> f64 {
    sorted.partition_point(|v| *v <= x) as f64 / sorted.len() as f64
}

/// The sketch's answers are within `slack × ε` of the exact ranks of `values`.
fn assert_sketch_accurate(name: &str, sketch: &QuantileSketch, values: &[f64], slack: f64) {
    let mut sorted: Vec<f32> = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| *v as f32)
        .collect();
    sorted.sort_by(f32::total_cmp);
    let eps = sketch.rank_error() * slack;
    for i in 1..100 {
        let q = i as f64 / 100.0;
        let v = sketch.quantile(q).unwrap() as f32;
        // The value's true rank interval [below, at_or_below] must come within eps of q.
        let at_or_below = true_cdf(&sorted, v);
        let below = sorted.partition_point(|x| *x < v) as f64 / sorted.len() as f64;
        assert!(
            below - eps <= q && q <= at_or_below + eps,
            "{name}: quantile({q}) = {v} has true rank [{below}, {at_or_below}], eps {eps}"
        );
        let x = sorted[(q * (sorted.len() - 1) as f64) as usize];
        let est = sketch.cdf(f64::from(x)).unwrap();
        let truth = true_cdf(&sorted, x);
        assert!(
            (est - truth).abs() <= eps,
            "{name}: cdf({x}) = {est}, true {truth}, eps {eps}"
        );
    }
    assert_eq!(
        sketch.quantile(0.0).unwrap() as f32,
        sorted[0],
        "{name}: min"
    );
    assert_eq!(
        sketch.quantile(1.0).unwrap() as f32,
        *sorted.last().unwrap(),
        "{name}: max"
    );
}

#[test]
fn merged_split_profiles_equal_profiling_everything() {
    let config = SketchConfig::default();
    let mut rng = StdRng::seed_from_u64(7);
    for (name, mut values) in distributions(42) {
        // A few missing values among the data.
        for i in (0..N).step_by(997) {
            values[i] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][i % 3];
        }
        let mut whole = FeatureProfile::new(name, FeatureKind::Numeric, &config).unwrap();
        values.iter().for_each(|v| whole.observe(*v));

        let cuts = split_points(&mut rng, N, 4);
        let mut merged = FeatureProfile::new(name, FeatureKind::Numeric, &config).unwrap();
        for w in cuts.windows(2) {
            let mut part = FeatureProfile::new(name, FeatureKind::Numeric, &config).unwrap();
            values[w[0]..w[1]].iter().for_each(|v| part.observe(*v));
            merged.merge(&part).unwrap();
        }

        // Exact fields exactly.
        assert_eq!(merged.count(), whole.count(), "{name}: count");
        assert_eq!(merged.missing(), whole.missing(), "{name}: missing");
        assert_eq!(
            merged.missing() as usize,
            N.div_ceil(997),
            "{name}: missing"
        );
        let (m, w) = (merged.moments(), whole.moments());
        assert_eq!(m.min(), w.min(), "{name}: min");
        assert_eq!(m.max(), w.max(), "{name}: max");
        assert!(
            rel_close(m.mean().unwrap(), w.mean().unwrap(), 1e-9),
            "{name}: mean"
        );
        assert!(
            rel_close(m.variance().unwrap(), w.variance().unwrap(), 1e-9),
            "{name}: variance {:?} vs {:?}",
            m.variance(),
            w.variance()
        );
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        assert!(
            rel_close(m.mean().unwrap(), mean, 1e-9),
            "{name}: mean vs two-pass"
        );

        // Sketches: both within the stated rank error of the exact answers. The bound holds
        // with 99 % confidence per query; 2ε makes a failure over these ~1200 queries
        // vanishingly unlikely while still catching a broken merge.
        assert_eq!(merged.sketch().unwrap().count(), whole.count());
        assert_sketch_accurate(name, whole.sketch().unwrap(), &values, 2.0);
        assert_sketch_accurate(name, merged.sketch().unwrap(), &values, 2.0);
    }
}

#[test]
fn rank_error_is_what_the_docs_say() {
    let s = QuantileSketch::new(DEFAULT_K).unwrap();
    assert!(
        (s.rank_error() - 0.0027).abs() < 0.0001,
        "{}",
        s.rank_error()
    );
}

#[test]
fn memory_is_bounded_after_a_million_distinct_values() {
    let mut rng = StdRng::seed_from_u64(3);
    let config = SketchConfig::default();
    let mut f = FeatureProfile::new("x", FeatureKind::Numeric, &config).unwrap();
    for i in 0..1_000_000u32 {
        // Distinct values, in no particular order.
        f.observe(f64::from(i) * 1.000_001 + rng.random::<f64>() * 1e-3 - 5e5);
    }
    let s = f.sketch().unwrap();
    let bound = max_retained(DEFAULT_K, 1_000_000);
    assert!(bound <= 3124, "documented bound after 10^6 values: {bound}");
    assert!(
        s.retained() <= bound,
        "retained {} > bound {bound}",
        s.retained()
    );
    assert!(max_retained(DEFAULT_K, u64::MAX) <= 3476);
    let bytes = s.to_bytes().len();
    eprintln!(
        "after 10^6 values: retained {} (bound {bound}), serialized {bytes} bytes",
        s.retained()
    );
    assert!(
        bytes <= 4 * s.retained() + 8 * 32,
        "serialized {bytes} bytes"
    );
    assert!(
        bytes <= 13 * 1024,
        "serialized {bytes} bytes, documented ~12 KiB"
    );
}

#[test]
fn categorical_cap_keeps_exact_counts_and_an_other_bucket() {
    let config = SketchConfig {
        category_cap: 8,
        ..SketchConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(11);
    // 6 categories ≤ cap: merged split data equals the whole exactly.
    let labels: Vec<i64> = (0..N).map(|_| rng.random_range(0..6)).collect();
    let mut whole = FeatureProfile::new("c", FeatureKind::Categorical, &config).unwrap();
    labels.iter().for_each(|l| whole.observe_int(*l));
    let mut merged = FeatureProfile::new("c", FeatureKind::Categorical, &config).unwrap();
    for w in split_points(&mut rng, N, 3).windows(2) {
        let mut part = FeatureProfile::new("c", FeatureKind::Categorical, &config).unwrap();
        labels[w[0]..w[1]]
            .iter()
            .for_each(|l| part.observe(*l as f64));
        merged.merge(&part).unwrap();
    }
    assert_eq!(merged.categories(), whole.categories());
    for c in 0..6 {
        let truth = labels.iter().filter(|l| **l == c).count() as u64;
        assert_eq!(merged.category_count(&CategoryLabel::Int(c)), truth);
    }
    assert_eq!(merged.categories().unwrap().other(), 0);
    assert_eq!(merged.moments().count(), N as u64);

    // 20 string categories > cap: 8 tracked, the rest in "other", total exact; a merge
    // keeps the 8 largest.
    let mut a = FeatureProfile::new("s", FeatureKind::Categorical, &config).unwrap();
    let mut b = FeatureProfile::new("s", FeatureKind::Categorical, &config).unwrap();
    for i in 0..20u64 {
        for _ in 0..=i {
            a.observe_label(&format!("cat{i}"));
        }
        for _ in 0..(20 - i) {
            b.observe_label(&format!("cat{i}"));
        }
    }
    let total_a: u64 = (1..=20).sum();
    assert_eq!(a.count(), total_a);
    let ca = a.categories().unwrap();
    assert_eq!(ca.len(), 8);
    assert_eq!(ca.other(), total_a - (1..=8).sum::<u64>());
    assert_eq!(a.category_count(&CategoryLabel::Str("cat0".into())), 1);
    a.merge(&b).unwrap();
    let c = a.categories().unwrap();
    assert_eq!(c.len(), 8);
    assert_eq!(c.total(), 2 * total_a);
    assert!(c.counts().iter().all(|(_, n)| *n >= 1));
    // Non-integral codes of a categorical feature go to "other"; NaN is missing.
    let mut f = FeatureProfile::new("f", FeatureKind::Categorical, &config).unwrap();
    f.observe(1.5);
    f.observe(f64::NAN);
    assert_eq!((f.categories().unwrap().other(), f.missing()), (1, 1));
}

#[test]
fn merging_different_kinds_fails() {
    let config = SketchConfig::default();
    let mut a = FeatureProfile::new("a", FeatureKind::Numeric, &config).unwrap();
    let b = FeatureProfile::new("a", FeatureKind::Categorical, &config).unwrap();
    assert!(a.merge(&b).is_err());
}
