//! Numerical parity with onnxruntime on every package of the model zoo (`models/*/`).
//!
//! A zoo package is a directory `models/<name>/` with a loadable package in `1/` (`kiln.toml` +
//! `model.onnx`) and `testdata/reference.json`, written by the package's export script (format:
//! `models/zoo_common.py`): deterministic input batches and onnxruntime's outputs. Each package
//! is loaded with [`Model::load`] exactly as a worker would, every case is run, and the outputs
//! are compared: names and shapes exactly, INT64 and BYTES exactly, FP32 within the file's
//! `float_tolerance` (absolute, relative for magnitudes above 1). Every failing package is
//! reported at once, and the test fails if fewer than [`MIN_PACKAGES`] are found, so that it
//! cannot pass on an empty zoo.

use std::path::{Path, PathBuf};

use kiln_model::{Backend, HostData, HostTensor, Model};
use serde_json::Value as Json;

/// Fewer zoo packages than this fails the test (the zoo has digits_cnn, autoencoder, logreg,
/// gbt, mlp_pipeline and transformer).
const MIN_PACKAGES: usize = 6;

/// One tensor of a reference case.
struct Tensor {
    name: String,
    tensor: HostTensor,
}

/// One input batch and onnxruntime's outputs for it.
struct Case {
    name: String,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

/// A zoo package: where its `1/` is and its reference data.
struct Package {
    dir: PathBuf,
    float_tolerance: f32,
    cases: Vec<Case>,
}

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn tensor(j: &Json) -> Result<Tensor, String> {
    let name = j["name"].as_str().ok_or("tensor without name")?.to_string();
    let shape = j["shape"]
        .as_array()
        .ok_or("tensor without shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or("bad dim"))
        .collect::<Result<Vec<_>, _>>()?;
    let items = j["data"].as_array().ok_or("tensor without data")?;
    let bad = |what: &str| format!("{name}: element is not {what}");
    let data = match j["datatype"].as_str().ok_or("tensor without datatype")? {
        "FP32" => HostData::F32(
            items
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32).ok_or_else(|| bad("a number")))
                .collect::<Result<_, _>>()?,
        ),
        "INT64" => HostData::I64(
            items
                .iter()
                .map(|x| x.as_i64().ok_or_else(|| bad("an integer")))
                .collect::<Result<_, _>>()?,
        ),
        "BYTES" => HostData::Bytes(
            items
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .ok_or_else(|| bad("a string"))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("{name}: datatype {other} is not handled")),
    };
    let tensor = HostTensor { shape, data };
    if tensor.len() != tensor.shape.iter().product::<usize>() {
        return Err(format!(
            "{name}: {} elements for shape {:?}",
            tensor.len(),
            tensor.shape
        ));
    }
    Ok(Tensor { name, tensor })
}

fn tensors(j: &Json) -> Result<Vec<Tensor>, String> {
    j.as_array()
        .ok_or("not a list of tensors")?
        .iter()
        .map(tensor)
        .collect()
}

fn read_package(dir: &Path, reference: &Path) -> Result<Package, String> {
    let text = std::fs::read(reference).map_err(|e| format!("{}: {e}", reference.display()))?;
    let v: Json = serde_json::from_slice(&text).map_err(|e| format!("reference.json: {e}"))?;
    let float_tolerance = v["float_tolerance"]
        .as_f64()
        .ok_or("reference.json has no float_tolerance")? as f32;
    let cases = v["cases"]
        .as_array()
        .ok_or("reference.json has no cases")?
        .iter()
        .map(|c| {
            Ok(Case {
                name: c["name"].as_str().ok_or("case without name")?.to_string(),
                inputs: tensors(&c["inputs"])?,
                outputs: tensors(&c["outputs"])?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if cases.is_empty() {
        return Err("reference.json has no cases".into());
    }
    Ok(Package {
        dir: dir.to_path_buf(),
        float_tolerance,
        cases,
    })
}

/// Every `models/<name>/` with `1/kiln.toml` and `testdata/reference.json`, sorted by name.
/// A package whose reference file does not parse is returned as an error, not skipped.
fn discover() -> Vec<(String, Result<Package, String>)> {
    let root = models_dir();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let path = entry.expect("directory entry").path();
        let (dir, reference) = (path.join("1"), path.join("testdata/reference.json"));
        if !dir.join("kiln.toml").is_file() || !reference.is_file() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let package = read_package(&dir, &reference);
        found.push((name, package));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Compares one output; returns its max |diff| (FP32; 0 otherwise) or what differs.
fn compare(got: &HostTensor, want: &HostTensor, tolerance: f32) -> Result<f32, String> {
    if got.shape != want.shape {
        return Err(format!(
            "shape {:?}, onnxruntime {:?}",
            got.shape, want.shape
        ));
    }
    match (&got.data, &want.data) {
        (HostData::I64(a), HostData::I64(b)) => match a.iter().zip(b).position(|(x, y)| x != y) {
            None => Ok(0.0),
            Some(i) => Err(format!("element {i}: {}, onnxruntime {}", a[i], b[i])),
        },
        (HostData::Bytes(a), HostData::Bytes(b)) => {
            match a.iter().zip(b).position(|(x, y)| x != y) {
                None => Ok(0.0),
                Some(i) => Err(format!(
                    "element {i}: {:?}, onnxruntime {:?}",
                    String::from_utf8_lossy(&a[i]),
                    String::from_utf8_lossy(&b[i])
                )),
            }
        }
        (HostData::F32(a), HostData::F32(b)) => {
            let mut max_diff = 0f32;
            let mut worst: Option<(usize, f32)> = None;
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let diff = (x - y).abs();
                // NaN never passes: `<=` is false for NaN.
                let ok = diff <= tolerance * y.abs().max(1.0);
                max_diff = if diff.is_nan() || max_diff.is_nan() {
                    f32::NAN
                } else {
                    max_diff.max(diff)
                };
                if !ok && worst.is_none_or(|(_, d)| diff.is_nan() || diff > d) {
                    worst = Some((i, diff));
                }
            }
            match worst {
                None => Ok(max_diff),
                Some((i, d)) => Err(format!(
                    "element {i} differs by {d:e} (kiln {}, onnxruntime {}; \
                     tolerance {tolerance:e})",
                    a[i], b[i]
                )),
            }
        }
        _ => Err(format!(
            "datatype {}, onnxruntime {}",
            got.datatype().as_str(),
            want.datatype().as_str()
        )),
    }
}

/// Loads and runs one package; `Ok(max FP32 |diff|)` or every disagreement found.
fn check_package(package: &Package, backend: Backend) -> Result<f32, String> {
    let model = Model::load(&package.dir, backend).map_err(|e| format!("load: {e}"))?;
    let mut problems = Vec::new();
    let mut max_diff = 0f32;
    for case in &package.cases {
        let inputs = case
            .inputs
            .iter()
            .map(|t| (t.name.clone(), t.tensor.clone()))
            .collect();
        let got = match model.infer(inputs) {
            Ok(got) => got,
            Err(e) => {
                problems.push(format!("{}: infer: {e}", case.name));
                continue;
            }
        };
        let got_names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: Vec<&str> = case.outputs.iter().map(|t| t.name.as_str()).collect();
        if got_names != want_names {
            problems.push(format!(
                "{}: outputs {got_names:?}, onnxruntime {want_names:?}",
                case.name
            ));
            continue;
        }
        for ((name, out), want) in got.iter().zip(&case.outputs) {
            match compare(out, &want.tensor, package.float_tolerance) {
                Ok(d) if d.is_nan() || max_diff.is_nan() => max_diff = f32::NAN,
                Ok(d) => max_diff = max_diff.max(d),
                Err(e) => problems.push(format!("{}/{name}: {e}", case.name)),
            }
        }
    }
    if problems.is_empty() {
        Ok(max_diff)
    } else {
        Err(problems.join("; "))
    }
}

fn check_zoo(backend: Backend) {
    let found = discover();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        found.len() >= MIN_PACKAGES,
        "only {} zoo packages with testdata/reference.json under {} ({names:?}); expected at \
         least {MIN_PACKAGES}",
        found.len(),
        models_dir().display()
    );
    let mut failures = Vec::new();
    for (name, package) in &found {
        let result = package
            .as_ref()
            .map_err(|e| format!("reference: {e}"))
            .and_then(|p| check_package(p, backend).map(|d| (d, p.cases.len(), p.float_tolerance)));
        match result {
            Ok((diff, cases, tol)) => println!(
                "ok   {backend} {name:<14} {cases} cases, max |kiln - onnxruntime| = {diff:e} \
                 (tolerance {tol:e})"
            ),
            Err(reason) => {
                println!("FAIL {backend} {name:<14} {reason}");
                failures.push(format!("{name}: {reason}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} zoo packages disagree with onnxruntime on {backend}:\n{}",
        failures.len(),
        found.len(),
        failures.join("\n")
    );
}

#[test]
fn zoo_matches_onnxruntime_on_flex() {
    check_zoo(Backend::Flex);
}

#[cfg(feature = "wgpu")]
#[test]
fn zoo_matches_onnxruntime_on_wgpu_software_adapter() {
    check_zoo(Backend::WgpuCpu);
}
