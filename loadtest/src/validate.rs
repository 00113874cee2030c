//! Output validation (`--validate`): each answer's outputs are compared with the expected
//! outputs of the request's rows ([`crate::inputs`]): every expected output must be in the
//! answer with as many elements, each within `|got − expected| ≤ tol · max(1, |expected|)`
//! (absolute near zero, relative for large values; `--validate-tolerance`, default 1e-5).
//! Outputs that are not expected are ignored; an expected output named `""` is the answer's
//! first output. A mismatch is counted per model as `validation_failed` (the answer is still
//! OK at the gRPC level) with the first mismatch's description.

use std::collections::BTreeMap;

use kiln_proto::datatype::Datatype;
use kiln_proto::inference::ModelInferResponse;
use kiln_proto::inference::model_infer_response::InferOutputTensor;

/// The expected values of a request's outputs, by output name.
pub type ExpectedOutputs = BTreeMap<String, Vec<f64>>;

/// The numbers of output `index` of `response`, from its raw contents or its typed contents.
fn numbers(response: &ModelInferResponse, index: usize) -> Result<Vec<f64>, String> {
    let output: &InferOutputTensor = &response.outputs[index];
    let datatype = Datatype::parse(&output.datatype).ok_or_else(|| {
        format!(
            "output {}: unknown datatype {:?}",
            output.name, output.datatype
        )
    })?;
    if let Some(raw) = response.raw_output_contents.get(index) {
        return decode(datatype, raw).ok_or_else(|| {
            format!(
                "output {}: cannot compare {} values",
                output.name, output.datatype
            )
        });
    }
    let c = output
        .contents
        .as_ref()
        .ok_or_else(|| format!("output {}: no contents", output.name))?;
    let values: Vec<f64> = match datatype {
        Datatype::Fp32 => c.fp32_contents.iter().map(|v| f64::from(*v)).collect(),
        Datatype::Fp64 => c.fp64_contents.clone(),
        Datatype::Int64 => c.int64_contents.iter().map(|v| *v as f64).collect(),
        Datatype::Uint64 => c.uint64_contents.iter().map(|v| *v as f64).collect(),
        Datatype::Bool => c
            .bool_contents
            .iter()
            .map(|v| f64::from(u8::from(*v)))
            .collect(),
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => {
            c.uint_contents.iter().map(|v| f64::from(*v)).collect()
        }
        Datatype::Bytes | Datatype::Fp16 | Datatype::Bf16 => {
            return Err(format!(
                "output {}: cannot compare {}",
                output.name, output.datatype
            ));
        }
        _ => c.int_contents.iter().map(|v| f64::from(*v)).collect(),
    };
    Ok(values)
}

/// Little-endian raw values of `datatype` as numbers (`None`: BYTES, half floats).
pub fn decode(datatype: Datatype, raw: &[u8]) -> Option<Vec<f64>> {
    macro_rules! le {
        ($t:ty) => {
            raw.chunks_exact(size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect()
        };
    }
    Some(match datatype {
        Datatype::Fp32 => le!(f32),
        Datatype::Fp64 => le!(f64),
        Datatype::Int8 => le!(i8),
        Datatype::Int16 => le!(i16),
        Datatype::Int32 => le!(i32),
        Datatype::Int64 => le!(i64),
        Datatype::Uint8 | Datatype::Bool => le!(u8),
        Datatype::Uint16 => le!(u16),
        Datatype::Uint32 => le!(u32),
        Datatype::Uint64 => le!(u64),
        Datatype::Bytes | Datatype::Fp16 | Datatype::Bf16 => return None,
    })
}

/// `None` if `response` matches `expected` within `tolerance`, else the first mismatch.
pub fn compare(
    response: &ModelInferResponse,
    expected: &ExpectedOutputs,
    tolerance: f64,
) -> Option<String> {
    for (name, want) in expected {
        let index = if name.is_empty() {
            (!response.outputs.is_empty()).then_some(0)
        } else {
            response.outputs.iter().position(|o| &o.name == name)
        };
        let Some(index) = index else {
            return Some(format!("output {name:?} missing from the answer"));
        };
        let got = match numbers(response, index) {
            Ok(got) => got,
            Err(why) => return Some(why),
        };
        let name = &response.outputs[index].name;
        if got.len() != want.len() {
            return Some(format!(
                "output {name}: {} values, expected {}",
                got.len(),
                want.len()
            ));
        }
        if let Some((i, (g, w))) = got
            .iter()
            .zip(want)
            .enumerate()
            .find(|(_, (g, w))| (*g - *w).abs() > tolerance * w.abs().max(1.0) || g.is_nan())
        {
            return Some(format!("output {name}[{i}]: got {g}, expected {w}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(values: &[f32]) -> ModelInferResponse {
        ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![values.len() as i64],
                ..Default::default()
            }],
            raw_output_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
            ..Default::default()
        }
    }

    #[test]
    fn compares_within_the_tolerance() {
        let r = response(&[1.0, 2000.0, 0.0]);
        let want = |v: Vec<f64>| BTreeMap::from([("y".to_string(), v)]);
        assert_eq!(compare(&r, &want(vec![1.0, 2000.0, 0.0]), 1e-5), None);
        assert_eq!(
            compare(&r, &want(vec![1.0, 2000.01, 1e-6]), 1e-5),
            None,
            "relative"
        );
        let miss = compare(&r, &want(vec![1.0, 2000.1, 0.0]), 1e-5).unwrap();
        assert!(miss.contains("y[1]: got 2000, expected 2000.1"), "{miss}");
        assert!(
            compare(&r, &want(vec![1.0]), 1e-5)
                .unwrap()
                .contains("3 values")
        );
        let first = BTreeMap::from([(String::new(), vec![1.0, 2000.0, 0.0])]);
        assert_eq!(compare(&r, &first, 0.0), None, "unnamed: the first output");
        let other = BTreeMap::from([("z".to_string(), vec![1.0])]);
        assert!(compare(&r, &other, 1.0).unwrap().contains("missing"));
    }
}
