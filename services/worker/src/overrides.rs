//! A deployment's batching overrides (carried by the assignment) applied to a package's
//! manifest when a replica loads.

use kiln_proto::kiln::v1::BatchingOverrides;

/// The manifest with a deployment's batching overrides applied (0 / empty keeps the package's
/// value). `max_batch_size` can only be lowered: the graph was validated for the package's.
pub fn apply_overrides(mut m: kiln_model::Manifest, o: &BatchingOverrides) -> kiln_model::Manifest {
    if o.max_batch_size > 0 && o.max_batch_size < m.max_batch_size {
        m.max_batch_size = o.max_batch_size;
    }
    if !o.preferred_batch_size.is_empty() {
        m.batching.preferred_batch_size = o.preferred_batch_size.clone();
    }
    if o.max_queue_delay_microseconds > 0 {
        m.batching.max_queue_delay_microseconds = o.max_queue_delay_microseconds;
    }
    if o.max_queue_size > 0 {
        m.batching.max_queue_size = o.max_queue_size;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_only_lower_the_batch_size() {
        let mut m = kiln_model::Manifest::read(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1"),
        )
        .unwrap();
        m.max_batch_size = 64;
        let same = apply_overrides(m.clone(), &BatchingOverrides::default());
        assert_eq!(same.max_batch_size, 64);
        assert_eq!(same.batching.max_queue_size, m.batching.max_queue_size);
        let o = BatchingOverrides {
            max_batch_size: 8,
            preferred_batch_size: vec![4, 8],
            max_queue_delay_microseconds: 250,
            max_queue_size: 16,
        };
        let got = apply_overrides(m.clone(), &o);
        assert_eq!(got.max_batch_size, 8);
        assert_eq!(got.batching.preferred_batch_size, [4, 8]);
        assert_eq!(got.batching.max_queue_delay_microseconds, 250);
        assert_eq!(got.batching.max_queue_size, 16);
        let bigger = BatchingOverrides {
            max_batch_size: 1024,
            ..Default::default()
        };
        assert_eq!(apply_overrides(m, &bigger).max_batch_size, 64);
    }
}
