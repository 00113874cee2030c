//! The worker's life in the cluster: registration, loading (and refusing) packages, unloading,
//! re-registering under a new lease, and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use kiln_coord::codec::{self, ReplicaState, WorkerRecord};
use kiln_coord::conformance::eventually;
use kiln_coord::{EventKind, keys};
use kiln_proto::inference::{ModelReadyRequest, RepositoryIndexRequest};

async fn worker_record(coord: &kiln_coord::SharedCoordinator, id: &str) -> Option<WorkerRecord> {
    codec::get(coord.as_ref(), &keys::worker(id)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_serves_and_unloads_when_unassigned() {
    let mut f = ready_worker(kiln_worker::Config {
        unload_delay_ms: 1500,
        ..config("w-life")
    })
    .await;
    let id = f.worker.id.clone();
    let record = worker_record(&f.coord, &id).await.expect("registered");
    assert_eq!(record.address, f.worker.grpc_addr.to_string());
    assert_eq!(record.backend, "flex");
    assert_eq!(record.device, "cpu");
    assert!(!record.draining);
    let published = replica(&f.coord, "digits", "1", &id).await.unwrap();
    assert_eq!(published.address, f.worker.advertise_addr);
    assert_eq!(published.worker_id, id);
    let lease = f
        .coord
        .get(&keys::worker(&id))
        .await
        .unwrap()
        .unwrap()
        .lease;
    assert_ne!(lease, 0, "the worker key is lease-bound");
    let replica_lease = f
        .coord
        .get(&keys::replica("digits", "1", &id))
        .await
        .unwrap()
        .unwrap()
        .lease;
    assert_eq!(
        replica_lease, lease,
        "replica keys share the worker's lease"
    );

    f.coord
        .delete(&keys::assignment(&id, "digits", "1"))
        .await
        .unwrap();
    eventually(WITHIN, "replica key removed", || async {
        replica(&f.coord, "digits", "1", &id).await.is_none()
    })
    .await;
    // Withdrawn but still serving: a request a gateway sent before it saw the delete succeeds.
    f.client
        .model_infer(raw_request(&heldout().inputs[..1]))
        .await
        .expect("served during the unload delay");
    let client = f.client.clone();
    eventually(WITHIN, "unloaded after the delay", || {
        let mut client = client.clone();
        async move {
            !client
                .model_ready(ModelReadyRequest {
                    name: "digits".into(),
                    version: "1".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .ready
        }
    })
    .await;
    let err = f
        .client
        .model_infer(raw_request(&heldout().inputs[..1]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let index = f
        .client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(index.models.is_empty(), "{:?}", index.models);

    // Assigned again: loads again.
    assign(&f.coord, &id, "digits", "1").await;
    wait_replica(&f.coord, "digits", "1", &id, ReplicaState::Ready).await;
    f.client
        .model_infer(raw_request(&heldout().inputs[..1]))
        .await
        .unwrap();
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_fails_the_replica() {
    let coord = coordinator();
    let mut record = digits_record();
    record.sha256 = "00".repeat(32);
    // The file:// form of the location is accepted too.
    record.package_uri = format!("file://{}", package_dir().display());
    register(&coord, &record).await;
    assign(&coord, "w-sha", "digits", "1").await;
    let worker = kiln_worker::start(config("w-sha"), coord.clone())
        .await
        .unwrap();
    let failed = wait_replica(&coord, "digits", "1", "w-sha", ReplicaState::Failed).await;
    assert!(
        failed.reason.contains("sha256 mismatch"),
        "{}",
        failed.reason
    );
    assert!(failed.reason.contains(&record.sha256), "{}", failed.reason);

    let mut client = client(&worker).await;
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), 1);
    assert_eq!(index.models[0].state, "UNAVAILABLE");
    assert!(index.models[0].reason.contains("sha256"));
    let err = client
        .model_infer(raw_request(&heldout().inputs[..1]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // The assigned-but-failed model has no statistics, and asking is not an error.
    let stats = client
        .model_statistics(kiln_proto::inference::ModelStatisticsRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stats.model_stats.is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_record_or_package_fails_the_replica() {
    let coord = coordinator();
    let mut elsewhere = digits_record();
    elsewhere.version = "2".into();
    elsewhere.package_uri = "/nonexistent/digits/2".into();
    register(&coord, &elsewhere).await;
    assign(&coord, "w-missing", "digits", "1").await; // no record for version 1
    assign(&coord, "w-missing", "digits", "2").await;
    let worker = kiln_worker::start(config("w-missing"), coord.clone())
        .await
        .unwrap();
    let no_record = wait_replica(&coord, "digits", "1", "w-missing", ReplicaState::Failed).await;
    assert!(
        no_record.reason.contains("no model version record"),
        "{}",
        no_record.reason
    );
    let no_package = wait_replica(&coord, "digits", "2", "w-missing", ReplicaState::Failed).await;
    assert!(
        no_package.reason.contains("/nonexistent/digits/2"),
        "{}",
        no_package.reason
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lease_re_registers_every_key() {
    let f = ready_worker(config("w-lease")).await;
    let id = f.worker.id.clone();
    let old = f
        .coord
        .get(&keys::worker(&id))
        .await
        .unwrap()
        .unwrap()
        .lease;
    // The store forgets the lease (as after a long partition): every key under it vanishes.
    f.coord.revoke_lease(old).await.unwrap();
    assert!(worker_record(&f.coord, &id).await.is_none());
    eventually(
        WITHIN,
        "worker and replica keys back under a new lease",
        || async {
            let worker = f.coord.get(&keys::worker(&id)).await.unwrap();
            let replica = f
                .coord
                .get(&keys::replica("digits", "1", &id))
                .await
                .unwrap();
            matches!((worker, replica), (Some(w), Some(r)) if w.lease != old && r.lease == w.lease)
        },
    )
    .await;
    let published = replica(&f.coord, "digits", "1", &id).await.unwrap();
    assert_eq!(published.state, ReplicaState::Ready as i32);
    f.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_removes_the_keys() {
    let f = ready_worker(config("w-down")).await;
    let id = f.worker.id.clone();
    let rev = f.coord.list(&keys::worker(&id)).await.unwrap().revision;
    let mut watch = f
        .coord
        .watch_prefix(&keys::worker(&id), rev + 1)
        .await
        .unwrap();
    f.worker.shutdown().await;

    // First the worker is marked draining, then its key goes with the lease.
    let mut saw_draining = false;
    loop {
        let batch = tokio::time::timeout(WITHIN, watch.next())
            .await
            .expect("worker key events")
            .expect("watch open")
            .expect("watch ok");
        for e in batch {
            match e.kind {
                EventKind::Put => {
                    let r: WorkerRecord = codec::decode(&e.kv).unwrap();
                    saw_draining |= r.draining;
                }
                EventKind::Delete => {
                    assert!(saw_draining, "marked draining before removal");
                    assert!(worker_record(&f.coord, &id).await.is_none());
                    assert!(replica(&f.coord, "digits", "1", &id).await.is_none());
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_assigned_again_while_it_lingers_keeps_its_new_linger() {
    // Unassigned at t0 (linger 1 ends at t0 + 4 s), assigned again, unassigned again at about
    // t0 + 2 s (linger 2 ends at t0 + 6 s): at t0 + 5 s the version still serves, as the end of
    // the first linger must not unload what the second one keeps.
    let delay = Duration::from_secs(4);
    let f = ready_worker(kiln_worker::Config {
        unload_delay_ms: delay.as_millis() as u64,
        ..config("w-relinger")
    })
    .await;
    let id = f.worker.id.clone();
    let assignment = keys::assignment(&id, "digits", "1");
    f.coord.delete(&assignment).await.unwrap();
    let t0 = tokio::time::Instant::now();
    eventually(WITHIN, "replica key removed", || async {
        replica(&f.coord, "digits", "1", &id).await.is_none()
    })
    .await;
    assign(&f.coord, &id, "digits", "1").await;
    wait_replica(&f.coord, "digits", "1", &id, ReplicaState::Ready).await;
    tokio::time::sleep_until(t0 + delay / 2).await;
    f.coord.delete(&assignment).await.unwrap();
    eventually(WITHIN, "replica key removed again", || async {
        replica(&f.coord, "digits", "1", &id).await.is_none()
    })
    .await;
    assert!(t0.elapsed() < delay, "too slow to test: {:?}", t0.elapsed());
    tokio::time::sleep_until(t0 + delay + delay / 4).await;
    f.client
        .clone()
        .model_infer(raw_request(&heldout().inputs[..1]))
        .await
        .expect("still serving during the second linger");
    f.worker.shutdown().await;
}

/// CPU time this process has used (user + system), from /proc/self/stat, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dropped_without_shutdown_leaves_nothing_running() {
    let f = ready_worker(kiln_worker::Config {
        unload_delay_ms: 0,
        ..config("w-dropped")
    })
    .await;
    drop(f.worker);
    // Let what the drop stops wind down, then nothing of it may keep a CPU busy (its control
    // loop used to spin on the closed drain channel).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks() - before;
    assert!(
        used < 30,
        "{used} ticks of CPU in 1 s with the worker dropped"
    );
}
