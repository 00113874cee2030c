//! Issue 4's open-loop proof, against a real gRPC server started in-process: the server answers
//! at once except that it stalls every call for 200 ms once, 1 s into the measured window
//! (wrk2's demo). The open loop (200 req/s, latency from the intended send time) shows the
//! stall in its p99 — about 40 requests were due while it lasted; the naive closed loop
//! (concurrency 1) hides it — only its one in-flight request waited, so just its max moved.

mod fake;

use std::time::Duration;

use kiln_loadtest::{LoadConfig, LoadMode, Report, RunConfig, TargetConfig};

const STALL: Duration = Duration::from_millis(200);

/// Runs `mode` for 2 s (no warm-up) against a fresh server that stalls 1 s after its first call.
async fn run_against_a_stall(mode: LoadMode) -> Report {
    let server = fake::Fake::default()
        .stall_once(Duration::from_secs(1), STALL)
        .serve()
        .await;
    let config = RunConfig {
        target: TargetConfig {
            url: server.addr.to_string(),
            model: "fake".into(),
            ..TargetConfig::default()
        },
        load: LoadConfig {
            mode,
            connections: 1,
            warmup: Duration::ZERO,
            duration: Some(Duration::from_secs(2)),
            ..LoadConfig::default()
        },
    };
    let report = kiln_loadtest::run(&config).await.unwrap();
    println!("{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(server.fake.calls()["fake"] >= report.sent);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_p99_shows_a_stall_that_the_closed_loop_hides() {
    let stall_us = STALL.as_micros() as u64;

    let closed = run_against_a_stall(LoadMode::Closed { concurrency: 1 }).await;
    let latency = closed.latency_us.clone().unwrap();
    assert!(
        latency.max >= stall_us * 9 / 10,
        "the closed loop's one waiting request saw the stall: {latency:?}"
    );
    // Far below the open loop's ≥ 100 ms, with room for a busy test machine.
    assert!(
        latency.p99 < stall_us / 4,
        "the closed loop hides the stall in its p99: {latency:?}"
    );

    let open = run_against_a_stall(LoadMode::Open {
        rate: 200.0,
        max_in_flight: 10_000,
    })
    .await;
    assert_eq!(open.intended, 400, "the schedule fixes the count");
    let latency = open.latency_us.clone().unwrap();
    assert!(
        latency.p99 >= stall_us / 2,
        "the open loop's p99 shows the stall: {latency:?}"
    );
    assert!(latency.max >= stall_us * 9 / 10, "{latency:?}");
    assert!(
        latency.p50 < stall_us / 4,
        "most requests were not near the stall: {latency:?}"
    );
}
