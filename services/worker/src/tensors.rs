//! Request tensors in, response tensors out: decoding and validating a `ModelInferRequest`
//! against the model's manifest, and encoding the model's outputs into a `ModelInferResponse`.
//!
//! Everything is checked before the model runs, and every complaint names the tensor: each
//! manifest input present exactly once (no unknown extras), datatype equal to the manifest's,
//! shape `[batch] + dims` with `1 <= batch <= max_batch_size` when the model batches (`dims`
//! alone otherwise; `-1` matches any size), one batch size shared by all inputs, raw byte length
//! or typed value count equal to what the shape needs, and raw and typed contents never mixed.
//!
//! Outputs mirror the request's encoding (raw in, raw out; typed in, typed out) so that
//! tritonclient and perf_analyzer, which send raw, read `raw_output_contents`, and clients that
//! send typed contents get typed contents back. Requested outputs come back in request order;
//! with none requested, every output in manifest order. An output requested with Triton's
//! `classification` parameter comes back as its top entries ([`crate::classify`]). Tensors in
//! shared memory are refused by name: the gateway serves shared memory (it is local to the
//! caller's host) and forwards tensors in the request.

use bytes::Bytes;
use kiln_model::{HostData, HostTensor, Manifest, TensorSpec};
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::model_infer_response::InferOutputTensor;
use kiln_proto::inference::{InferTensorContents, ModelInferRequest, ModelInferResponse};

use crate::classify;
use crate::error::WorkerError;
use crate::executor::Tensors;

/// A request's inputs, decoded and checked.
#[derive(Debug)]
pub struct DecodedRequest {
    /// The input tensors, in manifest order.
    pub inputs: Tensors,
    /// The batch size shared by the inputs (1 for models without a batch dimension).
    pub batch: u64,
    /// Whether the inputs came as `raw_input_contents` (outputs then go the same way).
    pub raw: bool,
    /// The outputs to answer with, in response order.
    pub outputs: Vec<Requested>,
}

/// One output to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    /// Index into the manifest's outputs.
    pub index: usize,
    /// Triton's classification: answer with the top this-many entries ([`crate::classify`]).
    pub class_count: Option<usize>,
}

/// Inputs and outputs in shared memory (Triton's `shared_memory_region` parameter) are refused
/// by name rather than misread as missing contents.
const SHARED_MEMORY: &str = "shared_memory_region";
const NO_SHARED_MEMORY_INPUT: &str = "shared memory is not supported by a worker: send the \
     tensor in raw_input_contents, or through a gateway started with --shared-memory";
const NO_SHARED_MEMORY_OUTPUT: &str = "shared memory is not supported by a worker: read the \
     tensor from raw_output_contents, or go through a gateway started with --shared-memory";

fn names(specs: &[TensorSpec]) -> String {
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    format!("[{}]", names.join(", "))
}

fn has_typed(c: &InferTensorContents) -> bool {
    !(c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty())
}

/// The manifest's shape of a tensor as the protocol shows it: `[-1] + dims` when batching.
pub fn protocol_shape(spec: &TensorSpec, max_batch_size: u32) -> Vec<i64> {
    let mut shape = Vec::with_capacity(spec.dims.len() + 1);
    if max_batch_size > 0 {
        shape.push(-1);
    }
    shape.extend_from_slice(&spec.dims);
    shape
}

/// Checks `shape` against the spec; returns it as sizes, with the batch size and element count.
fn check_shape(
    spec: &TensorSpec,
    max_batch_size: u32,
    shape: &[i64],
) -> Result<(Vec<usize>, u64, usize), String> {
    let expected = protocol_shape(spec, max_batch_size);
    let mismatch = || format!("shape {shape:?} does not match the model's {expected:?}");
    if shape.len() != expected.len() {
        return Err(mismatch());
    }
    if shape.iter().any(|d| *d < 0) {
        return Err(format!("shape {shape:?} has a negative dimension"));
    }
    let batch = if max_batch_size > 0 {
        let b = shape[0];
        if b < 1 || b > i64::from(max_batch_size) {
            return Err(format!(
                "batch size {b} (shape {shape:?}) is outside 1..={max_batch_size}"
            ));
        }
        b as u64
    } else {
        1
    };
    let skip = usize::from(max_batch_size > 0);
    for (got, want) in shape[skip..].iter().zip(&spec.dims) {
        if *want != -1 && got != want {
            return Err(mismatch());
        }
    }
    let sizes: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
    let count = sizes
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    Ok((sizes, batch, count))
}

fn exact<T>(name: &str, field: &str, values: Vec<T>, count: usize) -> Result<Vec<T>, WorkerError> {
    if values.len() != count {
        return Err(WorkerError::input(
            name,
            format!(
                "expected {count} values in contents.{field}, got {}",
                values.len()
            ),
        ));
    }
    Ok(values)
}

fn typed_tensor(
    name: &str,
    datatype: Datatype,
    shape: Vec<usize>,
    count: usize,
    c: InferTensorContents,
) -> Result<HostTensor, WorkerError> {
    let data = match datatype {
        Datatype::Fp32 => HostData::F32(exact(name, "fp32_contents", c.fp32_contents, count)?),
        Datatype::Fp64 => HostData::F64(exact(name, "fp64_contents", c.fp64_contents, count)?),
        Datatype::Int32 => HostData::I32(exact(name, "int_contents", c.int_contents, count)?),
        Datatype::Int64 => HostData::I64(exact(name, "int64_contents", c.int64_contents, count)?),
        Datatype::Bool => HostData::Bool(exact(name, "bool_contents", c.bool_contents, count)?),
        Datatype::Uint8 => {
            let values = exact(name, "uint_contents", c.uint_contents, count)?;
            let bytes = values
                .into_iter()
                .map(u8::try_from)
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| WorkerError::input(name, "a UINT8 value is above 255"))?;
            HostData::U8(bytes)
        }
        Datatype::Bytes => {
            let values = exact(name, "bytes_contents", c.bytes_contents, count)?;
            HostData::Bytes(values.into_iter().map(|b| b.to_vec()).collect())
        }
        other => {
            return Err(WorkerError::input(
                name,
                format!("datatype {other} is not supported by this worker"),
            ));
        }
    };
    Ok(HostTensor { shape, data })
}

/// Decodes and validates the inputs and requested outputs of `req` (its tensors are moved out).
pub fn decode_request(
    manifest: &Manifest,
    req: &mut ModelInferRequest,
) -> Result<DecodedRequest, WorkerError> {
    let inputs = std::mem::take(&mut req.inputs);
    let mut raw_contents = std::mem::take(&mut req.raw_input_contents);
    if let Some(t) = inputs
        .iter()
        .find(|t| t.parameters.contains_key(SHARED_MEMORY))
    {
        return Err(WorkerError::input(&t.name, NO_SHARED_MEMORY_INPUT));
    }
    let raw = !raw_contents.is_empty();
    if raw {
        if let Some(t) = inputs
            .iter()
            .find(|t| t.contents.as_ref().is_some_and(has_typed))
        {
            return Err(WorkerError::InvalidRequest(format!(
                "input {:?} has typed contents while the request also has raw_input_contents; \
                 use one encoding for all inputs",
                t.name
            )));
        }
        if raw_contents.len() != inputs.len() {
            return Err(WorkerError::InvalidRequest(format!(
                "{} raw_input_contents for {} inputs: send exactly one per input, in input order",
                raw_contents.len(),
                inputs.len()
            )));
        }
    }
    let specs = &manifest.inputs;
    let mut slots: Vec<Option<HostTensor>> = vec![None; specs.len()];
    let mut batch: Option<(u64, String)> = None;
    for (i, input) in inputs.into_iter().enumerate() {
        let name = input.name;
        let Some(idx) = specs.iter().position(|s| s.name == name) else {
            return Err(WorkerError::input(
                &name,
                format!("unknown input; the model's inputs are {}", names(specs)),
            ));
        };
        if slots[idx].is_some() {
            return Err(WorkerError::input(&name, "given more than once"));
        }
        let spec = &specs[idx];
        if input.datatype != spec.datatype {
            return Err(WorkerError::input(
                &name,
                format!(
                    "expected datatype {}, got {:?}",
                    spec.datatype, input.datatype
                ),
            ));
        }
        let (shape, b, count) = check_shape(spec, manifest.max_batch_size, &input.shape)
            .map_err(|reason| WorkerError::input(&name, reason))?;
        match &batch {
            Some((first, first_name)) if *first != b => {
                return Err(WorkerError::input(
                    &name,
                    format!("batch size {b} differs from input {first_name:?}'s {first}"),
                ));
            }
            Some(_) => {}
            None => batch = Some((b, name.clone())),
        }
        let datatype = spec.dtype();
        let tensor = if raw {
            let bytes = std::mem::take(&mut raw_contents[i]);
            HostTensor::from_raw(datatype, shape, &bytes)
                .map_err(|e| WorkerError::input(&name, format!("raw_input_contents: {e}")))?
        } else {
            let contents = input.contents.unwrap_or_default();
            typed_tensor(&name, datatype, shape, count, contents)?
        };
        slots[idx] = Some(tensor);
    }
    let mut decoded = Vec::with_capacity(specs.len());
    for (spec, slot) in specs.iter().zip(slots) {
        match slot {
            Some(t) => decoded.push((spec.name.clone(), t)),
            None => {
                return Err(WorkerError::input(
                    &spec.name,
                    "missing: the model requires this input",
                ));
            }
        }
    }
    let outputs = requested_outputs(manifest, req)?;
    Ok(DecodedRequest {
        inputs: decoded,
        batch: batch.map_or(1, |(b, _)| b),
        raw,
        outputs,
    })
}

fn requested_outputs(
    manifest: &Manifest,
    req: &ModelInferRequest,
) -> Result<Vec<Requested>, WorkerError> {
    if req.outputs.is_empty() {
        return Ok((0..manifest.outputs.len())
            .map(|index| Requested {
                index,
                class_count: None,
            })
            .collect());
    }
    let mut selected: Vec<Requested> = Vec::with_capacity(req.outputs.len());
    for out in &req.outputs {
        let invalid = |reason: String| WorkerError::InvalidOutput {
            name: out.name.clone(),
            reason,
        };
        let Some(index) = manifest.outputs.iter().position(|s| s.name == out.name) else {
            return Err(invalid(format!(
                "unknown output; the model's outputs are {}",
                names(&manifest.outputs)
            )));
        };
        if selected.iter().any(|r| r.index == index) {
            return Err(invalid("requested more than once".into()));
        }
        if out.parameters.contains_key(SHARED_MEMORY) {
            return Err(invalid(NO_SHARED_MEMORY_OUTPUT.into()));
        }
        let class_count = classify::class_count(out).map_err(invalid)?;
        if class_count.is_some() {
            classify::check_datatype(manifest.outputs[index].dtype()).map_err(invalid)?;
        }
        selected.push(Requested { index, class_count });
    }
    Ok(selected)
}

fn typed_contents(data: HostData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        HostData::F32(v) => c.fp32_contents = v,
        HostData::F64(v) => c.fp64_contents = v,
        HostData::I32(v) => c.int_contents = v,
        HostData::I64(v) => c.int64_contents = v,
        HostData::U8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        HostData::Bool(v) => c.bool_contents = v,
        HostData::Bytes(v) => c.bytes_contents = v.into_iter().map(Bytes::from).collect(),
    }
    c
}

/// Puts the selected `outputs` (as the model returned them) into `resp`, raw or typed.
pub fn encode_response(
    resp: &mut ModelInferResponse,
    manifest: &Manifest,
    selected: &[Requested],
    raw: bool,
    outputs: Tensors,
) -> Result<(), WorkerError> {
    let mut by_spec: Vec<Option<HostTensor>> = vec![None; manifest.outputs.len()];
    for (name, tensor) in outputs {
        if let Some(idx) = manifest.outputs.iter().position(|s| s.name == name) {
            by_spec[idx] = Some(tensor);
        }
    }
    for requested in selected {
        let name = &manifest.outputs[requested.index].name;
        let mut tensor = by_spec[requested.index].take().ok_or_else(|| {
            WorkerError::Internal(format!("the model produced no output {name:?}"))
        })?;
        if let Some(count) = requested.class_count {
            let labels = &manifest.outputs[requested.index].labels;
            let batched = manifest.max_batch_size > 0;
            tensor = classify::top_k(&tensor, batched, count, labels).map_err(|reason| {
                WorkerError::InvalidOutput {
                    name: name.clone(),
                    reason,
                }
            })?;
        }
        let mut out = InferOutputTensor {
            name: name.clone(),
            datatype: tensor.datatype().as_str().to_string(),
            shape: tensor.shape.iter().map(|d| *d as i64).collect(),
            ..InferOutputTensor::default()
        };
        if raw {
            resp.raw_output_contents.push(Bytes::from(tensor.to_raw()));
        } else {
            out.contents = Some(typed_contents(tensor.data));
        }
        resp.outputs.push(out);
    }
    Ok(())
}

#[cfg(test)]
#[path = "tensors_tests.rs"]
mod tests;
