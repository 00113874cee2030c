//! Bad requests get the right status and a message naming the tensor, and the worker keeps
//! serving afterwards.

mod common;

use common::*;
use kiln_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use kiln_proto::inference::{InferTensorContents, ModelInferRequest};
use tonic::Code;

struct Case {
    what: &'static str,
    request: ModelInferRequest,
    code: Code,
    needle: &'static str,
}

fn cases(rows: &[Vec<f32>]) -> Vec<Case> {
    let good = || raw_request(rows);
    let mut cases = Vec::new();
    let mut add = |what, request, code, needle| {
        cases.push(Case {
            what,
            request,
            code,
            needle,
        })
    };

    let mut r = good();
    r.model_name = "nope".into();
    add("unknown model", r, Code::NotFound, "\"nope\"");

    let mut r = good();
    r.model_version = "2".into();
    add("unknown version", r, Code::NotFound, "version \"2\"");

    let mut r = good();
    r.inputs[0].datatype = "FP64".into();
    add(
        "wrong datatype",
        r,
        Code::InvalidArgument,
        "\"input\": expected datatype FP32, got \"FP64\"",
    );

    let mut r = good();
    r.inputs[0].shape = vec![rows.len() as i64, 32, 2];
    add("wrong rank", r, Code::InvalidArgument, "\"input\": shape");

    let mut r = good();
    r.inputs[0].shape = vec![rows.len() as i64 * 2, 32];
    add("wrong dims", r, Code::InvalidArgument, "\"input\": shape");

    let mut r = raw_request(&vec![rows[0].clone(); 65]);
    r.id = "too big a batch".into();
    add(
        "batch over max",
        r,
        Code::InvalidArgument,
        "\"input\": batch size 65",
    );

    let mut r = good();
    let raw = r.raw_input_contents[0].slice(4..);
    r.raw_input_contents[0] = raw;
    add(
        "raw length mismatch",
        r,
        Code::InvalidArgument,
        "\"input\": raw_input_contents: expected",
    );

    let mut r = good();
    r.inputs.clear();
    r.raw_input_contents.clear();
    add(
        "missing input",
        r,
        Code::InvalidArgument,
        "\"input\": missing",
    );

    let mut r = good();
    r.inputs.push(InferInputTensor {
        name: "extra".into(),
        datatype: "FP32".into(),
        shape: vec![rows.len() as i64, 64],
        ..InferInputTensor::default()
    });
    r.raw_input_contents.push(r.raw_input_contents[0].clone());
    add(
        "extra input",
        r,
        Code::InvalidArgument,
        "\"extra\": unknown input",
    );

    let mut r = good();
    r.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![0.0; rows.len() * 64],
        ..InferTensorContents::default()
    });
    add(
        "raw and typed mixed",
        r,
        Code::InvalidArgument,
        "typed contents",
    );

    let mut r = good();
    r.raw_input_contents.clear();
    r.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![0.0; 3],
        ..InferTensorContents::default()
    });
    add(
        "typed count mismatch",
        r,
        Code::InvalidArgument,
        "\"input\": expected",
    );

    let mut r = good();
    r.outputs = vec![InferRequestedOutputTensor {
        name: "logits".into(),
        ..InferRequestedOutputTensor::default()
    }];
    add("unknown output", r, Code::InvalidArgument, "\"logits\"");

    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_worker_keeps_serving() {
    let mut f = ready_worker(config("w-bad")).await;
    let data = heldout();
    let rows = &data.inputs[..3];
    for case in cases(rows) {
        let err = f
            .client
            .model_infer(case.request)
            .await
            .expect_err(case.what);
        assert_eq!(err.code(), case.code, "{}: {}", case.what, err.message());
        assert!(
            err.message().contains(case.needle),
            "{}: {:?} not in {:?}",
            case.what,
            case.needle,
            err.message()
        );
    }
    let resp = f
        .client
        .model_infer(raw_request(rows))
        .await
        .expect("a good request after the bad ones")
        .into_inner();
    let (labels, probs) = raw_outputs(&resp);
    assert_parity(&data, 0, &labels, &probs);
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_resource_exhausted() {
    let mut config = config("w-limit");
    config.max_message_bytes = 64 * 1024;
    let mut f = ready_worker(config).await;
    let data = heldout();
    // 64 rows × 64 × 4 bytes = 16 KiB: fine. Pad the request past the limit with a big id.
    let mut req = raw_request(&data.inputs[..64]);
    req.id = "x".repeat(80 * 1024);
    let err = f.client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    let resp = f
        .client
        .model_infer(raw_request(&data.inputs[..64]))
        .await
        .expect("the worker still answers")
        .into_inner();
    let (labels, probs) = raw_outputs(&resp);
    assert_parity(&data, 0, &labels, &probs);
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_not_computed() {
    let mut f = ready_worker(config("w-deadline")).await;
    let data = heldout();
    let mut req = tonic::Request::new(raw_request(&data.inputs[..2]));
    req.set_timeout(std::time::Duration::from_nanos(1));
    let err = f.client.model_infer(req).await.unwrap_err();
    // tonic's server answers CANCELLED when its own timer fires first; the worker's queue answers
    // DEADLINE_EXCEEDED when it sees the expired request first. Either way nothing was computed.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    let stats = f
        .client
        .model_statistics(kiln_proto::inference::ModelStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let infer = stats.model_stats[0].inference_stats.unwrap();
    assert_eq!(infer.success.unwrap().count, 0);
    f.client
        .model_infer(raw_request(&data.inputs[..2]))
        .await
        .expect("the worker still answers");
    f.worker.shutdown().await;
}

/// A request whose queue timeout (Triton's `timeout` parameter, here 1 µs) passes before a
/// compute thread takes it is answered DEADLINE_EXCEEDED, never computed, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_expiring_in_the_queue_is_counted_and_never_computed() {
    use kiln_proto::inference::InferParameter;
    use kiln_proto::inference::infer_parameter::ParameterChoice;
    let mut f = ready_worker(config("w-expire")).await;
    let data = heldout();
    let mut req = raw_request(&data.inputs[..2]);
    req.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Uint64Param(1)),
        },
    );
    let err = f.client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let statistics = |mut c: kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>| async move {
        let s = c
            .model_statistics(kiln_proto::inference::ModelStatisticsRequest::default())
            .await
            .unwrap()
            .into_inner();
        s.model_stats[0].clone()
    };
    let s = statistics(f.client.clone()).await;
    let infer = s.inference_stats.unwrap();
    assert_eq!(
        (infer.success.unwrap().count, infer.fail.unwrap().count),
        (0, 1)
    );
    assert_eq!(s.execution_count, 0, "the model never ran");
    let metrics = http_get(f.worker.http_addr, "/metrics").await;
    for line in [
        "kiln_inference_expired_in_queue_total{model=\"digits\",version=\"1\"} 1\n",
        "nv_inference_request_failure{model=\"digits\",version=\"1\",reason=\"REJECTED\"} 1\n",
        "nv_inference_exec_count{model=\"digits\",version=\"1\"} 0\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    f.client
        .model_infer(raw_request(&data.inputs[..2]))
        .await
        .expect("a request without a timeout still runs");
    assert_eq!(statistics(f.client.clone()).await.execution_count, 1);
    f.worker.shutdown().await;
}
