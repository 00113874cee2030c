//! A package's model file must lie inside the package: a symlink leading out of it is refused
//! before anything is read, even when its checksum matches the record.

mod common;

use common::*;
use kiln_worker::package::{LoadError, load_blocking, sha256_hex};

#[test]
fn a_model_file_symlinked_out_of_the_package_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("digits/1");
    std::fs::create_dir_all(&pkg).unwrap();
    let src = package_dir();
    std::fs::copy(src.join("kiln.toml"), pkg.join("kiln.toml")).unwrap();
    let outside = tmp.path().join("outside.onnx");
    std::fs::copy(src.join("model.onnx"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, pkg.join("model.onnx")).unwrap();

    let mut record = digits_record();
    record.package_uri = pkg.display().to_string();
    record.sha256 = sha256_hex(&std::fs::read(&outside).unwrap());
    let Err(err) = load_blocking(&record, kiln_model::Backend::Flex, None) else {
        panic!("a model file outside its package was loaded");
    };
    assert!(
        matches!(&err, LoadError::Location { reason, .. } if reason.contains("outside the package")),
        "{err}"
    );

    // The same file copied in (not linked) loads.
    std::fs::remove_file(pkg.join("model.onnx")).unwrap();
    std::fs::copy(&outside, pkg.join("model.onnx")).unwrap();
    load_blocking(&record, kiln_model::Backend::Flex, None).expect("loads");
}
