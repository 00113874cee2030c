//! The watch loop against a real in-process monitor (1 s telemetry windows): persistent drift
//! fires an alert after K windows and reaches an Alertmanager-style webhook; a canary over the
//! SLO is rolled back; drift runs the retrain hook, whose version is deployed as a canary and
//! promoted once good, or rolled back when it is not good within the cool-down (one retrained
//! canary at a time).

mod common;

use std::time::Duration;

use common::*;
use kiln_coord::codec::{self, DeploymentRecord, DeploymentVersion, ModelVersionRecord};
use kiln_coord::keys;
use kiln_monitor::watch::AlertKind;
use kiln_proto::kiln::v1 as pb;
use kiln_proto::kiln::v1::telemetry_client::TelemetryClient;
use kiln_telemetry::profile::{ModelProfile, ProfileSchema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const FEATURES: usize = 8;
const LONG: Duration = Duration::from_secs(30);

/// `rows` rows of N(shift, 1) features, each request (one per row) taking `latency_ms`.
fn profile(version: &str, seed: u64, rows: usize, shift: f64, latency_ms: u64) -> ModelProfile {
    profile_of(version, seed, rows, rows, shift, latency_ms)
}

/// [`profile`] with `requests` requests for its rows (requests carrying several rows each).
fn profile_of(
    version: &str,
    seed: u64,
    rows: usize,
    requests: usize,
    shift: f64,
    latency_ms: u64,
) -> ModelProfile {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p =
        ModelProfile::new("m", version, &ProfileSchema::numeric("input", FEATURES)).unwrap();
    let mut row = vec![0.0; FEATURES];
    for _ in 0..rows {
        for x in row.iter_mut() {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            *x = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() + shift;
        }
        p.observe_row(&row).unwrap();
    }
    for _ in 0..requests {
        p.record_request(Duration::from_millis(latency_ms), true);
    }
    p
}

/// Writes a reference profile of N(shift, 1) data into a new directory and registers
/// `m`/`version` with it.
async fn register(
    coord: &kiln_coord::SharedCoordinator,
    version: &str,
    shift: f64,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let reference = profile("ref", 7, 1000, shift, 1);
    let path = kiln_monitor::reference::write_reference(dir.path(), &reference).unwrap();
    let record = ModelVersionRecord {
        model: "m".into(),
        version: version.into(),
        package_uri: dir.path().display().to_string(),
        format: "onnx".into(),
        reference_profile_uri: path.display().to_string(),
        ..Default::default()
    };
    codec::put(
        coord.as_ref(),
        &keys::model_version("m", version),
        &record,
        0,
    )
    .await
    .unwrap();
    dir
}

async fn deploy(coord: &kiln_coord::SharedCoordinator, versions: &[(&str, u32)]) {
    let record = DeploymentRecord {
        model: "m".into(),
        versions: versions
            .iter()
            .map(|&(v, w)| DeploymentVersion {
                version: v.into(),
                replicas: 1,
                traffic_weight: w,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    codec::put(coord.as_ref(), &keys::deployment("m"), &record, 0)
        .await
        .unwrap();
}

async fn deployment(coord: &kiln_coord::SharedCoordinator) -> DeploymentRecord {
    codec::get(coord.as_ref(), &keys::deployment("m"))
        .await
        .unwrap()
        .unwrap()
}

fn weight(d: &DeploymentRecord, version: &str) -> Option<(u32, bool)> {
    d.versions
        .iter()
        .find(|v| v.version == version)
        .map(|v| (v.traffic_weight, v.retiring))
}

/// Pushes a 150-row profile of `version` every 250 ms until aborted (seeds vary per push).
fn traffic(
    addr: std::net::SocketAddr,
    version: &str,
    shift: f64,
    latency_ms: u64,
) -> JoinHandle<()> {
    traffic_of(addr, version, 150, shift, latency_ms)
}

/// [`traffic`] with its 150 rows in `requests` requests per push.
fn traffic_of(
    addr: std::net::SocketAddr,
    version: &str,
    requests: usize,
    shift: f64,
    latency_ms: u64,
) -> JoinHandle<()> {
    let version = version.to_string();
    tokio::spawn(async move {
        let mut client = TelemetryClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for seed in 0u64.. {
            let now = kiln_monitor::telemetry::report::now_ms();
            let p = profile_of(&version, 1000 + seed, 150, requests, shift, latency_ms);
            let batch = pb::ProfileBatch {
                worker_id: "w".into(),
                window_start_unix_ms: now,
                window_end_unix_ms: now + 250,
                profiles: vec![pb::ModelProfile::from(&p)],
            };
            client.push_profile(batch).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// A one-route HTTP server taking POSTs and handing their bodies over.
async fn webhook() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            if let Some(b) = body {
                let _ = tx.send(serde_json::from_slice(&b).unwrap());
            }
        }
    });
    (url, rx)
}

fn config() -> kiln_monitor::Config {
    kiln_monitor::Config {
        telemetry_window_secs: 1,
        watch_settle_ms: 300,
        drift_alert_windows: 2,
        slo_min_requests: 20,
        ..fast_config("watch")
    }
}

async fn leading(m: &kiln_monitor::Running) {
    let mut leader = m.leader();
    tokio::time::timeout(LONG, leader.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_drift_fires_after_k_windows_and_reaches_the_webhook() {
    let coord = memory();
    let (url, mut hooks) = webhook().await;
    let m = kiln_monitor::start(
        kiln_monitor::Config {
            alert_webhook: Some(url),
            ..config()
        },
        coord.clone(),
    )
    .await
    .unwrap();
    leading(&m).await;
    let _dir = register(&coord, "1", 0.0).await;
    deploy(&coord, &[("1", 100)]).await;

    let t = traffic(m.grpc_addr, "1", 1.0, 2);
    eventually(LONG, "the drift alert", || async {
        let s = m.watch.snapshot();
        s.firing
            .iter()
            .any(|a| a.kind == AlertKind::DataDrift && a.version == "1")
    })
    .await;
    let s = m.watch.snapshot();
    let h = s.versions.iter().find(|h| h.version == "1").unwrap();
    assert!(h.consecutive_drifted >= 2, "{h:?}");
    assert!(h.drift.drifted && h.serving);
    let body = tokio::time::timeout(LONG, hooks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["status"], "firing", "{body}");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "KilnDataDrift");
    assert_eq!(body["alerts"][0]["labels"]["model"], "m");
    t.abort();

    // Undrifted traffic resolves it on the first judged window.
    let t = traffic(m.grpc_addr, "1", 0.0, 2);
    eventually(LONG, "the drift alert to resolve", || async {
        m.watch.snapshot().firing.is_empty()
    })
    .await;
    let body = tokio::time::timeout(LONG, hooks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["status"], "resolved", "{body}");
    assert_ne!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    t.abort();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_breaching_the_slo_is_rolled_back() {
    let coord = memory();
    let m = kiln_monitor::start(
        kiln_monitor::Config {
            slo_p99_ms: 50.0,
            ..config()
        },
        coord.clone(),
    )
    .await
    .unwrap();
    leading(&m).await;
    let _d1 = register(&coord, "1", 0.0).await;
    let _d2 = register(&coord, "2", 0.0).await;
    deploy(&coord, &[("1", 100), ("2", 10)]).await;
    let stable = traffic(m.grpc_addr, "1", 0.0, 2);
    let canary = traffic(m.grpc_addr, "2", 0.0, 200);
    eventually(LONG, "the canary rolled back", || async {
        weight(&deployment(&coord).await, "2").is_none_or(|(w, retiring)| w == 0 && retiring)
    })
    .await;
    let d = deployment(&coord).await;
    assert_eq!(weight(&d, "1"), Some((100, false)), "{d:?}");
    let s = m.watch.snapshot();
    assert!(
        s.events
            .iter()
            .any(|e| e.what == "action" && e.text.contains("rolled back")),
        "{:?}",
        s.events
    );
    assert!(
        s.events
            .iter()
            .any(|e| e.what == "firing" && e.text.contains("SLO"))
    );
    stable.abort();
    canary.abort();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_runs_the_retrain_hook_and_its_version_goes_through_canary_to_promotion() {
    let coord = memory();
    let out = tempfile::tempdir().unwrap();
    let marker = out.path().join("hook.txt");
    let m = kiln_monitor::start(
        kiln_monitor::Config {
            drift_alert_windows: 1,
            canary_windows: 2,
            canary_weight: 50,
            retrain_command: Some(format!(
                "echo \"$KILN_MODEL $KILN_VERSION $KILN_NEXT_VERSION $KILN_ADMIN\" > {}",
                marker.display()
            )),
            ..config()
        },
        coord.clone(),
    )
    .await
    .unwrap();
    leading(&m).await;
    let _d1 = register(&coord, "1", 0.0).await;
    deploy(&coord, &[("1", 100)]).await;
    let drifted = traffic(m.grpc_addr, "1", 1.0, 2);
    eventually(LONG, "the retrain hook to run", || async {
        std::fs::read_to_string(&marker).is_ok_and(|s| !s.is_empty())
    })
    .await;
    let line = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        line.trim(),
        format!("m 1 2 http://{}", m.grpc_addr),
        "the hook's environment"
    );

    // The "retrained" version: its reference is the drifted distribution.
    let _d2 = register(&coord, "2", 1.0).await;
    eventually(LONG, "the canary deployment", || async {
        weight(&deployment(&coord).await, "2") == Some((50, false))
    })
    .await;
    // Promote needs a READY replica of the canary, as a worker would report it.
    let replica = pb::ReplicaRecord {
        model: "m".into(),
        version: "2".into(),
        worker_id: "w".into(),
        address: "127.0.0.1:1".into(),
        state: pb::ReplicaState::Ready as i32,
        ..Default::default()
    };
    codec::put(coord.as_ref(), &keys::replica("m", "2", "w"), &replica, 0)
        .await
        .unwrap();
    let canary = traffic(m.grpc_addr, "2", 1.0, 2);
    eventually(LONG, "the canary promoted", || async {
        let d = deployment(&coord).await;
        weight(&d, "2") == Some((100, false))
            && weight(&d, "1").is_none_or(|(w, retiring)| w == 0 && retiring)
    })
    .await;
    let s = m.watch.snapshot();
    let texts: Vec<&str> = s.events.iter().map(|e| e.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains("retrain hook started")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("as a canary")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("promoted")), "{texts:?}");
    drifted.abort();
    canary.abort();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrained_canary_that_never_gets_good_is_rolled_back_before_the_next_retrain() {
    // The serving version drifts for good and each retrained canary gets no traffic, so none is
    // ever promoted. Every cool-down (2 s) used to run the hook again and deploy one more canary
    // beside the waiting ones; now a canary waits at most one cool-down, is rolled back, and only
    // then does the next retrain start.
    let coord = memory();
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs.txt");
    let m = kiln_monitor::start(
        kiln_monitor::Config {
            drift_alert_windows: 1,
            retrain_cooldown_secs: 2,
            canary_weight: 50,
            retrain_command: Some(format!("echo $KILN_NEXT_VERSION >> {}", runs.display())),
            ..config()
        },
        coord.clone(),
    )
    .await
    .unwrap();
    leading(&m).await;
    let mut dirs = vec![register(&coord, "1", 0.0).await];
    deploy(&coord, &[("1", 100)]).await;
    let drifted = traffic(m.grpc_addr, "1", 1.0, 2);
    let hook_runs = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Act as the trainer: register each version a hook run asks for. Until the second canary is
    // deployed, never more than one canary may take traffic beside version 1.
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs {:?}",
            hook_runs()
        );
        for version in hook_runs() {
            if dirs.len() < version.parse::<usize>().unwrap() {
                dirs.push(register(&coord, &version, 0.0).await);
            }
        }
        let d = deployment(&coord).await;
        let canaries: Vec<&str> = d
            .versions
            .iter()
            .filter(|v| v.version != "1" && v.traffic_weight > 0 && !v.retiring)
            .map(|v| v.version.as_str())
            .collect();
        assert!(canaries.len() <= 1, "canaries side by side: {canaries:?}");
        if canaries == ["3"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = m.watch.snapshot();
    let texts: Vec<&str> = s.events.iter().map(|e| e.text.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("not promoted within the cool-down")),
        "{texts:?}"
    );
    drifted.abort();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_too_thin_to_judge_the_slo_is_not_a_good_one() {
    // The canary's rows show no drift, but 4 requests a window (each of many rows) are under
    // slo_min_requests: nothing says it meets the SLO, so no window counts towards promotion.
    let coord = memory();
    let m = kiln_monitor::start(config(), coord.clone()).await.unwrap();
    leading(&m).await;
    let _d1 = register(&coord, "1", 0.0).await;
    let _d2 = register(&coord, "2", 0.0).await;
    deploy(&coord, &[("1", 100), ("2", 10)]).await;
    let stable = traffic(m.grpc_addr, "1", 0.0, 2);
    let canary = traffic_of(m.grpc_addr, "2", 1, 0.0, 2);
    let judged = || {
        let s = m.watch.snapshot();
        s.versions.iter().find(|h| h.version == "2").cloned()
    };
    // Three windows in which drift was judged (and found none) while the SLO was not.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + LONG;
    while seen.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", judged());
        if let Some(h) = judged()
            && h.drift.reason.is_empty()
            && !h.drift.features.is_empty()
        {
            assert!(!h.drift.drifted && !h.slo.judged, "{h:?}");
            assert_eq!(h.consecutive_good, 0, "{h:?}");
            seen.insert(h.window_start_unix_ms);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stable.abort();
    canary.abort();
    m.shutdown().await;
}
