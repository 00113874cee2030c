//! Per-client limits on the streaming RPC: each message of a ModelStreamInfer stream counts
//! against `--client-rate-limit` and `--client-max-inflight` like a ModelInfer call, and an open
//! stream holds no slot of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kiln_proto::inference::*;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// `n` requests for `m`/`1` with ids "0", "1", ...
fn messages(n: usize) -> Vec<ModelInferRequest> {
    (0..n)
        .map(|i| {
            let mut r = request("m", "1", four_floats());
            r.id = i.to_string();
            r
        })
        .collect()
}

/// Every answer of a stream that ends OK.
async fn answers_of(
    mut answers: tonic::Streaming<ModelStreamInferResponse>,
) -> Vec<ModelStreamInferResponse> {
    let mut got = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        got.push(answer);
    }
    got
}

#[tokio::test]
async fn stream_messages_spend_the_clients_rate_tokens() {
    // A bucket of 3 that refills once in 1000 s: the fourth message and later are over it.
    let EchoSetup {
        worker,
        gw,
        mut client,
        ..
    } = echo_setup(|c| {
        c.client_rate_limit = 0.001;
        c.client_burst = 3;
    })
    .await;
    let got = answers_of(
        client
            .model_stream_infer(tokio_stream::iter(messages(5)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(got.len(), 5, "every message is answered");
    let refused: Vec<&str> = got
        .iter()
        .filter(|a| !a.error_message.is_empty())
        .map(|a| {
            assert!(
                a.error_message.contains("--client-rate-limit"),
                "{}",
                a.error_message
            );
            a.infer_response.as_ref().unwrap().id.as_str()
        })
        .collect();
    assert_eq!(refused.len(), 2, "{got:?}");
    assert_eq!(worker.calls(), 3);
    // The stream spent the bucket: a ModelInfer call of the same client is refused too.
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn stream_messages_count_against_the_clients_inflight_cap() {
    let EchoSetup {
        worker,
        gw,
        mut client,
        ..
    } = echo_setup(|c| c.client_max_inflight = 1).await;
    let gate = Arc::new(Semaphore::new(0));
    worker.set(Behaviour::Gate(gate.clone()));

    // An open stream holds no slot: a ModelInfer call beside it is admitted (and held at the
    // worker's gate, so it keeps the client's only slot).
    let (send, outbox) = mpsc::channel(8);
    let mut answers = client
        .model_stream_infer(ReceiverStream::new(outbox))
        .await
        .unwrap()
        .into_inner();
    let mut unary = client.clone();
    let held = tokio::spawn(async move {
        unary
            .model_infer(request("m", "1", four_floats()))
            .await
            .map(|_| ())
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while worker.calls() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the worker"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // While it holds the slot, stream messages are refused in the stream, with their ids.
    for message in messages(2) {
        send.send(message).await.unwrap();
        let answer = answers.message().await.unwrap().expect("an answer");
        assert!(
            answer.error_message.contains("--client-max-inflight"),
            "{answer:?}"
        );
        assert!(!answer.infer_response.unwrap().id.is_empty());
    }
    assert_eq!(worker.calls(), 1, "refused messages never reach a worker");

    // Once the call is done, the same stream's next message is served.
    gate.add_permits(8);
    held.await.unwrap().expect("the held call is served");
    send.send(messages(1).remove(0)).await.unwrap();
    let answer = answers.message().await.unwrap().expect("an answer");
    assert!(answer.error_message.is_empty(), "{answer:?}");
    drop(send);
    assert!(answers.message().await.unwrap().is_none());
    gw.shutdown().await;
}
