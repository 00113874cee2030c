//! Inputs the fuzz targets (`fuzz/`) crashed on, kept as regression tests.

use std::time::Duration;

use kiln_proto::edge::parse_grpc_timeout;

/// fuzz target `grpc_timeout`: a value whose last character is not ASCII (here U+07F1, the bytes
/// `cf b1`) made `parse_grpc_timeout` split inside that character and panic.
#[test]
fn grpc_timeout_ending_in_a_multibyte_character_is_refused() {
    let crash = std::str::from_utf8(&[0xcf, 0xb1]).unwrap();
    assert_eq!(parse_grpc_timeout(crash), None);
    assert_eq!(parse_grpc_timeout("1é"), None);
    assert_eq!(parse_grpc_timeout("éS"), None);
    assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
}
