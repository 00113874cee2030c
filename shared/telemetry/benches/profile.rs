//! The worker's hot path: folding 64-feature rows into a [`ModelProfile`]. Reported per row
//! (criterion's element throughput = rows). The profile is warmed first so that the sketches
//! are in their steady state (compacting), as after the first second of traffic.
//! `observe_batch_scored` adds the Mahalanobis outlier scoring of each row against a full-rank
//! 64 × 64 whitening matrix (the worst case: 4,096 multiply-adds per row), `score_batch` is
//! that scoring alone.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_telemetry::profile::{ModelProfile, OutlierFit, OutlierModel, ProfileSchema};

const FEATURES: usize = 64;
const ROWS: usize = 1024;

fn data() -> Vec<f32> {
    // A cheap deterministic generator (xorshift) with negatives, zeros and spread.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..ROWS * FEATURES)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 7 == 0 {
                0.0
            } else {
                ((x >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0) as f32
            }
        })
        .collect()
}

fn warmed() -> ModelProfile {
    let mut p = ModelProfile::new("m", "1", &ProfileSchema::numeric("x", FEATURES)).unwrap();
    let d = data();
    for _ in 0..20 {
        p.observe_batch(ROWS, FEATURES, &d).unwrap();
    }
    p
}

/// A full-rank model: μ = 0, W = diag(1/60) plus small off-diagonal terms (every entry used).
fn outlier_model() -> OutlierModel {
    let w: Vec<f64> = (0..FEATURES * FEATURES)
        .map(|i| {
            let (r, c) = (i / FEATURES, i % FEATURES);
            if r == c {
                1.0 / 60.0
            } else {
                1e-4 * ((r * 7 + c) % 11) as f64
            }
        })
        .collect();
    let fit = OutlierFit {
        threshold: 112.3,
        quantile: 0.999,
        ridge: 0.0,
        count: 1,
    };
    OutlierModel::full(vec![0.0; FEATURES], w, fit).unwrap()
}

fn bench(c: &mut Criterion) {
    let d = data();
    let rows: Vec<Vec<f64>> = d
        .chunks_exact(FEATURES)
        .map(|r| r.iter().map(|v| f64::from(*v)).collect())
        .collect();
    let mut g = c.benchmark_group("profile_64_features");
    g.throughput(Throughput::Elements(ROWS as u64));
    let mut p = warmed();
    g.bench_function("observe_row", |b| {
        b.iter(|| {
            for r in &rows {
                p.observe_row(black_box(r)).unwrap();
            }
        })
    });
    let mut p = warmed();
    g.bench_function("observe_batch", |b| {
        b.iter(|| p.observe_batch(ROWS, FEATURES, black_box(&d)).unwrap())
    });
    let model = outlier_model();
    let mut p = warmed();
    g.bench_function("observe_batch_scored", |b| {
        b.iter(|| {
            p.observe_batch(ROWS, FEATURES, black_box(&d)).unwrap();
            p.score_batch(&model, ROWS, FEATURES, black_box(&d))
                .unwrap();
        })
    });
    let mut p = warmed();
    g.bench_function("score_batch", |b| {
        b.iter(|| {
            p.score_batch(&model, ROWS, FEATURES, black_box(&d))
                .unwrap()
        })
    });
    g.finish();
    let a = warmed();
    let b = warmed();
    c.bench_function("merge_64_features", |bch| {
        bch.iter(|| {
            let mut m = a.clone();
            m.merge(black_box(&b)).unwrap();
            m
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
