//! Helpers shared by the monitor's integration tests: fast configs, fake workers, direct store
//! writes and reads, and a tiny HTTP GET for /metrics.

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiln_coord::codec::{
    self, AssignmentRecord, DeploymentRecord, DeploymentVersion, ModelVersionRecord, WorkerRecord,
};
use kiln_coord::{LeaseId, MemoryCoordinator, SharedCoordinator, keys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use kiln_coord::conformance::eventually;

/// How long a test waits for the cluster to converge.
pub const WITHIN: Duration = Duration::from_secs(10);

pub fn memory() -> SharedCoordinator {
    Arc::new(MemoryCoordinator::new())
}

/// A monitor config on free ports that reacts fast.
pub fn fast_config(name: &str) -> kiln_monitor::Config {
    kiln_monitor::Config {
        lease_ttl_secs: 2,
        reconcile_interval_ms: 100,
        instance_name: Some(name.into()),
        shutdown_grace_secs: 1,
        ..kiln_monitor::Config::ephemeral()
    }
}

/// Registers a fake worker under its own lease (as a real worker would) and returns the lease.
pub async fn fake_worker(coord: &SharedCoordinator, id: &str) -> LeaseId {
    let lease = coord.grant_lease(Duration::from_secs(60)).await.unwrap();
    let record = WorkerRecord {
        id: id.into(),
        address: format!("127.0.0.1:{}", 9000 + id.len()),
        backend: "flex".into(),
        device: "cpu".into(),
        ..Default::default()
    };
    codec::put(coord.as_ref(), &keys::worker(id), &record, lease)
        .await
        .unwrap();
    lease
}

/// Writes a model version record straight into the store (no package needed).
pub async fn registered(coord: &SharedCoordinator, model: &str, version: &str) {
    let record = ModelVersionRecord {
        model: model.into(),
        version: version.into(),
        package_uri: "/nowhere".into(),
        format: "onnx".into(),
        ..Default::default()
    };
    codec::put(
        coord.as_ref(),
        &keys::model_version(model, version),
        &record,
        0,
    )
    .await
    .unwrap();
}

/// Writes a deployment record straight into the store.
pub async fn deployed(coord: &SharedCoordinator, model: &str, version: &str, replicas: u32) {
    let record = DeploymentRecord {
        model: model.into(),
        versions: vec![DeploymentVersion {
            version: version.into(),
            replicas,
            traffic_weight: 100,
            ..Default::default()
        }],
        ..Default::default()
    };
    codec::put(coord.as_ref(), &keys::deployment(model), &record, 0)
        .await
        .unwrap();
}

/// Every assignment in the store.
pub async fn assignments(coord: &SharedCoordinator) -> Vec<AssignmentRecord> {
    codec::list(coord.as_ref(), keys::ASSIGNMENTS)
        .await
        .unwrap()
}

/// The workers holding an assignment of `model/version`, sorted.
pub async fn assigned_workers(
    coord: &SharedCoordinator,
    model: &str,
    version: &str,
) -> Vec<String> {
    let mut w: Vec<String> = assignments(coord)
        .await
        .into_iter()
        .filter(|a| a.model == model && a.version == version)
        .map(|a| a.worker_id)
        .collect();
    w.sort();
    w
}

/// GETs `path` from an HTTP/1.1 server and returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of an unlabelled metric in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let (n, v) = line.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}
