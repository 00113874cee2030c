use std::time::Duration;

use kiln_proto::inference::model_infer_request::InferInputTensor;

use super::*;

fn request(shapes: &[&[i64]]) -> ModelInferRequest {
    ModelInferRequest {
        inputs: shapes
            .iter()
            .map(|s| InferInputTensor {
                name: "x".into(),
                shape: s.to_vec(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn shapes_over_the_limits_are_invalid() {
    assert!(check_shapes(&request(&[&[4, 64]]), 256, 8).is_ok());
    let msg = |r: Result<(), Error>| r.unwrap_err().to_string();
    assert!(msg(check_shapes(&request(&[&[5, 64]]), 256, 8)).contains("--max-tensor-elements"));
    assert!(msg(check_shapes(&request(&[&[9, 1]]), 256, 8)).contains("--max-batch"));
    assert!(msg(check_shapes(&request(&[&[2, -1]]), 256, 8)).contains("negative dimension"));
    // Overflowing products saturate instead of wrapping to something small.
    let huge = request(&[&[1, i64::MAX, i64::MAX, 4]]);
    assert!(msg(check_shapes(&huge, u64::MAX - 1, 8)).contains("--max-tensor-elements"));
}

#[test]
fn the_bucket_refills_at_the_rate() {
    let table = ClientTable::new(ClientLimits {
        rate: 10.0,
        burst: 2.0,
        max_inflight: 0,
    });
    let t0 = Instant::now();
    let a = table.admit("a", t0).unwrap();
    let b = table.admit("a", t0).unwrap();
    let err = table.admit("a", t0).err().unwrap();
    assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
    // Another client has its own bucket.
    assert!(table.admit("b", t0).is_ok());
    // 100 ms later one more token.
    assert!(table.admit("a", t0 + Duration::from_millis(100)).is_ok());
    assert!(table.admit("a", t0 + Duration::from_millis(100)).is_err());
    drop((a, b));
}

#[test]
fn the_inflight_cap_counts_until_the_slot_is_dropped() {
    let table = ClientTable::new(ClientLimits {
        rate: 0.0,
        burst: 1.0,
        max_inflight: 2,
    });
    let now = Instant::now();
    let a = table.admit("a", now).unwrap();
    let _b = table.admit("a", now).unwrap();
    assert!(table.admit("a", now).is_err());
    drop(a);
    assert!(table.admit("a", now).is_ok());
}

#[test]
fn the_client_table_stays_bounded() {
    let table = ClientTable::new(ClientLimits {
        rate: 1.0,
        burst: 1.0,
        max_inflight: 0,
    });
    let now = Instant::now();
    for i in 0..MAX_CLIENTS + 100 {
        let _ = table.admit(&format!("c{i}"), now);
    }
    assert!(table.len() <= MAX_CLIENTS + 1, "{}", table.len());
    // Much later every bucket is full again: idle entries are pruned for new clients.
    let later = now + Duration::from_secs(5);
    assert!(table.admit("fresh", later).is_ok());
    assert!(table.len() < MAX_CLIENTS);
}
