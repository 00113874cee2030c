//! `kiln profile` on the digits demo package: the reference profile has the package's 64
//! flattened input features and one row per CSV data row, and reads back as a ModelProfile.

use std::path::Path;

use kiln::args::ProfileArgs;
use kiln::commands::drift::write_profile;

fn package() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1")
}

#[test]
fn profiles_the_digits_reference_csv() {
    let src = package();
    let dir = tempfile::tempdir().unwrap();
    for f in ["kiln.toml", "reference.csv"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let csv = std::fs::read_to_string(src.join("reference.csv")).unwrap();
    let rows = csv.lines().filter(|l| !l.trim().is_empty()).count() as u64 - 1;

    let written = write_profile(&ProfileArgs {
        package: dir.path().to_path_buf(),
        input: None,
    })
    .unwrap();
    assert_eq!(written.features, 64);
    assert_eq!(written.rows, rows);
    assert_eq!(
        written.path,
        dir.path()
            .join(kiln_monitor::reference::REFERENCE_PROFILE_FILE)
    );

    let p = kiln_monitor::reference::load(&written.path).unwrap();
    assert_eq!((p.model.as_str(), p.version.as_str()), ("digits", "1"));
    assert_eq!(p.row_count, rows);
    assert_eq!(p.features().len(), 64);
    assert_eq!(p.features()[10].name(), "input[10]");
    assert!(p.features().iter().all(|f| f.count() + f.missing() == rows));
}

#[test]
fn profiles_an_npy_input_and_refuses_a_wrong_width() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(package().join("kiln.toml"), dir.path().join("kiln.toml")).unwrap();
    // 3 rows × 64 float32 values, NPY v1.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 64), }";
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((h.len() as u16).to_le_bytes());
    bytes.extend(h.as_bytes());
    for i in 0..3 * 64 {
        bytes.extend((i as f32).to_le_bytes());
    }
    let npy = dir.path().join("train.npy");
    std::fs::write(&npy, bytes).unwrap();
    let w = write_profile(&ProfileArgs {
        package: dir.path().to_path_buf(),
        input: Some(npy),
    })
    .unwrap();
    assert_eq!((w.rows, w.features), (3, 64));

    let csv = dir.path().join("narrow.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let err = write_profile(&ProfileArgs {
        package: dir.path().to_path_buf(),
        input: Some(csv),
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("64 input features"), "{err:#}");
}
