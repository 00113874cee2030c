//! Traffic profiles end to end: a real worker pushes its windows to a fake monitor (a tiny
//! `kiln.v1.Telemetry` server on port 0 that records every batch).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kiln_coord::conformance::eventually;
use kiln_coord::keys;
use kiln_proto::kiln::v1::telemetry_server::{Telemetry, TelemetryServer};
use kiln_proto::kiln::v1::{ProfileBatch, PushAck};
use kiln_telemetry::profile::{CategoryLabel, ModelProfile};
use kiln_worker::Config;
use tonic::{Request, Response, Status};

/// A fake monitor: records every batch pushed to it.
#[derive(Clone, Default)]
struct FakeMonitor {
    batches: Arc<Mutex<Vec<ProfileBatch>>>,
}

#[tonic::async_trait]
impl Telemetry for FakeMonitor {
    async fn push_profile(
        &self,
        request: Request<ProfileBatch>,
    ) -> Result<Response<PushAck>, Status> {
        let batch = request.into_inner();
        let accepted = batch.profiles.len() as u32;
        self.batches.lock().unwrap().push(batch);
        Ok(Response::new(PushAck { accepted }))
    }
}

impl FakeMonitor {
    /// Serves on a free port; returns the monitor and its address.
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let monitor = Self::default();
        let service = TelemetryServer::new(monitor.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (monitor, addr)
    }

    fn batches(&self) -> Vec<ProfileBatch> {
        self.batches.lock().unwrap().clone()
    }

    /// Every digits/1 profile received so far, merged.
    fn merged(&self) -> Option<ModelProfile> {
        let mut merged: Option<ModelProfile> = None;
        for batch in self.batches() {
            for p in &batch.profiles {
                let p = ModelProfile::try_from(p).expect("a valid profile");
                assert_eq!((p.model.as_str(), p.version.as_str()), ("digits", "1"));
                match &mut merged {
                    Some(m) => m.merge(&p).unwrap(),
                    None => merged = Some(p),
                }
            }
        }
        merged
    }

    /// Waits until the merged profile has `requests` requests and returns it.
    async fn wait_requests(&self, requests: u64) -> ModelProfile {
        eventually(WITHIN, &format!("{requests} requests profiled"), || async {
            self.merged().is_some_and(|p| p.request_count >= requests)
        })
        .await;
        self.merged().unwrap()
    }
}

fn telemetry_config(id: &str, monitor: Option<SocketAddr>) -> Config {
    Config {
        telemetry_interval_secs: 1,
        monitors: monitor.map(|a| a.to_string()).into_iter().collect(),
        unload_delay_ms: 0,
        ..config(id)
    }
}

/// Sends the held-out rows in requests of 1..=7 rows; returns (rows sent, requests).
async fn send_heldout(f: &mut Fixture, rows: &[Vec<f32>]) -> u64 {
    let mut requests = 0;
    let mut start = 0;
    while start < rows.len() {
        let end = (start + 1 + requests as usize % 7).min(rows.len());
        let resp = f
            .client
            .model_infer(raw_request(&rows[start..end]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(raw_outputs(&resp).0.len(), end - start);
        requests += 1;
        start = end;
    }
    requests
}

fn column_means(rows: &[Vec<f32>]) -> Vec<f64> {
    (0..64)
        .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / rows.len() as f64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_of_the_traffic_reach_the_monitor() {
    let (monitor, addr) = FakeMonitor::start().await;
    let mut f = ready_worker(telemetry_config("w-tel", Some(addr))).await;
    let data = heldout();
    let rows = &data.inputs[..200];
    let requests = send_heldout(&mut f, rows).await;
    // One failing request (wrong row width) is counted as an error, without rows.
    let mut bad = raw_request(&rows[..1]);
    bad.inputs[0].shape = vec![2, 32];
    assert!(f.client.model_infer(bad).await.is_err());

    let p = monitor.wait_requests(requests + 1).await;
    assert_eq!(p.request_count, requests + 1);
    assert_eq!(p.error_count, 1);
    assert_eq!(p.row_count, rows.len() as u64);
    assert_eq!(p.latency().len(), requests, "the successful requests");
    assert_eq!(p.features().len(), 64);
    assert_eq!(p.features()[3].name(), "input[3]");
    // The package's reference.profile.pb has an outlier model: every row is scored, and
    // held-out digits are rarely outliers (≈ 2 %; see the monitor's tests/outlier.rs).
    assert_eq!(p.scored_rows(), rows.len() as u64);
    assert!(
        p.outlier_count() * 10 <= p.scored_rows(),
        "{}",
        p.outlier_count()
    );
    for (j, (feature, want)) in p.features().iter().zip(column_means(rows)).enumerate() {
        assert_eq!(feature.count(), rows.len() as u64, "feature {j}");
        let got = feature.moments().mean().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "feature {j}: mean {got}, numpy {want}"
        );
    }
    let outputs = p.outputs();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0].profile.name(), "label");
    let classes = outputs[0].profile.categories().expect("a class histogram");
    assert_eq!(classes.total(), rows.len() as u64);
    let counts = classes.counts();
    for (label, count) in &counts {
        let CategoryLabel::Int(label) = label else {
            panic!("integer labels expected, got {label:?}");
        };
        let want = data.ort_label[..rows.len()]
            .iter()
            .filter(|l| *l == label)
            .count() as u64;
        assert_eq!(*count, want, "class {label}");
    }
    assert_eq!(outputs[1].profile.count(), rows.len() as u64 * 10);

    let batches = monitor.batches();
    assert!(batches.iter().all(|b| b.worker_id == "w-tel"));
    assert!(
        batches
            .iter()
            .all(|b| b.window_end_unix_ms == b.window_start_unix_ms + 1000)
    );
    eventually(WITHIN, "pushes counted", || async {
        http_get(f.worker.http_addr, "/metrics")
            .await
            .contains("kiln_telemetry_pushes_total{result=\"ok\"}")
    })
    .await;
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_rows_and_counts_them_without_blocking() {
    let (monitor, addr) = FakeMonitor::start().await;
    let config = Config {
        telemetry_buffer_rows: 1,
        ..telemetry_config("w-full", Some(addr))
    };
    let mut f = ready_worker(config).await;
    let data = heldout();
    // Two rows never fit a one-row buffer: every request is answered, its rows dropped.
    for i in 0..20 {
        let resp = f
            .client
            .model_infer(raw_request(&data.inputs[2 * i..2 * i + 2]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(raw_outputs(&resp).0.len(), 2);
    }
    let metrics = http_get(f.worker.http_addr, "/metrics").await;
    assert!(
        metrics.contains("kiln_telemetry_samples_dropped_total{model=\"digits\",version=\"1\"} 20"),
        "{metrics}"
    );
    // The requests themselves are still counted.
    let p = monitor.wait_requests(20).await;
    assert_eq!(p.request_count, 20);
    assert_eq!(p.row_count, 0);
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_are_found_in_the_controller_election() {
    let (monitor, addr) = FakeMonitor::start().await;
    let (other, other_addr) = FakeMonitor::start().await;
    let mut f = ready_worker(telemetry_config("w-disc", None)).await;
    let election = format!("{}/", keys::CONTROLLER_ELECTION);
    for (k, a) in [("1", addr), ("2", other_addr)] {
        f.coord
            .put(&format!("{election}{k}"), a.to_string().into_bytes(), 0)
            .await
            .unwrap();
    }
    let data = heldout();
    let requests = send_heldout(&mut f, &data.inputs[..30]).await;
    // Every monitor gets every window.
    assert_eq!(monitor.wait_requests(requests).await.row_count, 30);
    assert_eq!(other.wait_requests(requests).await.row_count, 30);
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_current_window() {
    let (monitor, addr) = FakeMonitor::start().await;
    let config = Config {
        telemetry_interval_secs: 3600,
        ..telemetry_config("w-flush", Some(addr))
    };
    let mut f = ready_worker(config).await;
    let data = heldout();
    let requests = send_heldout(&mut f, &data.inputs[..20]).await;
    assert!(monitor.batches().is_empty());
    f.worker.shutdown().await;
    let p = monitor
        .merged()
        .expect("the last window was pushed at shutdown");
    assert_eq!(p.request_count, requests);
    assert_eq!(p.row_count, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_monitor_never_affects_serving() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let f = ready_worker(telemetry_config("w-dead", Some(addr))).await;
    let data = heldout();
    eventually(WITHIN, "a failed push counted", || {
        let rows = &data.inputs[..3];
        let mut client = f.client.clone();
        let http = f.worker.http_addr;
        async move {
            let resp = client.model_infer(raw_request(rows)).await.unwrap();
            assert_eq!(raw_outputs(&resp.into_inner()).0.len(), 3);
            http_get(http, "/metrics")
                .await
                .contains("kiln_telemetry_pushes_total{result=\"error\"}")
        }
    })
    .await;
    f.worker.shutdown().await;
}

/// Rows per second served to `concurrency` closed-loop clients sending `batch`-row requests
/// for `secs` seconds (the worker batches them dynamically): throughput at saturation.
async fn throughput(
    f: &Fixture,
    rows: &[Vec<f32>],
    concurrency: usize,
    batch: usize,
    secs: f64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let mut client = f.client.clone();
            let rows = rows.to_vec();
            tokio::spawn(async move {
                let mut served = 0usize;
                let mut i = t * batch;
                while Instant::now() < deadline {
                    let at = i % (rows.len() - batch);
                    let req = raw_request(&rows[at..at + batch]);
                    client.model_infer(req).await.unwrap();
                    served += batch;
                    i += batch * concurrency;
                }
                served
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// The cost of telemetry at saturation: rows/s served with telemetry on (every row profiled
/// and outlier-scored) and off, passes interleaved in one run. `cargo nextest run -p kiln-worker
/// --release --run-ignored only telemetry_cost --no-capture` (numbers: docs/BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn telemetry_cost() {
    let (monitor, addr) = FakeMonitor::start().await;
    let on = ready_worker(telemetry_config("w-on", Some(addr))).await;
    let off = ready_worker(Config {
        telemetry_interval_secs: 0,
        ..config("w-off")
    })
    .await;
    let data = heldout();
    let (concurrency, batch, secs) = (16, 8, 3.0);
    throughput(&on, &data.inputs, concurrency, batch, 1.0).await; // warm up
    throughput(&off, &data.inputs, concurrency, batch, 1.0).await;
    let (mut rates_on, mut rates_off) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        rates_off.push(throughput(&off, &data.inputs, concurrency, batch, secs).await);
        rates_on.push(throughput(&on, &data.inputs, concurrency, batch, secs).await);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let round = |v: &[f64]| v.iter().map(|r| r.round()).collect::<Vec<_>>();
    println!(
        "telemetry off: {:?} rows/s (median {:.0}); on: {:?} rows/s (median {:.0}); on/off {:.3}; \
         {concurrency} closed-loop clients x {batch}-row requests, {secs} s passes",
        round(&rates_off),
        median(&rates_off),
        round(&rates_on),
        median(&rates_on),
        median(&rates_on) / median(&rates_off),
    );
    let deadline = Duration::from_secs(10);
    eventually(deadline, "profiles pushed", || async {
        monitor
            .merged()
            .is_some_and(|p| p.row_count > 0 && p.scored_rows > 0)
    })
    .await;
    on.worker.shutdown().await;
    off.worker.shutdown().await;
}
