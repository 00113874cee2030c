//! A classifier package whose label output is declared `BYTES` in `kiln.toml`: the manifest
//! validates, the model loads from disk, and inference returns the labels as `HostData::Bytes`
//! (onnxruntime's labels, from the `sklearn_logreg_multiclass_str` fixture).

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kiln_model::{Backend, HostData, HostTensor, Model};
use serde_json::Value as Json;

fn fixture(name: &str) -> Json {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops.json");
    let cases: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
        .clone()
}

#[test]
fn bytes_label_output_round_trips_through_a_package() {
    let case = fixture("sklearn_logreg_multiclass_str");
    let dir = std::env::temp_dir().join(format!("kiln-string-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = STANDARD
        .decode(case["model_b64"].as_str().unwrap())
        .unwrap();
    std::fs::write(dir.join("model.onnx"), model).unwrap();
    std::fs::write(
        dir.join("kiln.toml"),
        r#"
name = "iris-str"
version = "1"
max_batch_size = 64

[[inputs]]
name = "X"
datatype = "FP32"
dims = [4]

[[outputs]]
name = "label"
datatype = "BYTES"
dims = []

[[outputs]]
name = "probabilities"
datatype = "FP32"
dims = [3]
"#,
    )
    .unwrap();
    let loaded = Model::load(&dir, Backend::Flex);
    std::fs::remove_dir_all(&dir).ok();
    let model = loaded.expect("a BYTES output validates and loads");
    let x = &case["inputs"][0];
    let data: Vec<f32> = x["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let rows = data.len() / 4;
    let out = model
        .infer(vec![(
            "X".into(),
            HostTensor {
                shape: vec![rows, 4],
                data: HostData::F32(data),
            },
        )])
        .unwrap();
    assert_eq!(out[0].0, "label");
    assert_eq!(out[0].1.shape, vec![rows]);
    let want: Vec<Vec<u8>> = case["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(out[0].1.data, HostData::Bytes(want));
    // The protocol encoding of BYTES: 4-byte little-endian length + bytes per element.
    let raw = out[0].1.to_raw();
    assert_eq!(
        HostTensor::from_raw(out[0].1.datatype(), vec![rows], &raw).unwrap(),
        out[0].1
    );
}
