//! The ready-to-paste calls `kiln up` prints for a deployed model: a tritonclient snippet, a
//! grpcurl line and a `kiln predict` line, all built from the package manifest and one sample
//! row (the first row of the package's reference CSV when it fits, zeros otherwise).

use std::net::SocketAddr;
use std::path::Path;

use kiln_model::{Manifest, TensorSpec};

/// Default gateway address; `kiln predict` needs `--gateway` only when it differs.
const DEFAULT_GATEWAY: &str = "127.0.0.1:8001";

/// The three ways to call a model.
#[derive(Debug, Clone)]
pub struct Snippets {
    /// A Python program using `tritonclient.grpc`.
    pub python: String,
    /// A `grpcurl` command line (the gateway serves reflection).
    pub grpcurl: String,
    /// A `kiln predict` command line.
    pub kiln: String,
}

/// One input's request shape (`[1] + dims` when the model batches; unknown dims as 1).
fn request_shape(manifest: &Manifest, spec: &TensorSpec) -> Vec<i64> {
    let dims = spec.dims.iter().map(|d| (*d).max(1));
    if manifest.max_batch_size > 0 {
        std::iter::once(1).chain(dims).collect()
    } else {
        dims.collect()
    }
}

/// The first data row of the package's reference CSV (`reference` in kiln.toml), if any.
pub fn reference_row(package: &Path, manifest: &Manifest) -> Option<Vec<f64>> {
    let file = package.join(manifest.reference.as_ref()?);
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let first = lines.next()?;
    // Skip a header line (anything that does not parse as numbers).
    let parse =
        |l: &str| -> Option<Vec<f64>> { l.split(',').map(|x| x.trim().parse().ok()).collect() };
    parse(first).or_else(|| parse(lines.next()?))
}

fn numbers(values: &[f64]) -> Vec<String> {
    values.iter().map(|x| format!("{x}")).collect()
}

fn numpy_dtype(datatype: &str) -> &'static str {
    match datatype {
        "FP16" => "np.float16",
        "FP64" => "np.float64",
        "INT8" => "np.int8",
        "INT16" => "np.int16",
        "INT32" => "np.int32",
        "INT64" => "np.int64",
        "UINT8" => "np.uint8",
        "UINT16" => "np.uint16",
        "UINT32" => "np.uint32",
        "UINT64" => "np.uint64",
        "BOOL" => "np.bool_",
        _ => "np.float32",
    }
}

fn contents_field(datatype: &str) -> &'static str {
    match datatype {
        "FP64" => "fp64_contents",
        "INT8" | "INT16" | "INT32" => "int_contents",
        "INT64" => "int64_contents",
        "UINT8" | "UINT16" | "UINT32" => "uint_contents",
        "UINT64" => "uint64_contents",
        "BOOL" => "bool_contents",
        _ => "fp32_contents",
    }
}

/// Builds the snippets for `manifest`, calling the gateway at `gateway`. `sample` feeds the first
/// input when its length fits; other inputs get zeros.
pub fn build(gateway: SocketAddr, manifest: &Manifest, sample: Option<&[f64]>) -> Snippets {
    let model = &manifest.name;
    let inputs: Vec<(&TensorSpec, Vec<i64>, Vec<f64>)> = manifest
        .inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape = request_shape(manifest, spec);
            let len: i64 = shape.iter().product();
            let values = match sample {
                Some(s) if i == 0 && s.len() as i64 == len => s.to_vec(),
                _ => vec![0.0; len as usize],
            };
            (spec, shape, values)
        })
        .collect();

    let mut py = String::from("import numpy as np\nimport tritonclient.grpc as grpcclient\n\n");
    py.push_str(&format!(
        "client = grpcclient.InferenceServerClient(\"{gateway}\")\n"
    ));
    let mut names = Vec::new();
    for (i, (spec, shape, values)) in inputs.iter().enumerate() {
        let shape_s: Vec<String> = shape.iter().map(i64::to_string).collect();
        py.push_str(&format!(
            "x{i} = np.array([{}], dtype={}).reshape([{}])\n",
            numbers(values).join(", "),
            numpy_dtype(&spec.datatype),
            shape_s.join(", ")
        ));
        py.push_str(&format!(
            "in{i} = grpcclient.InferInput(\"{}\", list(x{i}.shape), \"{}\")\nin{i}.set_data_from_numpy(x{i})\n",
            spec.name, spec.datatype
        ));
        names.push(format!("in{i}"));
    }
    py.push_str(&format!(
        "result = client.infer(\"{model}\", [{}])\n",
        names.join(", ")
    ));
    for o in &manifest.outputs {
        py.push_str(&format!(
            "print(\"{0}:\", result.as_numpy(\"{0}\"))\n",
            o.name
        ));
    }

    // Written by hand, not with serde_json, to keep the fields in protocol order.
    let tensors: Vec<String> = inputs
        .iter()
        .map(|(spec, shape, values)| {
            let field = contents_field(&spec.datatype);
            let values: Vec<String> = match field {
                "bool_contents" => values.iter().map(|v| (*v != 0.0).to_string()).collect(),
                "fp32_contents" | "fp64_contents" => numbers(values),
                _ => values.iter().map(|v| (*v as i64).to_string()).collect(),
            };
            let shape: Vec<String> = shape.iter().map(i64::to_string).collect();
            format!(
                r#"{{"name":"{}","datatype":"{}","shape":[{}],"contents":{{"{field}":[{}]}}}}"#,
                spec.name,
                spec.datatype,
                shape.join(","),
                values.join(",")
            )
        })
        .collect();
    let body = format!(
        r#"{{"model_name":"{model}","inputs":[{}]}}"#,
        tensors.join(",")
    );
    let grpcurl = format!(
        "grpcurl -plaintext -d '{body}' {gateway} inference.GRPCInferenceService/ModelInfer"
    );

    let mut kiln = format!("kiln predict {model}");
    if gateway.to_string() != DEFAULT_GATEWAY {
        kiln.push_str(&format!(" --gateway http://{gateway}"));
    }
    if manifest.inputs.len() == 1 {
        kiln.push_str(&format!(" --input '{}'", numbers(&inputs[0].2).join(",")));
    }
    Snippets {
        python: py,
        grpcurl,
        kiln,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> (std::path::PathBuf, Manifest) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1");
        let m = Manifest::read(&dir).unwrap();
        (dir, m)
    }

    #[test]
    fn builds_calls_for_the_demo_model() {
        let (dir, m) = digits();
        let row = reference_row(&dir, &m).expect("reference.csv has rows");
        assert_eq!(row.len(), 64);
        let s = build("127.0.0.1:8001".parse().unwrap(), &m, Some(&row));
        assert!(
            s.python
                .contains("InferInput(\"input\", list(x0.shape), \"FP32\")"),
            "{}",
            s.python
        );
        assert!(s.python.contains(".reshape([1, 64])"), "{}", s.python);
        assert!(s.python.contains("result.as_numpy(\"probabilities\")"));
        assert!(
            s.grpcurl.starts_with("grpcurl -plaintext -d '{"),
            "{}",
            s.grpcurl
        );
        assert!(s.grpcurl.contains("\"fp32_contents\":["), "{}", s.grpcurl);
        assert!(s.grpcurl.contains("\"shape\":[1,64]"), "{}", s.grpcurl);
        // The body is valid JSON with the sample in it.
        let body = s.grpcurl.split('\'').nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["model_name"], "digits");
        assert_eq!(
            json["inputs"][0]["contents"]["fp32_contents"]
                .as_array()
                .unwrap()
                .len(),
            64
        );
        assert!(
            s.kiln.starts_with("kiln predict digits --input '"),
            "{}",
            s.kiln
        );
        assert!(!s.kiln.contains("--gateway"));
        // The kiln line's input parses back to the same 64 values.
        let quoted = s.kiln.split('\'').nth(1).unwrap();
        assert_eq!(crate::input::parse_values(quoted).unwrap().data, row);
        // Another gateway address is passed explicitly; a sample that does not fit gives zeros.
        let s = build("127.0.0.1:5000".parse().unwrap(), &m, Some(&[1.0]));
        assert!(s.kiln.contains("--gateway http://127.0.0.1:5000"));
        assert!(s.kiln.contains("'0,0,0"));
    }
}
