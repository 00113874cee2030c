//! Unit tests of request decoding and response encoding (no model needed).

use super::*;
use kiln_proto::inference::InferParameter;
use kiln_proto::inference::infer_parameter::ParameterChoice;
use kiln_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

const MANIFEST: &str = r#"
name = "m"
version = "1"
max_batch_size = 4
[[inputs]]
name = "x"
datatype = "FP32"
dims = [2]
[[inputs]]
name = "ids"
datatype = "INT64"
dims = [-1]
[[outputs]]
name = "y"
datatype = "FP32"
dims = [2]
[[outputs]]
name = "label"
datatype = "INT64"
dims = []
"#;

fn manifest() -> Manifest {
    Manifest::parse(MANIFEST).unwrap()
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..InferInputTensor::default()
    }
}

fn f32_raw(v: &[f32]) -> Bytes {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn i64_raw(v: &[i64]) -> Bytes {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// A valid raw request of batch 2.
fn raw_request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![input("x", "FP32", &[2, 2]), input("ids", "INT64", &[2, 3])],
        raw_input_contents: vec![f32_raw(&[1.0, 2.0, 3.0, 4.0]), i64_raw(&[1, 2, 3, 4, 5, 6])],
        ..ModelInferRequest::default()
    }
}

fn expect_invalid(req: &mut ModelInferRequest, needle: &str) {
    let err = decode_request(&manifest(), req).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

#[test]
fn decodes_raw_inputs_in_manifest_order() {
    let mut req = raw_request();
    req.inputs.reverse();
    req.raw_input_contents.reverse();
    let d = decode_request(&manifest(), &mut req).unwrap();
    assert!(d.raw);
    assert_eq!(d.batch, 2);
    assert_eq!(d.inputs[0].0, "x");
    assert_eq!(d.inputs[0].1.shape, vec![2, 2]);
    assert_eq!(d.inputs[1].1.data, HostData::I64(vec![1, 2, 3, 4, 5, 6]));
    assert_eq!(d.outputs, [wanted(0, None), wanted(1, None)]);
}

#[test]
fn decodes_typed_inputs() {
    let mut x = input("x", "FP32", &[1, 2]);
    x.contents = Some(InferTensorContents {
        fp32_contents: vec![0.5, 1.5],
        ..InferTensorContents::default()
    });
    let mut ids = input("ids", "INT64", &[1, 1]);
    ids.contents = Some(InferTensorContents {
        int64_contents: vec![7],
        ..InferTensorContents::default()
    });
    let mut req = ModelInferRequest {
        inputs: vec![x, ids],
        outputs: vec![InferRequestedOutputTensor {
            name: "label".into(),
            ..InferRequestedOutputTensor::default()
        }],
        ..ModelInferRequest::default()
    };
    let d = decode_request(&manifest(), &mut req).unwrap();
    assert!(!d.raw);
    assert_eq!(d.inputs[0].1.data, HostData::F32(vec![0.5, 1.5]));
    assert_eq!(d.outputs, [wanted(1, None)]);
}

#[test]
fn rejects_bad_inputs_naming_the_tensor() {
    let mut r = raw_request();
    r.inputs[0].datatype = "FP64".into();
    expect_invalid(&mut r, "\"x\": expected datatype FP32, got \"FP64\"");

    let mut r = raw_request();
    r.inputs[0].shape = vec![2, 3];
    expect_invalid(
        &mut r,
        "\"x\": shape [2, 3] does not match the model's [-1, 2]",
    );

    let mut r = raw_request();
    r.inputs[0].shape = vec![2];
    expect_invalid(&mut r, "\"x\": shape");

    let mut r = raw_request();
    r.inputs[0].shape = vec![5, 2];
    r.raw_input_contents[0] = f32_raw(&[0.0; 10]);
    expect_invalid(&mut r, "\"x\": batch size 5");

    let mut r = raw_request();
    r.inputs[0].shape = vec![0, 2];
    expect_invalid(&mut r, "\"x\": batch size 0");

    let mut r = raw_request();
    r.inputs[1].shape = vec![1, 6];
    r.raw_input_contents[1] = i64_raw(&[1, 2, 3, 4, 5, 6]);
    expect_invalid(&mut r, "\"ids\": batch size 1 differs from input \"x\"'s 2");

    let mut r = raw_request();
    r.raw_input_contents[0] = f32_raw(&[1.0, 2.0, 3.0]);
    expect_invalid(&mut r, "\"x\": raw_input_contents: expected 16 bytes");

    let mut r = raw_request();
    r.inputs.pop();
    r.raw_input_contents.pop();
    expect_invalid(&mut r, "\"ids\": missing");

    let mut r = raw_request();
    r.inputs.push(input("extra", "FP32", &[1]));
    r.raw_input_contents.push(f32_raw(&[1.0]));
    expect_invalid(
        &mut r,
        "\"extra\": unknown input; the model's inputs are [x, ids]",
    );

    let mut r = raw_request();
    r.inputs[1].name = "x".into();
    expect_invalid(&mut r, "\"x\"");

    let mut r = raw_request();
    r.inputs[0].shape = vec![2, -1];
    expect_invalid(&mut r, "negative");

    let mut r = raw_request();
    r.inputs[1].shape = vec![4, i64::MAX];
    expect_invalid(&mut r, "too many elements");
}

#[test]
fn rejects_malformed_requests() {
    let mut r = raw_request();
    r.raw_input_contents.pop();
    expect_invalid(&mut r, "1 raw_input_contents for 2 inputs");

    let mut r = raw_request();
    r.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0; 4],
        ..InferTensorContents::default()
    });
    expect_invalid(&mut r, "typed contents");

    let mut r = raw_request();
    r.inputs.iter_mut().for_each(|i| i.contents = None);
    r.raw_input_contents.clear();
    expect_invalid(&mut r, "expected 4 values in contents.fp32_contents, got 0");

    let mut r = raw_request();
    r.outputs = vec![InferRequestedOutputTensor {
        name: "nope".into(),
        ..InferRequestedOutputTensor::default()
    }];
    expect_invalid(&mut r, "\"nope\": unknown output");
}

fn wanted(index: usize, class_count: Option<usize>) -> Requested {
    Requested { index, class_count }
}

fn parameter(choice: ParameterChoice) -> std::collections::HashMap<String, InferParameter> {
    [(
        String::new(),
        InferParameter {
            parameter_choice: Some(choice),
        },
    )]
    .into_iter()
    .collect()
}

#[test]
fn classification_and_shared_memory_parameters() {
    // tritonclient's InferRequestedOutput("y", class_count=1): top entry per item, as BYTES.
    let mut r = raw_request();
    let mut classification = parameter(ParameterChoice::Int64Param(1));
    classification.insert(
        crate::classify::PARAMETER.into(),
        classification[""].clone(),
    );
    r.outputs = vec![InferRequestedOutputTensor {
        name: "y".into(),
        parameters: classification,
    }];
    let decoded = decode_request(&manifest(), &mut r).unwrap();
    assert_eq!(decoded.outputs, [wanted(0, Some(1))]);
    let y = HostTensor {
        shape: vec![2, 2],
        data: HostData::F32(vec![0.25, 0.75, 0.5, 0.125]),
    };
    let mut resp = ModelInferResponse::default();
    encode_response(
        &mut resp,
        &manifest(),
        &decoded.outputs,
        true,
        vec![("y".into(), y)],
    )
    .unwrap();
    assert_eq!(resp.outputs[0].datatype, "BYTES");
    assert_eq!(resp.outputs[0].shape, [2, 1]);
    let strings =
        HostTensor::from_raw(Datatype::Bytes, vec![2, 1], &resp.raw_output_contents[0]).unwrap();
    assert_eq!(
        strings.data,
        HostData::Bytes(vec![b"0.750000:1".to_vec(), b"0.500000:0".to_vec()])
    );

    let mut r = raw_request();
    let mut bad = parameter(ParameterChoice::Int64Param(-2));
    bad.insert(crate::classify::PARAMETER.into(), bad[""].clone());
    r.outputs = vec![InferRequestedOutputTensor {
        name: "y".into(),
        parameters: bad,
    }];
    expect_invalid(
        &mut r,
        "output tensor \"y\": classification must not be negative",
    );

    // Shared memory is refused by name, before the missing raw contents are noticed.
    let mut r = raw_request();
    r.raw_input_contents.clear();
    r.inputs[1].parameters.insert(
        "shared_memory_region".into(),
        parameter(ParameterChoice::StringParam("input_data".into()))[""].clone(),
    );
    expect_invalid(&mut r, "\"ids\": shared memory is not supported");
    let mut r = raw_request();
    r.outputs = vec![InferRequestedOutputTensor {
        name: "label".into(),
        parameters: [(
            "shared_memory_region".to_string(),
            parameter(ParameterChoice::StringParam("out".into()))[""].clone(),
        )]
        .into_iter()
        .collect(),
    }];
    expect_invalid(&mut r, "\"label\": shared memory is not supported");
}

#[test]
fn encodes_selected_outputs_raw_or_typed() {
    let m = manifest();
    let outputs = || {
        vec![
            (
                "y".to_string(),
                HostTensor {
                    shape: vec![1, 2],
                    data: HostData::F32(vec![0.25, 0.75]),
                },
            ),
            (
                "label".to_string(),
                HostTensor {
                    shape: vec![1],
                    data: HostData::I64(vec![1]),
                },
            ),
        ]
    };
    let mut raw = ModelInferResponse::default();
    encode_response(
        &mut raw,
        &m,
        &[wanted(1, None), wanted(0, None)],
        true,
        outputs(),
    )
    .unwrap();
    assert_eq!(raw.outputs[0].name, "label");
    assert_eq!(raw.outputs[0].datatype, "INT64");
    assert_eq!(raw.outputs[1].shape, vec![1, 2]);
    assert_eq!(raw.raw_output_contents[0], i64_raw(&[1]));
    assert_eq!(raw.raw_output_contents[1], f32_raw(&[0.25, 0.75]));
    assert!(raw.outputs.iter().all(|o| o.contents.is_none()));

    let mut typed = ModelInferResponse::default();
    encode_response(&mut typed, &m, &[wanted(0, None)], false, outputs()).unwrap();
    assert!(typed.raw_output_contents.is_empty());
    assert_eq!(typed.outputs.len(), 1);
    assert_eq!(
        typed.outputs[0].contents.as_ref().unwrap().fp32_contents,
        vec![0.25, 0.75]
    );
}
