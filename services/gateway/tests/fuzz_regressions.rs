//! Inputs the fuzz targets (`fuzz/`) crashed on, kept as regression tests.

use std::cmp::Ordering;

use kiln_gateway::routing::compare_versions;

/// fuzz target `grpc_timeout`: `compare_versions` compared an integer with a non-integer as
/// strings, which is not transitive (`9` < `10` numerically, `10` < `5[` and `5[` < `9` as
/// strings), and `sort_by` with it panicked ("user-provided comparison function does not
/// correctly implement a total order"), as the gateway's RepositoryIndex sorts versions.
#[test]
fn version_order_is_total_and_sorting_odd_versions_does_not_panic() {
    const CRASH: &[u8] = b"\n2\n\n2\n\n\n\n\n\n\n\x13\n22\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\n\n\n5[\n\n10\n9\n5\n\n\x13\n";
    let text = std::str::from_utf8(CRASH).unwrap();
    let versions: Vec<&str> = text.split('\n').collect();
    for a in &versions {
        for b in &versions {
            assert_eq!(compare_versions(a, b), compare_versions(b, a).reverse());
            for c in &versions {
                if compare_versions(a, b).is_le() && compare_versions(b, c).is_le() {
                    assert!(compare_versions(a, c).is_le(), "{a:?} <= {b:?} <= {c:?}");
                }
            }
        }
    }
    let mut sorted = versions.clone();
    sorted.sort_by(|a, b| compare_versions(a, b));
    let numbers: Vec<&str> = sorted
        .iter()
        .copied()
        .filter(|v| v.parse::<u64>().is_ok())
        .collect();
    assert_eq!(numbers, ["2", "2", "5", "9", "10"]);
    assert_eq!(compare_versions("9", "10"), Ordering::Less);
    assert_eq!(
        compare_versions("10", "5["),
        Ordering::Less,
        "integers first"
    );
    assert_eq!(
        compare_versions("01", "1"),
        Ordering::Less,
        "ties as strings"
    );
}
