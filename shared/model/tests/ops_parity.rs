//! Per-op numerical parity with onnxruntime.
//!
//! `tests/fixtures/ops.json` holds one tiny ONNX model per case (every supported op and its
//! attribute variants), deterministic inputs, and onnxruntime's outputs; it is written by
//! `tests/fixtures/make_op_fixtures.py`. Each case is loaded with [`Model::from_parts`] on the
//! flex backend, run, and compared: shapes exactly, integers, booleans and strings (BYTES) exactly,
//! floats within the case's
//! tolerance (absolute, relative for magnitudes above 1). Every failing case is reported at once.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kiln_model::{
    Backend, BatchingConfig, HostData, HostTensor, Manifest, Model, ModelError, TensorSpec,
};
use serde_json::Value as Json;

/// One tensor of a fixture case.
struct Tensor {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    data: HostData,
}

/// One fixture case.
struct Case {
    name: String,
    model: Vec<u8>,
    max_batch_size: u32,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    tolerance: f32,
    expect_load_error: Option<String>,
}

fn tensor(j: &Json) -> Tensor {
    let datatype = j["datatype"].as_str().expect("datatype").to_string();
    let shape: Vec<usize> = j["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = j["data"].as_array().expect("data");
    let data = match datatype.as_str() {
        "FP32" => HostData::F32(
            data.iter()
                .map(|x| match x.as_str() {
                    Some("NaN") => f32::NAN,
                    _ => x.as_f64().expect("float") as f32,
                })
                .collect(),
        ),
        "INT64" => HostData::I64(data.iter().map(|x| x.as_i64().expect("int")).collect()),
        "BOOL" => HostData::Bool(data.iter().map(|x| x.as_bool().expect("bool")).collect()),
        "BYTES" => HostData::Bytes(
            data.iter()
                .map(|x| x.as_str().expect("string").as_bytes().to_vec())
                .collect(),
        ),
        other => panic!("fixture datatype {other} is not handled"),
    };
    Tensor {
        name: j["name"].as_str().expect("name").to_string(),
        datatype,
        shape,
        data,
    }
}

fn cases() -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Json = serde_json::from_slice(&text).expect("ops.json is JSON");
    v.as_array()
        .expect("a list of cases")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().expect("name").to_string(),
            model: STANDARD
                .decode(c["model_b64"].as_str().expect("model_b64"))
                .expect("base64"),
            max_batch_size: c["max_batch_size"].as_u64().expect("max_batch_size") as u32,
            inputs: c["inputs"].as_array().unwrap().iter().map(tensor).collect(),
            outputs: c["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(tensor)
                .collect(),
            tolerance: c["tolerance"].as_f64().expect("tolerance") as f32,
            expect_load_error: c["expect_load_error"].as_str().map(str::to_string),
        })
        .collect()
}

fn spec(t: &Tensor) -> TensorSpec {
    TensorSpec {
        name: t.name.clone(),
        datatype: t.datatype.clone(),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        labels: Vec::new(),
    }
}

fn manifest(case: &Case) -> Manifest {
    Manifest {
        name: "op".into(),
        version: "1".into(),
        format: "onnx".into(),
        model_file: "model.onnx".into(),
        max_batch_size: case.max_batch_size,
        reference: None,
        inputs: case.inputs.iter().map(spec).collect(),
        outputs: case.outputs.iter().map(spec).collect(),
        batching: BatchingConfig::default(),
        instance_count: None,
    }
}

/// Runs one case on `backend`; `Ok(max abs diff)` or the reason it disagrees with onnxruntime.
fn run_case(case: &Case, backend: Backend) -> Result<f32, String> {
    let model = Model::from_parts(manifest(case), &case.model, backend)
        .map_err(|e| format!("load: {e}"))?;
    let inputs = case
        .inputs
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                HostTensor {
                    shape: t.shape.clone(),
                    data: t.data.clone(),
                },
            )
        })
        .collect();
    let got = model.infer(inputs).map_err(|e| format!("infer: {e}"))?;
    if got.len() != case.outputs.len() {
        return Err(format!(
            "{} outputs, onnxruntime gave {}",
            got.len(),
            case.outputs.len()
        ));
    }
    let mut max_diff = 0f32;
    let mut problems = Vec::new();
    for ((name, out), want) in got.iter().zip(&case.outputs) {
        if *name != want.name {
            problems.push(format!("output {name:?} where {:?} expected", want.name));
            continue;
        }
        if out.shape != want.shape {
            problems.push(format!(
                "{name}: shape {:?}, onnxruntime {:?}",
                out.shape, want.shape
            ));
            continue;
        }
        match (&out.data, &want.data) {
            (HostData::I64(a), HostData::I64(b)) => {
                if a != b {
                    problems.push(format!("{name}: {a:?}, onnxruntime {b:?}"));
                }
            }
            (HostData::Bool(a), HostData::Bool(b)) => {
                if a != b {
                    problems.push(format!("{name}: {a:?}, onnxruntime {b:?}"));
                }
            }
            (HostData::Bytes(a), HostData::Bytes(b)) => {
                if a != b {
                    let text = |v: &[Vec<u8>]| {
                        v.iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>()
                    };
                    problems.push(format!("{name}: {:?}, onnxruntime {:?}", text(a), text(b)));
                }
            }
            (HostData::F32(a), HostData::F32(b)) => {
                let mut worst: Option<(usize, f32, f32)> = None;
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    let diff = (x - y).abs();
                    // NaN never passes: `diff > limit` is false for NaN, so test `<=`.
                    let ok = diff <= case.tolerance * y.abs().max(1.0);
                    if diff.is_nan() {
                        max_diff = f32::NAN;
                    } else if !max_diff.is_nan() {
                        max_diff = max_diff.max(diff);
                    }
                    if !ok && worst.is_none_or(|(_, d, _)| diff.is_nan() || diff > d) {
                        worst = Some((i, diff, *y));
                    }
                }
                if let Some((i, d, y)) = worst {
                    problems.push(format!(
                        "{name}: element {i} differs by {d:e} (kiln {}, onnxruntime {y}; \
                         tolerance {:e})",
                        a[i], case.tolerance
                    ));
                }
            }
            (a, b) => problems.push(format!(
                "{name}: datatype {:?}, onnxruntime {:?}",
                std::mem::discriminant(a),
                std::mem::discriminant(b)
            )),
        }
    }
    if problems.is_empty() {
        Ok(max_diff)
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn every_op_matches_onnxruntime() {
    check_every_op(Backend::Flex);
}

/// The same cases through burn's wgpu backend on a software Vulkan adapter (lavapipe in CI): the
/// GPU code path (shaders, device transfers) without a GPU.
#[cfg(feature = "wgpu")]
#[test]
fn every_op_matches_onnxruntime_on_wgpu_software_adapter() {
    check_every_op(Backend::WgpuCpu);
}

fn check_every_op(backend: Backend) {
    let cases = cases();
    let runnable: Vec<&Case> = cases
        .iter()
        .filter(|c| c.expect_load_error.is_none())
        .collect();
    assert!(runnable.len() >= 100, "only {} cases", runnable.len());
    let mut failures = Vec::new();
    let mut overall = 0f32;
    for case in &runnable {
        match run_case(case, backend) {
            Ok(diff) => {
                overall = overall.max(diff);
                println!("ok   {:<52} max |kiln - onnxruntime| = {diff:e}", case.name);
            }
            Err(reason) => {
                println!("FAIL {:<52} {reason}", case.name);
                failures.push(format!("{}: {reason}", case.name));
            }
        }
    }
    println!(
        "{backend}: {} of {} op cases match onnxruntime; max |diff| over passing cases {overall:e}",
        runnable.len() - failures.len(),
        runnable.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} op cases disagree with onnxruntime:\n{}",
        failures.len(),
        runnable.len(),
        failures.join("\n")
    );
}

#[test]
fn unsupported_op_fixtures_fail_at_load_naming_the_op() {
    let cases = cases();
    let unsupported: Vec<&Case> = cases
        .iter()
        .filter(|c| c.expect_load_error.is_some())
        .collect();
    assert!(
        !unsupported.is_empty(),
        "ops.json has no unsupported-op case"
    );
    for case in unsupported {
        let op = case.expect_load_error.as_deref().unwrap();
        let err = Model::from_parts(manifest(case), &case.model, Backend::Flex)
            .expect_err(&format!("{}: {op} must not load", case.name));
        assert!(
            matches!(&err, ModelError::UnsupportedOp { op: got, .. } if got == op),
            "{}: {err}",
            case.name
        );
        assert!(err.to_string().contains(op), "{}: {err}", case.name);
    }
}
