//! Structured `ModelInferRequest`s built with `arbitrary`: mostly close to what a model version
//! declares (its input names, datatypes, shapes with a batch size around `1..=max_batch_size`,
//! contents of the right size, raw or typed), with every part sometimes wrong (unknown or
//! repeated names, other datatypes, extra or missing dims, negative or huge sizes, contents one
//! short or long, malformed BYTES, mixed encodings, unknown or repeated outputs, odd
//! parameters). Raw protobuf mutation (`infer_request`) rarely gets a request this far; this
//! reaches acceptance, the model, the batcher and the response encoding. Each request is also
//! encoded and decoded again, as on the wire.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use kiln_fuzz::{DATATYPES, TARGETS, raw_size};
use kiln_proto::inference::infer_parameter::ParameterChoice;
use kiln_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use kiln_proto::inference::{InferParameter, InferTensorContents, ModelInferRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The most elements generated for one tensor (larger shapes get truncated contents).
const MAX_ELEMENTS: usize = 64 * 64 * 2;

/// Usually `right`, sometimes something else.
fn mostly<T>(
    u: &mut Unstructured,
    right: T,
    wrong: impl FnOnce(&mut Unstructured) -> Result<T>,
) -> Result<T> {
    if u.ratio(7, 8)? { Ok(right) } else { wrong(u) }
}

fn string(u: &mut Unstructured, choices: &[&str]) -> Result<String> {
    if !choices.is_empty() && u.ratio(3, 4)? {
        Ok(u.choose(choices)?.to_string())
    } else {
        u.arbitrary()
    }
}

fn dim(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=5)? {
        0 => -1,
        1 => 0,
        2 => i64::MAX,
        3 => u.int_in_range(1..=70)?,
        4 => 1 << u.int_in_range(16..=62)?,
        _ => u.arbitrary()?,
    })
}

fn shape(u: &mut Unstructured, dims: &[i64], max_batch: u32) -> Result<Vec<i64>> {
    let mut shape = Vec::with_capacity(dims.len() + 1);
    if max_batch > 0 {
        let batch = mostly(u, 0, |u| dim(u))?;
        shape.push(if batch == 0 {
            u.int_in_range(1..=i64::from(max_batch))?
        } else {
            batch
        });
    }
    for &d in dims {
        let want = if d == -1 { u.int_in_range(0..=5)? } else { d };
        shape.push(mostly(u, want, dim)?);
    }
    match u.int_in_range(0..=15)? {
        0 => {
            shape.pop();
        }
        1 => shape.push(dim(u)?),
        _ => {}
    }
    Ok(shape)
}

fn count_of(shape: &[i64]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(usize::try_from(*d).ok()?))
        .unwrap_or(MAX_ELEMENTS)
        .min(MAX_ELEMENTS)
}

/// `n` plus or minus one, sometimes.
fn about(u: &mut Unstructured, n: usize) -> Result<usize> {
    Ok(match u.int_in_range(0..=15)? {
        0 => n.saturating_sub(1),
        1 => n + 1,
        2 => 0,
        _ => n,
    })
}

fn bytes_elements(u: &mut Unstructured, n: usize) -> Result<Vec<Bytes>> {
    (0..n)
        .map(|_| {
            let len = u.int_in_range(0..=8)?;
            Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
        })
        .collect()
}

fn raw_contents(u: &mut Unstructured, datatype: &str, n: usize) -> Result<Bytes> {
    if datatype == "BYTES" {
        let mut out = Vec::new();
        for item in bytes_elements(u, n)? {
            let len = mostly(u, item.len() as u32, |u| u.arbitrary())?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&item);
        }
        if u.ratio(1, 16)? {
            out.truncate(u.int_in_range(0..=out.len())?);
        }
        return Ok(out.into());
    }
    let len = about(u, n * raw_size(datatype))?;
    let mut out = u.bytes(len.min(u.len()))?.to_vec();
    out.resize(len, 0);
    Ok(out.into())
}

fn typed_contents(u: &mut Unstructured, datatype: &str, n: usize) -> Result<InferTensorContents> {
    let field = mostly(u, datatype.to_string(), |u| string(u, &DATATYPES))?;
    let n = about(u, n)?;
    let mut c = InferTensorContents::default();
    fn fill<T>(
        u: &mut Unstructured,
        n: usize,
        f: impl Fn(&mut Unstructured) -> Result<T>,
    ) -> Result<Vec<T>> {
        (0..n).map(|_| f(u)).collect()
    }
    match field.as_str() {
        "BOOL" => c.bool_contents = fill(u, n, |u| u.arbitrary())?,
        "INT8" | "INT16" | "INT32" => c.int_contents = fill(u, n, |u| u.arbitrary())?,
        "INT64" => c.int64_contents = fill(u, n, |u| u.arbitrary())?,
        "UINT8" | "UINT16" | "UINT32" => {
            c.uint_contents = fill(u, n, |u| mostly(u, 7, |u| u.arbitrary()))?
        }
        "UINT64" => c.uint64_contents = fill(u, n, |u| u.arbitrary())?,
        "FP32" | "FP16" | "BF16" => c.fp32_contents = fill(u, n, |u| u.arbitrary())?,
        "FP64" => c.fp64_contents = fill(u, n, |u| u.arbitrary())?,
        "BYTES" => c.bytes_contents = bytes_elements(u, n)?,
        _ => {}
    }
    Ok(c)
}

fn parameter(u: &mut Unstructured) -> Result<InferParameter> {
    let choice = match u.int_in_range(0..=5)? {
        0 => ParameterChoice::BoolParam(u.arbitrary()?),
        1 => ParameterChoice::Int64Param(u.arbitrary()?),
        2 => ParameterChoice::StringParam(u.arbitrary()?),
        3 => ParameterChoice::DoubleParam(u.arbitrary()?),
        4 => ParameterChoice::Uint64Param(u.arbitrary()?),
        _ => return Ok(InferParameter::default()),
    };
    Ok(InferParameter {
        parameter_choice: Some(choice),
    })
}

fn request(u: &mut Unstructured) -> Result<ModelInferRequest> {
    let target = u.choose(&TARGETS[..])?;
    let m = &target.manifest;
    let mut req = ModelInferRequest {
        model_name: mostly(u, m.name.clone(), |u| u.arbitrary())?,
        model_version: string(u, &["", "1", &m.version])?,
        id: u.arbitrary()?,
        ..ModelInferRequest::default()
    };
    for _ in 0..u.int_in_range(0..=2)? {
        let key = string(u, &["priority", "timeout", "sequence_id"])?;
        req.parameters.insert(key, parameter(u)?);
    }
    let raw = u.arbitrary::<bool>()?;
    let mut order: Vec<usize> = (0..m.inputs.len()).collect();
    match u.int_in_range(0..=15)? {
        0 => {
            order.pop();
        }
        1 => order.push(u.choose_index(m.inputs.len())?),
        2 => order.reverse(),
        _ => {}
    }
    let names: Vec<&str> = m.inputs.iter().map(|s| s.name.as_str()).collect();
    for idx in order {
        let spec = &m.inputs[idx];
        let datatype = mostly(u, spec.datatype.clone(), |u| string(u, &DATATYPES))?;
        let shape = shape(u, &spec.dims, m.max_batch_size)?;
        let n = count_of(&shape);
        let mut input = InferInputTensor {
            name: mostly(u, spec.name.clone(), |u| string(u, &names))?,
            datatype: datatype.clone(),
            shape,
            ..InferInputTensor::default()
        };
        if raw {
            req.raw_input_contents.push(raw_contents(u, &datatype, n)?);
            if u.ratio(1, 32)? {
                input.contents = Some(typed_contents(u, &datatype, n)?);
            }
        } else {
            input.contents = Some(typed_contents(u, &datatype, n)?);
        }
        req.inputs.push(input);
    }
    if raw && u.ratio(1, 16)? {
        if u.arbitrary()? {
            req.raw_input_contents.pop();
        } else {
            req.raw_input_contents.push(Bytes::new());
        }
    }
    let outputs: Vec<&str> = m.outputs.iter().map(|s| s.name.as_str()).collect();
    for _ in 0..u.int_in_range(0..=3)? {
        req.outputs.push(InferRequestedOutputTensor {
            name: string(u, &outputs)?,
            ..InferRequestedOutputTensor::default()
        });
    }
    Ok(req)
}

fuzz_target!(
    init: {
        std::sync::LazyLock::force(&TARGETS);
    },
    |data: &[u8]| {
        let mut u = Unstructured::new(data);
        let Ok(req) = request(&mut u) else {
            return;
        };
        let wire = req.encode_to_vec();
        let decoded = ModelInferRequest::decode(wire.as_slice()).expect("own encoding decodes");
        assert_eq!(decoded.inputs.len(), req.inputs.len(), "protobuf round trip");
        kiln_fuzz::serve(decoded);
    }
);
