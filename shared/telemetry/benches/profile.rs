//! The worker's hot path: folding 64-feature rows into a [`ModelProfile`]. Reported per row
//! (criterion's element throughput = rows). The profile is warmed first so that the sketches
//! are in their steady state (compacting), as after the first second of traffic.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_telemetry::profile::{ModelProfile, ProfileSchema};

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
