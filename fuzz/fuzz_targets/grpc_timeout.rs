//! The gateway's and the worker's request-header handling: a `grpc-timeout` value through
//! `kiln_proto::edge::parse_grpc_timeout` (any string, as the function takes) and through the
//! metadata map both services read it from (`forward::deadline_of`, `infer::deadline_from`),
//! and version strings through the gateway's `compare_versions` ordering (antisymmetric and
//! transitive, so that sorting fuzzed versions cannot panic).
#![no_main]

use std::time::Duration;

use kiln_gateway::routing::compare_versions;
use libfuzzer_sys::fuzz_target;
use tonic::metadata::{MetadataMap, MetadataValue};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(d) = kiln_proto::edge::parse_grpc_timeout(s) {
            assert!(d <= Duration::from_secs(99_999_999 * 3600));
        }
        let versions: Vec<&str> = s.split('\n').take(64).collect();
        for a in &versions {
            for b in &versions {
                assert_eq!(
                    compare_versions(a, b),
                    compare_versions(b, a).reverse(),
                    "{a:?} vs {b:?}"
                );
            }
        }
        let few = &versions[..versions.len().min(12)];
        for a in few {
            for b in few {
                for c in few {
                    if compare_versions(a, b).is_le() && compare_versions(b, c).is_le() {
                        assert!(compare_versions(a, c).is_le(), "{a:?} <= {b:?} <= {c:?}");
                    }
                }
            }
        }
        let mut sorted = versions.clone();
        sorted.sort_by(|a, b| compare_versions(a, b));
        let _ = versions.iter().max_by(|a, b| compare_versions(a, b));
    }
    if let Ok(value) = MetadataValue::try_from(data) {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", value);
        let _ = kiln_gateway::forward::deadline_of(
            &md,
            Duration::from_secs(30),
            Duration::from_millis(5),
        );
        let _ = kiln_worker::infer::deadline_from(&md);
    }
});
