//! Numerical parity with onnxruntime on the digits demo model's held-out set, and load-time
//! rejection of unsupported ops.

use std::path::PathBuf;

use kiln_model::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use kiln_model::{Backend, HostData, HostTensor, Manifest, Model, ModelError};
use prost::Message;

fn package() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1")
}

struct Heldout {
    inputs: Vec<Vec<f32>>,
    labels: Vec<i64>,
    ort_label: Vec<i64>,
    ort_probabilities: Vec<Vec<f32>>,
}

fn heldout() -> Heldout {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/testdata/heldout.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<Vec<f32>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    let ints = |k: &str| -> Vec<i64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    Heldout {
        inputs: floats("inputs"),
        labels: ints("labels"),
        ort_label: ints("ort_label"),
        ort_probabilities: floats("ort_probabilities"),
    }
}

fn run_batch(model: &Model, rows: &[Vec<f32>]) -> (Vec<i64>, Vec<f32>) {
    let input = HostTensor {
        shape: vec![rows.len(), 64],
        data: HostData::F32(rows.concat()),
    };
    let out = model.infer(vec![("input".into(), input)]).unwrap();
    assert_eq!(out[0].0, "label");
    assert_eq!(out[1].0, "probabilities");
    assert_eq!(out[0].1.shape, vec![rows.len()]);
    assert_eq!(out[1].1.shape, vec![rows.len(), 10]);
    let HostData::I64(labels) = out[0].1.data.clone() else {
        panic!("labels are INT64")
    };
    let HostData::F32(probs) = out[1].1.data.clone() else {
        panic!("probabilities are FP32")
    };
    (labels, probs)
}

fn check_parity(backend: Backend) {
    let model = Model::load(&package(), backend).unwrap();
    let h = heldout();
    let (mut max_diff, mut correct) = (0f32, 0usize);
    for (chunk_index, chunk) in h.inputs.chunks(64).enumerate() {
        let (labels, probs) = run_batch(&model, chunk);
        for (i, label) in labels.iter().enumerate() {
            let row = chunk_index * 64 + i;
            assert_eq!(*label, h.ort_label[row], "row {row}");
            correct += usize::from(*label == h.labels[row]);
            for (a, b) in probs[i * 10..(i + 1) * 10]
                .iter()
                .zip(&h.ort_probabilities[row])
            {
                max_diff = max_diff.max((a - b).abs());
            }
        }
    }
    // Batch of one gives the same answer as inside a batch.
    let (one, probs) = run_batch(&model, &h.inputs[..1]);
    assert_eq!(one[0], h.ort_label[0]);
    for (a, b) in probs.iter().zip(&h.ort_probabilities[0]) {
        max_diff = max_diff.max((a - b).abs());
    }
    let accuracy = correct as f64 / h.inputs.len() as f64;
    println!(
        "{backend}: {} held-out rows, max |kiln - onnxruntime| = {max_diff:e}, accuracy {accuracy:.4}",
        h.inputs.len()
    );
    assert!(max_diff <= 1e-5, "max diff {max_diff}");
    assert!(accuracy >= 0.95);
}

#[test]
fn digits_matches_onnxruntime_on_flex() {
    check_parity(Backend::Flex);
}

#[cfg(feature = "ndarray")]
#[test]
fn digits_matches_onnxruntime_on_ndarray() {
    check_parity(Backend::Ndarray);
}

#[cfg(feature = "wgpu")]
#[test]
fn digits_matches_onnxruntime_on_wgpu_software_adapter() {
    check_parity(Backend::WgpuCpu);
}

fn tiny_model(op_type: &str, domain: &str) -> Vec<u8> {
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: None,
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                name: Some("the_node".into()),
                op_type: Some(op_type.into()),
                domain: Some(domain.into()),
                attribute: vec![],
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn tiny_manifest() -> Manifest {
    Manifest::parse(
        "name='t'\nversion='1'\nmax_batch_size=8\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[3]\n[[outputs]]\nname='y'\ndatatype='FP32'\ndims=[3]\n",
    )
    .unwrap()
}

#[test]
fn unsupported_op_fails_the_load_with_its_name() {
    let err = Model::from_parts(
        tiny_manifest(),
        &tiny_model("NonMaxSuppression", ""),
        Backend::Flex,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::UnsupportedOp { op, .. } if op == "NonMaxSuppression"),
        "{err}"
    );
    assert!(err.to_string().contains("NonMaxSuppression"), "{err}");
    assert!(err.to_string().contains("the_node"), "{err}");
    let err = Model::from_parts(
        tiny_manifest(),
        &tiny_model("ZipMap", "ai.onnx.ml"),
        Backend::Flex,
    )
    .unwrap_err();
    assert!(err.to_string().contains("ai.onnx.ml.ZipMap"), "{err}");
}

#[test]
fn a_supported_tiny_model_runs_and_validates_inputs() {
    let model = Model::from_parts(tiny_manifest(), &tiny_model("Relu", ""), Backend::Flex).unwrap();
    let x = HostTensor {
        shape: vec![1, 3],
        data: HostData::F32(vec![-1.0, 0.5, 2.0]),
    };
    let out = model.infer(vec![("x".into(), x)]).unwrap();
    assert_eq!(out[0].1.data, HostData::F32(vec![0.0, 0.5, 2.0]));
    let bad = |t: HostTensor, name: &str| {
        let err = model.infer(vec![(name.into(), t)]).unwrap_err();
        assert!(matches!(err, ModelError::InvalidInput { .. }), "{err}");
        err.to_string()
    };
    assert!(
        bad(
            HostTensor {
                shape: vec![1, 4],
                data: HostData::F32(vec![0.0; 4])
            },
            "x"
        )
        .contains("shape")
    );
    assert!(
        bad(
            HostTensor {
                shape: vec![1, 3],
                data: HostData::I64(vec![0; 3])
            },
            "x"
        )
        .contains("datatype")
    );
    assert!(
        bad(
            HostTensor {
                shape: vec![9, 3],
                data: HostData::F32(vec![0.0; 27])
            },
            "x"
        )
        .contains("batch size")
    );
    assert!(
        bad(
            HostTensor {
                shape: vec![1, 3],
                data: HostData::F32(vec![0.0; 3])
            },
            "z"
        )
        .contains("not an input")
    );
    assert!(
        model
            .infer(vec![])
            .unwrap_err()
            .to_string()
            .contains("missing")
    );
}

#[test]
fn garbage_is_not_an_onnx_model() {
    let err = Model::from_parts(
        tiny_manifest(),
        b"definitely not protobuf \xff\xff",
        Backend::Flex,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Onnx(_)), "{err}");
}

#[test]
fn memory_counts_the_weights_the_graph_holds() {
    let dir = package();
    let model = Model::load(&dir, Backend::Flex).unwrap();
    let file = std::fs::metadata(dir.join("model.onnx")).unwrap().len();
    let held = model.memory_bytes();
    println!("digits: model.onnx {file} bytes, weights and constants held {held} bytes");
    // An MLP's file is almost all FP32 weights: what is held is close to the file size.
    assert!(held > file * 8 / 10 && held <= file, "{held} vs {file}");
}
