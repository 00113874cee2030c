//! Inputs the fuzz targets (`fuzz/`) crashed on, kept as regression tests. A loader panic would
//! be caught by `Model::from_parts` and returned as "loader panicked", so each test checks for the
//! specific error instead.

use kiln_model::onnx::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto, ValueInfoProto};
use kiln_model::{Backend, Manifest, Model, ModelError};
use prost::Message;

fn manifest() -> Manifest {
    Manifest::parse(
        "name='t'\nversion='1'\nmax_batch_size=8\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[3]\n[[outputs]]\nname='y'\ndatatype='FP32'\ndims=[3]\n",
    )
    .unwrap()
}

fn onnx_error(model: &[u8]) -> String {
    match Model::from_parts(manifest(), model, Backend::Flex) {
        Err(ModelError::Onnx(reason)) => reason,
        Err(other) => panic!("expected an ONNX error, got {other}"),
        Ok(_) => panic!("the model loaded"),
    }
}

/// fuzz target `onnx_load`: an initializer with 24 dims whose product overflows `usize` panicked
/// in `decode_tensor` ("attempt to multiply with overflow"; the minimized crash input).
#[test]
fn initializer_dims_overflowing_the_element_count_are_refused() {
    const CRASH: &[u8] = b"\x08\x08\x3a\x3a\x71\x0a\x2f\x0a\x01\x53\x12\x01\x59\x22\x0f\x43\
\x6f\x6e\x73\x74\x61\x6e\x74\x4f\x66\x53\x68\x61\x70\x65\x2a\x1e\
\x0a\x08\x12\x06\x75\x6e\x6b\x5f\x5f\x30\x0a\x08\x12\x06\x75\x6e\
\x6b\x5f\x5f\x31\x0a\x08\x12\x06\x75\x6e\x6b\x5f\x5f\x32\x42\x04\
\x0a\x00\x10\x11";
    let reason = onnx_error(CRASH);
    assert!(reason.contains("too many elements"), "{reason}");
}

/// The same overflow in a release build wrapped the count to 0 instead, and an INT64 initializer
/// of shape [2^32, 2^32] with no data loaded as a constant whose shape its data does not fill.
#[test]
fn an_initializer_of_wrapping_shape_and_no_data_is_refused() {
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: None,
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            initializer: vec![TensorProto {
                name: Some("w".into()),
                dims: vec![1 << 32, 1 << 32],
                data_type: Some(7), // INT64
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("x")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let reason = onnx_error(&model);
    assert!(reason.contains("too many elements"), "{reason}");
}

/// Sizes read from request values: a `ConstantOfShape` whose shape is an input would have
/// allocated whatever a caller asked for (an allocation that fails aborts the worker); it fails
/// the request instead, and sensible shapes still work.
#[test]
fn a_shape_from_the_request_cannot_allocate_without_bound() {
    use kiln_model::onnx::NodeProto;
    use kiln_model::{HostData, HostTensor};
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: None,
    };
    let onnx = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["shape".into()],
                output: vec!["y".into()],
                name: Some("fill".into()),
                op_type: Some("ConstantOfShape".into()),
                domain: Some(String::new()),
                attribute: vec![],
            }],
            input: vec![vi("shape")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let manifest = Manifest::parse(
        "name='t'\nversion='1'\n[[inputs]]\nname='shape'\ndatatype='INT64'\ndims=[2]\n\
         [[outputs]]\nname='y'\ndatatype='FP32'\ndims=[-1, -1]\n",
    )
    .unwrap();
    let model = Model::from_parts(manifest, &onnx, Backend::Flex).unwrap();
    let run = |dims: [i64; 2]| {
        let shape = HostTensor {
            shape: vec![2],
            data: HostData::I64(dims.to_vec()),
        };
        model.infer(vec![("shape".into(), shape)])
    };
    let err = run([1 << 20, 1 << 20]).unwrap_err();
    assert!(
        matches!(&err, ModelError::Runtime { op, .. } if op == "ConstantOfShape"),
        "{err}"
    );
    assert!(err.to_string().contains("elements"), "{err}");
    let out = run([2, 3]).unwrap();
    assert_eq!(out[0].1.shape, [2, 3]);
    assert_eq!(out[0].1.data, HostData::F32(vec![0.0; 6]));
}
