//! Inference through the worker's gRPC service, end to end, on the real digits package: parity
//! with onnxruntime, both tensor encodings, metadata, config, statistics, streaming, health and
//! metrics.

mod common;

use common::*;
use kiln_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use kiln_proto::inference::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_inference_matches_onnxruntime() {
    let mut f = ready_worker(config("w-raw")).await;
    let data = heldout();
    // Every held-out row, in batches of the model's max batch size (64) and a ragged tail.
    for start in (0..data.inputs.len()).step_by(64) {
        let end = (start + 64).min(data.inputs.len());
        let resp = f
            .client
            .model_infer(raw_request(&data.inputs[start..end]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.id, "req-1");
        assert_eq!(resp.model_name, "digits");
        assert_eq!(resp.model_version, "1");
        assert!(resp.outputs.iter().all(|o| o.contents.is_none()));
        assert_eq!(resp.outputs[0].datatype, "INT64");
        assert_eq!(resp.outputs[0].shape, vec![(end - start) as i64]);
        assert_eq!(resp.outputs[1].datatype, "FP32");
        assert_eq!(resp.outputs[1].shape, vec![(end - start) as i64, 10]);
        let (labels, probs) = raw_outputs(&resp);
        assert_parity(&data, start, &labels, &probs);
    }
    // Accuracy as trained: 441/450.
    let mut req = raw_request(&data.inputs[..64]);
    req.model_version = String::new(); // "" = the highest loaded version
    let resp = f.client.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.model_version, "1");
    let (labels, _) = raw_outputs(&resp);
    let correct = labels
        .iter()
        .zip(&data.labels)
        .filter(|(a, b)| a == b)
        .count();
    assert!(correct >= 62, "{correct}/64 correct");
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_inference_returns_typed_requested_outputs() {
    let mut f = ready_worker(config("w-typed")).await;
    let data = heldout();
    let rows = &data.inputs[10..15];
    let req = ModelInferRequest {
        model_name: "digits".into(),
        id: "typed".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![5, 64],
            contents: Some(InferTensorContents {
                fp32_contents: rows.iter().flatten().copied().collect(),
                ..InferTensorContents::default()
            }),
            ..InferInputTensor::default()
        }],
        outputs: vec![
            InferRequestedOutputTensor {
                name: "probabilities".into(),
                ..InferRequestedOutputTensor::default()
            },
            InferRequestedOutputTensor {
                name: "label".into(),
                ..InferRequestedOutputTensor::default()
            },
        ],
        // perf_analyzer sends this; the worker ignores parameters it does not know.
        parameters: [(
            "triton_enable_empty_final_response".to_string(),
            InferParameter {
                parameter_choice: Some(infer_parameter::ParameterChoice::BoolParam(true)),
            },
        )]
        .into(),
        ..ModelInferRequest::default()
    };
    let resp = f.client.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.id, "typed");
    assert!(resp.raw_output_contents.is_empty());
    assert!(resp.parameters.is_empty());
    let names: Vec<_> = resp.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities", "label"]);
    let probs = &resp.outputs[0].contents.as_ref().unwrap().fp32_contents;
    let labels = &resp.outputs[1].contents.as_ref().unwrap().int64_contents;
    assert_parity(&data, 10, labels, probs);

    // One raw output requested: exactly that one comes back.
    let mut req = raw_request(&data.inputs[..3]);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "label".into(),
        ..InferRequestedOutputTensor::default()
    }];
    let resp = f.client.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.raw_output_contents.len(), 1);
    assert_eq!(
        decode_i64(&resp.raw_output_contents[0]),
        data.ort_label[..3]
    );
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_config_describe_the_manifest() {
    let mut f = ready_worker(config("w-meta")).await;
    let c = &mut f.client;
    assert!(
        c.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let server = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "kiln-worker");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        server.extensions,
        [
            "classification",
            "logging",
            "model_configuration",
            "schedule_policy",
            "statistics"
        ]
    );

    for version in ["1", ""] {
        let ready = c
            .model_ready(ModelReadyRequest {
                name: "digits".into(),
                version: version.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ready.ready);
    }
    let not_ready = c
        .model_ready(ModelReadyRequest {
            name: "digits".into(),
            version: "7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!not_ready.ready);

    let meta = c
        .model_metadata(ModelMetadataRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "digits");
    assert_eq!(meta.versions, ["1"]);
    assert_eq!(meta.platform, "onnx");
    assert_eq!(meta.inputs.len(), 1);
    assert_eq!(
        (
            meta.inputs[0].name.as_str(),
            meta.inputs[0].datatype.as_str()
        ),
        ("input", "FP32")
    );
    assert_eq!(meta.inputs[0].shape, vec![-1, 64]);
    assert_eq!(meta.outputs[0].name, "label");
    assert_eq!(meta.outputs[0].datatype, "INT64");
    assert_eq!(meta.outputs[0].shape, vec![-1]);
    assert_eq!(meta.outputs[1].shape, vec![-1, 10]);

    let config = c
        .model_config(ModelConfigRequest {
            name: "digits".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.name, "digits");
    assert_eq!(config.platform, "onnxruntime_onnx");
    assert_eq!(config.backend, "kiln");
    assert_eq!(config.max_batch_size, 64);
    assert_eq!(config.input[0].name, "input");
    assert_eq!(config.input[0].data_type, DataType::TypeFp32 as i32);
    assert_eq!(config.input[0].dims, vec![64]);
    assert_eq!(config.output[0].data_type, DataType::TypeInt64 as i32);
    assert!(config.output[0].dims.is_empty());
    assert_eq!(config.output[1].dims, vec![10]);
    let batching = config.dynamic_batching.unwrap();
    assert_eq!(batching.max_queue_delay_microseconds, 0);
    assert!(batching.preferred_batch_size.is_empty());
    assert_eq!(batching.default_queue_policy.unwrap().max_queue_size, 1024);
    assert_eq!(config.instance_group[0].count, 2);

    let index = c
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), 1);
    assert_eq!(
        (
            index.models[0].name.as_str(),
            index.models[0].version.as_str(),
            index.models[0].state.as_str()
        ),
        ("digits", "1", "READY")
    );

    let err = c
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "digits".into(),
            ..RepositoryModelLoadRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("Admin API"), "{}", err.message());
    let err = c
        .repository_model_unload(RepositoryModelUnloadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    for (name, version) in [("nope", ""), ("digits", "9")] {
        let err = c
            .model_metadata(ModelMetadataRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let err = c
            .model_config(ModelConfigRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    f.worker.shutdown().await;
}

fn stats_of(resp: &ModelStatisticsResponse) -> &ModelStatistics {
    resp.model_stats
        .iter()
        .find(|s| s.name == "digits" && s.version == "1")
        .expect("digits/1 statistics")
}

async fn statistics(
    c: &mut kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::transport::Channel,
    >,
    name: &str,
    version: &str,
) -> ModelStatisticsResponse {
    c.model_statistics(ModelStatisticsRequest {
        name: name.into(),
        version: version.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_every_request() {
    let mut f = ready_worker(config("w-stats")).await;
    let data = heldout();
    // perf_analyzer asks with an empty name, meaning every model.
    let before = statistics(&mut f.client, "", "").await;
    let b = stats_of(&before).clone();
    for _ in 0..3 {
        f.client
            .model_infer(raw_request(&data.inputs[..2]))
            .await
            .unwrap();
    }
    let mut bad = raw_request(&data.inputs[..2]);
    bad.inputs[0].datatype = "FP64".into();
    f.client.model_infer(bad).await.unwrap_err();

    let bi = b.inference_stats.unwrap_or_default();
    let count = |d: &Option<StatisticDuration>| d.as_ref().map_or(0, |d| d.count);
    for (name, version) in [("", ""), ("digits", ""), ("digits", "1")] {
        let after = statistics(&mut f.client, name, version).await;
        let a = stats_of(&after);
        let ai = a.inference_stats.unwrap();
        assert_eq!(count(&ai.success) - count(&bi.success), 3);
        assert_eq!(
            count(&ai.queue) - count(&bi.queue),
            3,
            "queue.count rises per request"
        );
        assert_eq!(count(&ai.compute_infer) - count(&bi.compute_infer), 3);
        assert_eq!(count(&ai.compute_input) - count(&bi.compute_input), 3);
        assert_eq!(count(&ai.compute_output) - count(&bi.compute_output), 3);
        assert_eq!(count(&ai.fail) - count(&bi.fail), 1);
        assert_eq!(a.inference_count - b.inference_count, 6);
        assert_eq!(a.execution_count - b.execution_count, 3);
        assert!(ai.compute_infer.as_ref().unwrap().ns > 0);
        assert!(a.last_inference > 0);
    }
    let err = f
        .client
        .model_statistics(ModelStatisticsRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The same counts in Prometheus form, under Triton's names, read from the same counters.
    let metrics = http_get(f.worker.http_addr, "/metrics").await;
    let after = statistics(&mut f.client, "digits", "1").await;
    let a = stats_of(&after);
    let ai = a.inference_stats.unwrap();
    let us = |d: &Option<StatisticDuration>| d.as_ref().map_or(0, |d| d.ns / 1000);
    let l = "{model=\"digits\",version=\"1\"}";
    let expected = [
        format!("nv_inference_request_success{l} {}", count(&ai.success)),
        format!("nv_inference_count{l} {}", a.inference_count),
        format!("nv_inference_exec_count{l} {}", a.execution_count),
        format!("nv_inference_request_duration_us{l} {}", us(&ai.success)),
        format!("nv_inference_queue_duration_us{l} {}", us(&ai.queue)),
        format!(
            "nv_inference_compute_input_duration_us{l} {}",
            us(&ai.compute_input)
        ),
        format!(
            "nv_inference_compute_infer_duration_us{l} {}",
            us(&ai.compute_infer)
        ),
        format!(
            "nv_inference_compute_output_duration_us{l} {}",
            us(&ai.compute_output)
        ),
        format!("nv_inference_pending_request_count{l} 0"),
        "nv_inference_request_failure{model=\"digits\",version=\"1\",reason=\"OTHER\"} 1".into(),
        "nv_inference_request_failure{model=\"digits\",version=\"1\",reason=\"REJECTED\"} 0".into(),
        format!("kiln_inference_expired_in_queue_total{l} 0"),
        format!("kiln_inference_queue_capacity{l} 1024"),
        format!(
            "kiln_inference_request_duration_seconds_count{l} {}",
            count(&ai.success)
        ),
    ];
    for line in expected {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        http_get(f.worker.http_addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_infer_answers_each_request() {
    let mut f = ready_worker(config("w-stream")).await;
    let data = heldout();
    let mut bad = raw_request(&data.inputs[..1]);
    bad.id = "bad".into();
    bad.inputs[0].shape = vec![1, 63];
    let mut good = raw_request(&data.inputs[..4]);
    good.id = "good".into();
    let requests = vec![good.clone(), bad, good];
    let mut responses = f
        .client
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = responses.message().await.unwrap() {
        got.push(r);
    }
    assert_eq!(got.len(), 3);
    assert!(got[0].error_message.is_empty());
    let (labels, probs) = raw_outputs(got[0].infer_response.as_ref().unwrap());
    assert_parity(&data, 0, &labels, &probs);
    assert!(
        got[1].error_message.contains("\"input\""),
        "{}",
        got[1].error_message
    );
    assert_eq!(got[1].infer_response.as_ref().unwrap().id, "bad");
    assert!(got[2].error_message.is_empty());
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let f = ready_worker(config("w-health")).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.worker.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "inference.GRPCInferenceService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    assert!(
        http_get(f.worker.http_addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    let mut served = kiln_worker::SERVED.to_vec();
    served.sort();
    assert_eq!(names, served);
    f.worker.shutdown().await;
}
