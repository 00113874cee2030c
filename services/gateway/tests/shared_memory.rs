//! Triton's system shared memory extension on the gateway (`--shared-memory`): registration,
//! inputs read from a region into the forwarded request, outputs written into a region, and
//! the refusals.

mod common;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use common::*;
use kiln_proto::inference::infer_parameter::ParameterChoice;
use kiln_proto::inference::model_infer_request::InferRequestedOutputTensor;
use kiln_proto::inference::*;
use tonic::Code;

fn params(region: &str, offset: i64, size: i64) -> HashMap<String, InferParameter> {
    let p = |c| InferParameter {
        parameter_choice: Some(c),
    };
    HashMap::from([
        (
            "shared_memory_region".to_string(),
            p(ParameterChoice::StringParam(region.into())),
        ),
        (
            "shared_memory_offset".to_string(),
            p(ParameterChoice::Int64Param(offset)),
        ),
        (
            "shared_memory_byte_size".to_string(),
            p(ParameterChoice::Int64Param(size)),
        ),
    ])
}

fn register_request(
    name: &str,
    key: &str,
    offset: u64,
    byte_size: u64,
) -> SystemSharedMemoryRegisterRequest {
    SystemSharedMemoryRegisterRequest {
        name: name.into(),
        key: key.into(),
        offset,
        byte_size,
    }
}

#[tokio::test]
async fn tensors_travel_through_registered_regions() {
    let EchoSetup {
        worker: _worker,
        gw,
        mut client,
        ..
    } = echo_setup(|c| {
        c.shared_memory = true;
        c.max_message_bytes = 2048;
    })
    .await;

    // A POSIX shared memory object: a file under /dev/shm, 4 KiB, the input at offset 256.
    let mut object = tempfile::Builder::new()
        .prefix("kiln-shm-test-")
        .tempfile_in("/dev/shm")
        .unwrap();
    object.as_file().set_len(4096).unwrap();
    let key = format!("/{}", object.path().file_name().unwrap().to_str().unwrap());
    let input = four_floats();
    object.seek(SeekFrom::Start(256)).unwrap();
    object.write_all(&input).unwrap();
    object.flush().unwrap();

    // Region "data" = bytes 128.. of the object.
    client
        .system_shared_memory_register(register_request("data", &key, 128, 3968))
        .await
        .unwrap();
    let again = client
        .system_shared_memory_register(register_request("data", &key, 0, 16))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    for (bad_key, offset, size) in [
        ("/../etc/passwd", 0, 16),
        (key.as_str(), 4000, 200),
        ("/kiln-no-such-object", 0, 16),
    ] {
        let err = client
            .system_shared_memory_register(register_request("x", bad_key, offset, size))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{bad_key} {offset} {size}: {err:?}"
        );
    }
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.regions.len(), 1);
    assert_eq!(status.regions["data"].byte_size, 3968);
    assert_eq!(status.regions["data"].key, key);

    // The input from region offset 128 (object offset 256); the echoed output to region offset
    // 1024 (object offset 1152).
    let mut req = request("m", "1", Bytes::new());
    req.raw_input_contents.clear();
    req.inputs[0].parameters = params("data", 128, 16);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "x".into(),
        parameters: params("data", 1024, 64),
    }];
    let resp = client.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].name, "x");
    assert_eq!(
        resp.raw_output_contents,
        [Bytes::new()],
        "the output is in the region"
    );
    let mut written = [0u8; 16];
    object.seek(SeekFrom::Start(1152)).unwrap();
    object.read_exact(&mut written).unwrap();
    assert_eq!(
        &written[..],
        &input[..],
        "the worker got the region's bytes, and they came back"
    );

    // Past the region's end, an unknown region, an output too small.
    let mut past = request("m", "1", Bytes::new());
    past.raw_input_contents.clear();
    past.inputs[0].parameters = params("data", 3960, 16);
    let err = client.model_infer(past).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("pass the end of region"), "{err:?}");
    let mut unknown = request("m", "1", Bytes::new());
    unknown.raw_input_contents.clear();
    unknown.inputs[0].parameters = params("nope", 0, 16);
    let err = client.model_infer(unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut small = request("m", "1", four_floats());
    small.outputs = vec![InferRequestedOutputTensor {
        name: "x".into(),
        parameters: params("data", 0, 8),
    }];
    let err = client.model_infer(small).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A region may hold more than a request could carry: reading it is capped the same way.
    let mut big = request("m", "1", Bytes::new());
    big.raw_input_contents.clear();
    big.inputs[0].parameters = params("data", 0, 3000);
    let err = client.model_infer(big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-message-bytes"), "{err:?}");

    let meta = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        meta.extensions.iter().any(|e| e == "system_shared_memory"),
        "{meta:?}"
    );
    // CUDA: nothing to clear, nothing to register.
    client
        .cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest::default())
        .await
        .unwrap();
    let err = client
        .cuda_shared_memory_register(CudaSharedMemoryRegisterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest::default())
        .await
        .unwrap();
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.regions.is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn without_the_flag_shared_memory_is_refused_by_name() {
    let EchoSetup {
        worker: a,
        gw,
        mut client,
        ..
    } = echo_setup(|_| {}).await;
    let err = client
        .system_shared_memory_register(register_request("data", "/x", 0, 16))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("--shared-memory"), "{err:?}");
    let mut req = request("m", "1", Bytes::new());
    req.raw_input_contents.clear();
    req.inputs[0].parameters = params("data", 0, 16);
    let err = client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert_eq!(a.calls(), 0);
    // Plain requests are untouched.
    client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap();
    gw.shutdown().await;
}
