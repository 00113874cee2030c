//! Failure handling over fake workers: retries on another replica, no retry after an answer,
//! load shedding, deadline propagation and message size limits.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kiln_coord::MemoryCoordinator;
use kiln_coord::codec::ReplicaState;
use kiln_coord::conformance::eventually;
use kiln_proto::edge::parse_grpc_timeout;
use tokio::sync::Semaphore;
use tonic::Code;

#[tokio::test]
async fn a_dead_worker_is_retried_on_the_other_replica() {
    let coord = Arc::new(MemoryCoordinator::new());
    let mut a = FakeWorker::start("wa", Behaviour::Echo).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 2).await;
    let mut client = client(&gw).await;
    // Open connections to both workers first, so the outage also hits a live connection.
    for _ in 0..20 {
        client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
    }
    assert!(a.calls() > 0 && b.calls() > 0);

    a.stop().await; // its replica key stays in the store
    let served_before = b.calls();
    let mut failures = 0;
    for _ in 0..100 {
        match client.model_infer(request("m", "1", four_floats())).await {
            Ok(r) => assert_eq!(served_by(&r.into_inner()), "wb"),
            Err(status) => {
                failures += 1;
                eprintln!("failed: {status:?}");
            }
        }
    }
    assert_eq!(failures, 0);
    assert_eq!(b.calls() - served_before, 100);
    assert!(metric_value(&gw, "kiln_gateway_retries_total") >= 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn unavailable_answers_are_retried() {
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start("wa", Behaviour::Fail(Code::Unavailable)).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 2).await;
    let mut client = client(&gw).await;
    for _ in 0..30 {
        let r = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
        assert_eq!(served_by(&r.into_inner()), "wb");
    }
    assert!(a.calls() >= 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_lone_replica_is_retried_itself() {
    let coord = Arc::new(MemoryCoordinator::new());
    let mut a = FakeWorker::start("wa", Behaviour::FailFirst(Code::Unavailable, 1)).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 1).await;
    let mut client = client(&gw).await;
    client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap();
    assert_eq!(a.calls(), 2);

    // A dead lone replica: every attempt fails fast, the caller hears UNAVAILABLE.
    a.stop().await;
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("no replica of model m version 1 answered"),
        "{err:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_replica_that_does_not_hold_the_version_is_passed_over() {
    // A worker answering NOT_FOUND for a version the table routes to it (restarted under the
    // same id, or unloaded before the gateway saw it): the other replica serves, and with none
    // left the caller hears UNAVAILABLE, after one attempt per replica.
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start("wa", Behaviour::Fail(Code::NotFound)).await;
    let b = FakeWorker::start("wb", Behaviour::Echo).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 2).await;
    let mut client = client(&gw).await;
    for _ in 0..30 {
        let r = client
            .model_infer(request("m", "1", four_floats()))
            .await
            .unwrap();
        assert_eq!(served_by(&r.into_inner()), "wb");
    }
    assert!(a.calls() >= 1);

    b.set(Behaviour::Fail(Code::NotFound));
    let calls = a.calls() + b.calls();
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("does not hold it"), "{err:?}");
    assert_eq!(a.calls() + b.calls() - calls, 2, "one attempt per replica");
    gw.shutdown().await;
}

#[tokio::test]
async fn application_errors_are_never_retried() {
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start("wa", Behaviour::Fail(Code::InvalidArgument)).await;
    let b = FakeWorker::start("wb", Behaviour::Fail(Code::InvalidArgument)).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    register(&*coord, "m", "1", &b, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |_| {}).await;
    wait_ready(&gw, "m", "1", 2).await;
    let mut client = client(&gw).await;
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("says no"), "{err:?}");
    assert_eq!(a.calls() + b.calls(), 1, "exactly one attempt");

    for fake in [&a, &b] {
        fake.set(Behaviour::Fail(Code::ResourceExhausted));
    }
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(a.calls() + b.calls(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn over_the_inflight_limit_requests_are_shed() {
    let coord = Arc::new(MemoryCoordinator::new());
    let gate = Arc::new(Semaphore::new(0));
    let a = FakeWorker::start("wa", Behaviour::Gate(gate.clone())).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    let gw = gateway(coord.clone(), |c| c.max_inflight = 2).await;
    wait_ready(&gw, "m", "1", 1).await;
    let client = client(&gw).await;

    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.model_infer(request("m", "1", four_floats())).await })
        })
        .collect();
    eventually(Duration::from_secs(5), "two requests held", || async {
        gw.inflight() == 2 && a.calls() == 2
    })
    .await;
    let err = client
        .clone()
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(a.calls(), 2, "shed before forwarding");

    gate.add_permits(2);
    for h in held {
        h.await.unwrap().unwrap();
    }
    assert_eq!(gw.inflight(), 0);
    gate.add_permits(1);
    client
        .clone()
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap();
    assert_eq!(metric_value(&gw, "kiln_gateway_shed_total"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_callers_deadline_is_propagated() {
    let coord = Arc::new(MemoryCoordinator::new());
    let a = FakeWorker::start("wa", Behaviour::Sleep(Duration::from_secs(10))).await;
    register(&*coord, "m", "1", &a, ReplicaState::Ready).await;
    // A generous margin keeps the test independent of scheduling noise.
    let gw = gateway(coord.clone(), |c| {
        c.deadline_margin_ms = 50;
        c.request_timeout_ms = 400;
    })
    .await;
    wait_ready(&gw, "m", "1", 1).await;
    let mut client = client(&gw).await;

    let mut req = tonic::Request::new(request("m", "1", four_floats()));
    req.set_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let err = client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let sent = a.last().1.expect("the worker got a grpc-timeout");
    let sent = parse_grpc_timeout(&sent).unwrap();
    assert!(
        sent <= Duration::from_millis(700) && sent >= Duration::from_millis(300),
        "forwarded timeout {sent:?}"
    );
    assert_eq!(a.calls(), 1, "a deadline is not retried");

    // Without a caller deadline the default applies.
    let started = Instant::now();
    let err = client
        .model_infer(request("m", "1", four_floats()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
    let sent = parse_grpc_timeout(&a.last().1.unwrap()).unwrap();
    assert!(
        sent <= Duration::from_millis(400),
        "forwarded timeout {sent:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn messages_over_the_limit_are_resource_exhausted() {
    let EchoSetup {
        worker: a,
        gw,
        mut client,
        ..
    } = echo_setup(|c| c.max_message_bytes = 64 * 1024).await;

    let small = Bytes::from(vec![7u8; 16 * 1024]);
    client.model_infer(request("m", "1", small)).await.unwrap();
    let big = Bytes::from(vec![7u8; 128 * 1024]);
    let err = client
        .model_infer(request("m", "1", big))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(a.calls(), 1);
    gw.shutdown().await;
}
