//! The RPCs besides plain routing: byte-exact forwarding, statistics summed over workers,
//! metadata and config forwarded to the package's replica, repository index, streaming,
//! server metadata, health and metrics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kiln_coord::codec::ReplicaState;
use kiln_coord::{Coordinator, MemoryCoordinator};
use kiln_proto::inference::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn raw_bytes_are_forwarded_unchanged() {
    let EchoSetup {
        worker: _worker,
        gw,
        mut client,
        ..
    } = echo_setup(|_| {}).await;

    // 1 MiB of non-repeating bytes.
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let payload = Bytes::from(payload);
    let response = client
        .model_infer(request("m", "1", payload.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.raw_output_contents.len(), 1);
    assert_eq!(response.raw_output_contents[0], payload);
    assert_eq!(response.id, "req-1");
    assert_eq!(response.outputs[0].shape, [1, 256 * 1024]);
    gw.shutdown().await;
}

#[tokio::test]
async fn model_statistics_sum_every_worker_and_skip_dead_ones() {
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start_with_stats("wa", Behaviour::Echo, 3).await;
    let mut b = FakeWorker::start_with_stats("wb", Behaviour::Echo, 5).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    // A version nobody reports gets a zero entry; a loading replica's worker is asked too.
    register_at(
        &*coord,
        "m",
        "2",
        "wz",
        "127.0.0.1:1",
        ReplicaState::Loading,
    )
    .await;
    let gw = gateway(coord.clone(), |c| c.stats_timeout_ms = 500).await;
    wait_ready(&gw, "m", "1", 2).await;
    let mut client = client(&gw).await;

    let stats_of = |name: &str, version: &str| ModelStatisticsRequest {
        name: name.into(),
        version: version.into(),
    };
    for request in [stats_of("", ""), stats_of("m", ""), stats_of("m", "1")] {
        let all = client
            .model_statistics(request.clone())
            .await
            .unwrap()
            .into_inner()
            .model_stats;
        let v1 = all.iter().find(|s| s.version == "1").unwrap();
        assert_eq!(v1.inference_count, 8, "{request:?}");
        let stats = v1.inference_stats.as_ref().unwrap();
        assert_eq!(stats.queue.unwrap().count, 8);
        assert_eq!(stats.success.unwrap().ns, 8000);
        assert_eq!(v1.last_inference, 5);
        assert_eq!(v1.batch_stats[0].compute_infer.unwrap().count, 8);
        let versions: Vec<_> = all.iter().map(|s| s.version.as_str()).collect();
        if request.version.is_empty() {
            assert_eq!(versions, ["1", "2"]);
            assert_eq!(all[1].inference_count, 0);
        } else {
            assert_eq!(versions, ["1"]);
        }
    }
    let err = client
        .model_statistics(stats_of("nope", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .model_statistics(stats_of("m", "9"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    b.stop().await;
    let all = client
        .model_statistics(stats_of("m", "1"))
        .await
        .unwrap()
        .into_inner()
        .model_stats;
    assert_eq!(all[0].inference_count, 3, "the dead worker is skipped");
    gw.shutdown().await;
}

#[tokio::test]
async fn metadata_and_config_come_from_a_replica_of_the_resolved_version() {
    let coord = Arc::new(MemoryCoordinator::new());
    let v1 = FakeWorker::start("w1", Behaviour::Echo).await;
    let v2 = FakeWorker::start("w2", Behaviour::Echo).await;
    register(&*coord, "m", "1", &v1, ReplicaState::Ready).await;
    register(&*coord, "m", "2", &v2, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "2", 1).await;
    wait_ready(&gw, "m", "1", 1).await;
    let mut client = client(&gw).await;

    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: "m".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.platform, "fake:w2", "highest ready version by default");
    assert_eq!(meta.versions, ["1", "2"]);
    assert_eq!(meta.inputs[0].name, "x");
    let config = client
        .model_config(ModelConfigRequest {
            name: "m".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.platform, "fake:w1:1");
    assert_eq!(config.max_batch_size, 8);
    let err = client
        .model_config(ModelConfigRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let server = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "kiln");
    for ext in [
        "statistics",
        "model_configuration",
        "model_repository",
        "logging",
    ] {
        assert!(server.extensions.iter().any(|e| e == ext), "{ext}");
    }
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );

    let index = client
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = index
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.version.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(listed, [("m", "1", "READY"), ("m", "2", "READY")]);

    let err = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // No monitor in this cluster (tests/repository.rs has one).
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("--admin"), "{err:?}");
    let err = client
        .repository_model_unload(RepositoryModelUnloadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "no model name");
    gw.shutdown().await;
}

#[tokio::test]
async fn stream_infer_forwards_each_message() {
    let EchoSetup {
        worker: a,
        gw,
        mut client,
        ..
    } = echo_setup(|_| {}).await;

    let mut unknown = request("nope", "", four_floats());
    unknown.id = "bad".into();
    let mut second = request("m", "", four_floats());
    second.id = "second".into();
    let messages = vec![request("m", "1", four_floats()), unknown, second];
    let mut answers = client
        .model_stream_infer(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        got.push(answer);
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].infer_response.as_ref().unwrap().id, "req-1");
    // A failed message is answered with its error and its id (Triton's convention).
    assert_eq!(got[1].infer_response.as_ref().unwrap().id, "bad");
    assert!(
        got[1].error_message.contains("unknown model"),
        "{:?}",
        got[1]
    );
    let second = got[2].infer_response.as_ref().unwrap();
    assert_eq!(
        (second.id.as_str(), second.model_version.as_str()),
        ("second", "1")
    );
    assert_eq!(a.calls(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_message_over_the_size_limit_ends_the_stream_with_its_status() {
    let EchoSetup {
        worker: a,
        gw,
        mut client,
        ..
    } = echo_setup(|c| c.max_message_bytes = 4096).await;

    let big = Bytes::from(vec![0u8; 8192]);
    let messages = vec![
        request("m", "1", four_floats()),
        request("m", "1", big),
        request("m", "1", four_floats()),
    ];
    let mut answers = client
        .model_stream_infer(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().expect("the first answer");
    assert!(first.error_message.is_empty(), "{first:?}");
    // Not a silent end of stream: the caller hears why the rest got no answer.
    let err = answers.message().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(a.calls(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_caller_stops_reading_holds_no_admission_slots() {
    // 200 messages of 64 KiB, echoed back, and the caller reads nothing at first: once HTTP/2
    // flow control stops the gateway's answers, the messages already forwarded must still finish
    // and give back their --max-inflight slots, or a few such streams pin the gateway's whole
    // budget and every other caller gets RESOURCE_EXHAUSTED.
    let EchoSetup {
        worker: a,
        gw,
        mut client,
        ..
    } = echo_setup(|_| {}).await;
    let payload = Bytes::from(vec![0u8; 64 * 1024]);
    let messages: Vec<_> = (0..200)
        .map(|i| {
            let mut r = request("m", "1", payload.clone());
            r.id = format!("{i}");
            r
        })
        .collect();
    let mut answers = client
        .model_stream_infer(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    // Flow control stops the stream after a few dozen answers (how many depends on window
    // sizes): wait until no more messages are forwarded, then no slot may be held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = (0, 0); // (messages forwarded, polls in a row without a new one)
    while seen.0 == 0 || seen.1 < 20 || gw.inflight() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} slots still held with {} messages forwarded and nothing read",
            gw.inflight(),
            a.calls()
        );
        let calls = a.calls();
        seen = if calls == seen.0 {
            (calls, seen.1 + 1)
        } else {
            (calls, 0)
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen.0 < 200, "flow control never stopped the stream");
    let mut ids = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        ids.push(answer.infer_response.unwrap().id);
    }
    let expected: Vec<String> = (0..200).map(|i| format!("{i}")).collect();
    assert_eq!(ids, expected, "every answer, in order");
    gw.shutdown().await;
}

#[tokio::test]
async fn log_settings_are_read_and_changed_as_tritons_are() {
    use log_settings_request::SettingValue;
    use log_settings_request::setting_value::ParameterChoice as Set;
    use log_settings_response::setting_value::ParameterChoice as Got;
    let EchoSetup {
        worker: _worker,
        gw,
        mut client,
        ..
    } = echo_setup(|_| {}).await;
    let mut call = async |changes: &[(&str, Set)]| {
        let settings = changes
            .iter()
            .map(|(k, v)| {
                let value = SettingValue {
                    parameter_choice: Some(v.clone()),
                };
                ((*k).to_owned(), value)
            })
            .collect();
        client
            .log_settings(LogSettingsRequest { settings })
            .await
            .map(|r| {
                let mut got: Vec<(String, Option<Got>)> = r
                    .into_inner()
                    .settings
                    .into_iter()
                    .map(|(k, v)| (k, v.parameter_choice))
                    .collect();
                got.sort_by(|a, b| a.0.cmp(&b.0));
                got
            })
    };
    let read = call(&[]).await.unwrap();
    let keys: Vec<&str> = read.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "log_error",
            "log_file",
            "log_format",
            "log_info",
            "log_verbose_level",
            "log_warning"
        ]
    );
    let changed = call(&[("log_verbose_level", Set::Uint32Param(1))])
        .await
        .unwrap();
    assert!(changed.contains(&("log_verbose_level".into(), Some(Got::Uint32Param(1)))));
    assert!(changed.contains(&("log_info".into(), Some(Got::BoolParam(true)))));
    // A bad request changes nothing, even the settings of it that were valid.
    let err = call(&[
        ("log_verbose_level", Set::Uint32Param(0)),
        ("log_info", Set::StringParam("off".into())),
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("log_info"), "{err:?}");
    assert!(
        call(&[])
            .await
            .unwrap()
            .contains(&("log_verbose_level".into(), Some(Got::Uint32Param(1))))
    );
    call(&[("log_verbose_level", Set::Uint32Param(0))])
        .await
        .unwrap();
    gw.shutdown().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let EchoSetup {
        coord,
        worker: _worker,
        gw,
        ..
    } = echo_setup(|_| {}).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    let mut client = client(&gw).await;
    client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap();
    client
        .model_infer(request("nope", "1", four_floats()))
        .await
        .unwrap_err();
    let metrics = http_get(gw.http_addr, "/metrics").await;
    for expected in [
        r#"kiln_gateway_requests_total{model="m",code="OK"} 1"#,
        r#"kiln_gateway_requests_total{model="_unknown",code="NOT_FOUND"} 1"#,
        "kiln_gateway_request_duration_seconds_bucket",
        "kiln_routing_table_replicas 1",
        "kiln_routing_watch_connected 1",
        "kiln_routing_table_last_update_timestamp_seconds",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }
    assert!(
        http_get(gw.http_addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // The replica goes away: the table (and its gauge) follow.
    coord
        .delete(&kiln_coord::keys::replica("m", "1", "wa"))
        .await
        .unwrap();
    kiln_coord::conformance::eventually(Duration::from_secs(5), "gauge at 0", || async {
        metrics_text(&gw).contains("kiln_routing_table_replicas 0")
    })
    .await;
    gw.shutdown().await;
}
