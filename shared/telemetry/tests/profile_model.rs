//! Model profiles: row and batch observation, merging across workers, the proto round trip,
//! the latency histogram and window rolling.

use std::time::Duration;

use kiln_proto::kiln::v1 as pb;
use kiln_telemetry::profile::{
    FeatureKind, FeatureSpec, ModelProfile, OutputKind, OutputSpec, ProfileError, ProfileSchema,
    ProfileWindow, SketchConfig, latency_histogram,
};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn schema() -> ProfileSchema {
    let mut s = ProfileSchema::numeric("x", 4);
    s.features.push(FeatureSpec {
        name: "colour".into(),
        kind: FeatureKind::Categorical,
    });
    s.outputs = vec![
        OutputSpec {
            name: "probability".into(),
            kind: OutputKind::Score,
        },
        OutputSpec {
            name: "label".into(),
            kind: OutputKind::Label,
        },
        OutputSpec {
            name: "label_name".into(),
            kind: OutputKind::Label,
        },
    ];
    s
}

/// A profile fed `rows` random rows, outputs and requests.
fn fed(rng: &mut StdRng, rows: usize) -> ModelProfile {
    let mut p = ModelProfile::new("iris", "3", &schema()).unwrap();
    let mut data = Vec::with_capacity(rows * 5);
    for _ in 0..rows {
        data.extend([
            rng.random_range(-1.0f32..1.0),
            rng.random_range(0.0f32..100.0),
            0.0,
            rng.random_range(-1e6f32..-1e3),
            rng.random_range(0..3) as f32,
        ]);
    }
    p.observe_batch(rows, 5, &data).unwrap();
    let scores: Vec<f32> = (0..rows).map(|_| rng.random()).collect();
    p.observe_scores(0, &scores).unwrap();
    let labels: Vec<i64> = scores.iter().map(|s| i64::from(*s > 0.5)).collect();
    p.observe_labels(1, &labels).unwrap();
    p.observe_label_strs(2, labels.iter().map(|l| if *l == 1 { "yes" } else { "no" }))
        .unwrap();
    for i in 0..rows {
        let latency = Duration::from_micros(rng.random_range(100..50_000));
        p.record_request(latency, i % 50 != 0);
    }
    p
}

#[test]
fn rows_and_batches_profile_the_same() {
    let mut rng = StdRng::seed_from_u64(1);
    // Below KLL's first compaction (DEFAULT_K items), so the sketches are exact and comparable.
    let rows: Vec<[f32; 4]> = (0..150).map(|_| rng.random()).collect();
    let s = ProfileSchema::numeric("x", 4);
    let mut by_row = ModelProfile::new("m", "1", &s).unwrap();
    let mut by_batch = ModelProfile::new("m", "1", &s).unwrap();
    for r in &rows {
        by_row.observe_row(&r.map(f64::from)).unwrap();
    }
    by_batch
        .observe_batch(rows.len(), 4, rows.as_flattened())
        .unwrap();
    assert_eq!(by_row.row_count, 150);
    for (a, b) in by_row.features().iter().zip(by_batch.features()) {
        assert_eq!(a.moments(), b.moments());
        assert_eq!(a.quantile(0.5), b.quantile(0.5));
    }
    assert!(matches!(
        by_row.observe_row(&[1.0, 2.0]),
        Err(ProfileError::Shape(_))
    ));
    assert!(by_batch.observe_batch(2, 4, &[0.0; 7]).is_err());
    assert!(by_batch.observe_scores(0, &[1.0]).is_err(), "no outputs");
}

#[test]
fn worker_profiles_merge_like_one_worker() {
    let mut rng = StdRng::seed_from_u64(2);
    let a = fed(&mut rng, 3000);
    let b = fed(&mut rng, 2000);
    let mut m = a.clone();
    m.merge(&b).unwrap();
    assert_eq!(m.request_count, 5000);
    assert_eq!(m.error_count, a.error_count + b.error_count);
    assert_eq!(m.row_count, 5000);
    // HDR merges are exact: the merged histogram is the histogram of all latencies.
    let mut h = latency_histogram();
    h.add(a.latency()).unwrap();
    h.add(b.latency()).unwrap();
    assert_eq!(m.latency(), &h);
    assert_eq!(m.latency().len(), 5000 - m.error_count, "the successes");
    assert_eq!(
        m.features()[2].moments().max(),
        Some(0.0),
        "all-zero feature"
    );
    assert_eq!(m.features()[4].count(), 5000);
    let labels = m.outputs()[1].profile.categories().unwrap();
    assert_eq!(labels.total(), 5000);
    let names = m.outputs()[2].profile.categories().unwrap();
    assert_eq!(names.counts().len(), 2);
    assert_eq!(m.outputs()[0].profile.count(), 5000);
    assert!(m.quantile(3, 0.5).unwrap() < -1e3);
    assert!(m.cdf(1, 100.0).unwrap() == 1.0);

    let mut other_model = ModelProfile::new("iris", "4", &schema()).unwrap();
    assert!(matches!(
        other_model.merge(&a),
        Err(ProfileError::Mismatch(_))
    ));
    let mut other_shape = ModelProfile::new("iris", "3", &ProfileSchema::numeric("x", 5)).unwrap();
    assert!(other_shape.merge(&a).is_err());
}

#[test]
fn proto_round_trip_is_lossless() {
    let mut rng = StdRng::seed_from_u64(3);
    let p = fed(&mut rng, 5000);
    let msg = pb::ModelProfile::from(&p);
    assert_eq!(msg.features.len(), 5);
    assert_eq!(msg.features[0].sketch_format, "kll-f32");
    assert!(msg.features[4].categorical);
    assert_eq!(msg.outputs[1].kind, pb::OutputKind::Label as i32);
    let wire = msg.encode_to_vec();
    let back = ModelProfile::try_from(&pb::ModelProfile::decode(wire.as_slice()).unwrap()).unwrap();
    assert_eq!(back.latency(), p.latency());
    assert_eq!(
        pb::ModelProfile::from(&back),
        msg,
        "re-encoding is identical"
    );
    for (a, b) in back.features().iter().zip(p.features()) {
        assert_eq!(a.moments(), b.moments());
        assert_eq!(a.missing(), b.missing());
        assert_eq!(a.categories(), b.categories());
        for q in [0.01, 0.25, 0.5, 0.9, 0.999] {
            assert_eq!(a.quantile(q), b.quantile(q));
        }
    }
    // The decoded profile still merges with live ones.
    let mut live = p.clone();
    live.merge(&back).unwrap();
    assert_eq!(live.row_count, 10_000);
    // Empty profiles round-trip too.
    let empty = ModelProfile::new("iris", "3", &schema()).unwrap();
    let back = ModelProfile::try_from(&pb::ModelProfile::from(&empty)).unwrap();
    assert_eq!(
        pb::ModelProfile::from(&back),
        pb::ModelProfile::from(&empty)
    );
    // A 64-feature profile of 10k rows (a 5 s window at the workers' row cap) stays within
    // the documented ~9.4 KiB per feature on the wire (KLL k = 1024; measured 608 166 bytes).
    let mut big = ModelProfile::new("m", "1", &ProfileSchema::numeric("x", 64)).unwrap();
    let data: Vec<f32> = (0..640_000).map(|_| rng.random()).collect();
    big.observe_batch(10_000, 64, &data).unwrap();
    let size = pb::ModelProfile::from(&big).encoded_len();
    assert!(size < 64 * 10 * 1024, "{size} bytes");
}

#[test]
fn malformed_messages_are_rejected() {
    let mut rng = StdRng::seed_from_u64(4);
    let good = pb::ModelProfile::from(&fed(&mut rng, 100));
    let mut bad = good.clone();
    bad.features[0].sketch = vec![1, 2, 3];
    assert!(matches!(
        ModelProfile::try_from(&bad),
        Err(ProfileError::Decode(_))
    ));
    let mut bad = good.clone();
    bad.features[0].count += 1;
    assert!(ModelProfile::try_from(&bad).is_err(), "count mismatch");
    let mut bad = good.clone();
    bad.features[1].index = 7;
    assert!(ModelProfile::try_from(&bad).is_err(), "index");
    let mut bad = good.clone();
    bad.outputs[0].kind = 0;
    assert!(ModelProfile::try_from(&bad).is_err(), "kind");
    let mut bad = good.clone();
    bad.latency_hdr = vec![9; 10];
    assert!(ModelProfile::try_from(&bad).is_err(), "hdr");
    let mut bad = good.clone();
    bad.features[4].category_cap = 1;
    assert!(ModelProfile::try_from(&bad).is_err(), "over cap");
    let mut bad = good;
    bad.features[0].sketch_format = "ddsketch".into();
    assert!(ModelProfile::try_from(&bad).is_err(), "format");
}

#[test]
fn latency_histogram_is_fixed_size_and_clamps() {
    let mut p = ModelProfile::new("m", "1", &ProfileSchema::default()).unwrap();
    p.record_request(Duration::from_secs(10 * 3600), true);
    p.record_request(Duration::ZERO, true);
    // A failure counts as an error, not as a (fast) latency.
    p.record_request(Duration::from_micros(3), false);
    assert_eq!(p.latency().len(), 2);
    assert!(p.latency().max() <= 3_700_000_000);
    assert_eq!(p.latency().min(), 1);
    assert_eq!(p.request_count, 3);
    // The documented 26 KiB: 3,328 u64 counters.
    assert_eq!(p.latency().distinct_values(), 3328);
    assert_eq!(p.error_count, 1);
}

#[test]
fn windows_roll_on_aligned_boundaries_and_stay_bounded() {
    let config = SketchConfig::default();
    let mut s = ProfileSchema::numeric("x", 1);
    s.config = config;
    let empty = ModelProfile::new("m", "1", &s).unwrap();
    let t0 = 1_700_000_001_234u64;
    let mut w = ProfileWindow::new(empty, Duration::from_secs(5), 3, t0);
    assert_eq!(w.start_unix_ms() % 5000, 0);
    assert_eq!(w.period(), Duration::from_secs(5));
    let start = w.start_unix_ms();
    w.current_mut().observe_row(&[1.0]).unwrap();
    assert!(w.roll(start + 4_999).is_none());
    let closed = w.roll(start + 5_000).unwrap();
    assert_eq!(
        (closed.start_unix_ms, closed.end_unix_ms),
        (start, start + 5000)
    );
    assert_eq!(closed.profile.row_count, 1);
    assert_eq!(w.current().row_count, 0);
    assert_eq!(w.current().features().len(), 1, "shape kept");
    // An idle gap: the next roll closes one window and jumps to the one containing now.
    let closed = w.roll(start + 60_001).unwrap();
    assert_eq!(closed.start_unix_ms, start + 5000);
    assert_eq!(w.start_unix_ms(), start + 60_000);
    for i in 0..10 {
        w.current_mut().observe_row(&[f64::from(i)]).unwrap();
        w.roll(start + 65_000 + i as u64 * 5000);
    }
    assert_eq!(w.closed().len(), 3, "bounded history");
    let kept: Vec<u64> = w.closed().map(|c| c.start_unix_ms).collect();
    assert!(kept.windows(2).all(|p| p[0] < p[1]), "oldest first");
    assert_eq!(w.drain_closed().len(), 3);
    assert_eq!(w.closed().len(), 0);
}
