//! Canary → promote → rollback and drains, against a real monitor (in-process, in-memory store)
//! whose workers are simulated by writing their records, so every step's effect on deployments
//! and assignments is checked exactly.

mod common;

use std::time::Duration;

use common::*;
use kiln_coord::codec::{self, DeploymentRecord, ReplicaRecord, ReplicaState};
use kiln_coord::{SharedCoordinator, keys};
use kiln_proto::kiln::v1::admin_client::AdminClient;
use kiln_proto::kiln::v1::{
    DeployRequest, DrainWorkerRequest, ListWorkersRequest, PromoteRequest, RollbackRequest,
    SetTrafficSplitRequest, TrafficWeight,
};
use tonic::Code;
use tonic::transport::Channel;

async fn client(m: &kiln_monitor::Running) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", m.grpc_addr))
        .await
        .unwrap()
}

/// Acts as the workers: every assignment gets a READY replica record, and replica records of
/// removed assignments go, until the store agrees (one sweep).
async fn workers_follow(coord: &SharedCoordinator) {
    let assigned = assignments(coord).await;
    let replicas: Vec<ReplicaRecord> = codec::list(coord.as_ref(), keys::REPLICAS).await.unwrap();
    for a in &assigned {
        if !replicas
            .iter()
            .any(|r| r.worker_id == a.worker_id && r.model == a.model && r.version == a.version)
        {
            let r = ReplicaRecord {
                model: a.model.clone(),
                version: a.version.clone(),
                worker_id: a.worker_id.clone(),
                address: "127.0.0.1:1".into(),
                state: ReplicaState::Ready as i32,
                ..Default::default()
            };
            let key = keys::replica(&a.model, &a.version, &a.worker_id);
            codec::put(coord.as_ref(), &key, &r, 0).await.unwrap();
        }
    }
    for r in &replicas {
        if !assigned
            .iter()
            .any(|a| r.worker_id == a.worker_id && r.model == a.model && r.version == a.version)
        {
            let key = keys::replica(&r.model, &r.version, &r.worker_id);
            coord.delete(&key).await.unwrap();
        }
    }
}

async fn deployment(coord: &SharedCoordinator) -> DeploymentRecord {
    codec::get(coord.as_ref(), &keys::deployment("m"))
        .await
        .unwrap()
        .unwrap()
}

/// Versions in the deployment with their weights and retiring flags.
async fn versions(coord: &SharedCoordinator) -> Vec<(String, u32, bool)> {
    deployment(coord)
        .await
        .versions
        .into_iter()
        .map(|v| (v.version, v.traffic_weight, v.retiring))
        .collect()
}

fn v(version: &str, weight: u32, retiring: bool) -> (String, u32, bool) {
    (version.into(), weight, retiring)
}

/// Polls with the simulated workers following along.
async fn converge<F, Fut>(coord: &SharedCoordinator, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(WITHIN, what, || async {
        workers_follow(coord).await;
        check().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_promote_and_rollback() {
    let coord = memory();
    for w in ["w1", "w2", "w3"] {
        fake_worker(&coord, w).await;
    }
    registered(&coord, "m", "1").await;
    registered(&coord, "m", "2").await;
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    let mut admin = client(&monitor).await;
    let deploy = |version: &str, replicas| DeployRequest {
        model: "m".into(),
        version: version.into(),
        replicas,
        ..Default::default()
    };
    admin.deploy(deploy("1", 2)).await.unwrap();
    converge(&coord, "v1 on two workers", || async {
        assigned_workers(&coord, "m", "1").await.len() == 2
    })
    .await;
    // The leader publishes desired vs READY per version, and workers by state.
    eventually(WITHIN, "deployment gauges", || async {
        let body = http_get(monitor.http_addr, "/metrics").await;
        let series = |name: &str| metric(&body, &format!("{name}{{model=\"m\",version=\"1\"}}"));
        series("kiln_deployment_replicas_desired") == Some(2.0)
            && series("kiln_deployment_replicas_ready") == Some(2.0)
            && series("kiln_deployment_traffic_weight") == Some(100.0)
            && metric(&body, "kiln_workers{state=\"up\"}") == Some(3.0)
    })
    .await;

    // Canary: v2 with one replica and 10 % of the traffic.
    admin.deploy(deploy("2", 1)).await.unwrap();
    let weights = [("1", 90), ("2", 10)]
        .map(|(version, weight)| TrafficWeight {
            version: version.into(),
            weight,
        })
        .to_vec();
    admin
        .set_traffic_split(SetTrafficSplitRequest {
            model: "m".into(),
            weights,
        })
        .await
        .unwrap();
    assert_eq!(
        versions(&coord).await,
        [v("1", 90, false), v("2", 10, false)]
    );

    // Promote needs a ready replica of v2: none yet (no worker followed since the deploy)...
    let early = admin
        .promote(PromoteRequest {
            model: "m".into(),
            version: "2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    converge(&coord, "v2 assigned and ready", || async {
        assigned_workers(&coord, "m", "2").await.len() == 1
    })
    .await;
    admin
        .promote(PromoteRequest {
            model: "m".into(),
            version: "2".into(),
        })
        .await
        .unwrap();
    // v2 now takes everything and scales to v1's two replicas; v1 leaves once both are ready.
    converge(&coord, "v1 retired after v2 is fully ready", || async {
        versions(&coord).await == [v("2", 100, false)]
            && assigned_workers(&coord, "m", "1").await.is_empty()
            && assigned_workers(&coord, "m", "2").await.len() == 2
    })
    .await;
    assert_eq!(deployment(&coord).await.previous_version, "1");

    // Rollback with no target goes to the previous version, which is loaded again first.
    let rolled = admin
        .rollback(RollbackRequest {
            model: "m".into(),
            to_version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    let now: Vec<_> = rolled
        .versions
        .iter()
        .map(|x| (x.version.clone(), x.traffic_weight, x.retiring))
        .collect();
    assert_eq!(now, [v("2", 0, true), v("1", 100, false)]);
    converge(&coord, "back on v1 only", || async {
        versions(&coord).await == [v("1", 100, false)]
            && assigned_workers(&coord, "m", "2").await.is_empty()
            && assigned_workers(&coord, "m", "1").await.len() == 2
    })
    .await;
    assert_eq!(deployment(&coord).await.previous_version, "2");
    let err = admin
        .rollback(RollbackRequest {
            model: "m".into(),
            to_version: "9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_is_emptied_make_before_break_and_the_cordon_lifts() {
    let coord = memory();
    for w in ["w1", "w2", "w3"] {
        fake_worker(&coord, w).await;
    }
    registered(&coord, "m", "1").await;
    deployed(&coord, "m", "1", 2).await;
    let monitor = kiln_monitor::start(fast_config("m"), coord.clone())
        .await
        .unwrap();
    let mut admin = client(&monitor).await;
    converge(&coord, "two replicas", || async {
        assigned_workers(&coord, "m", "1").await == ["w1", "w2"]
    })
    .await;
    let drained = admin
        .drain_worker(DrainWorkerRequest {
            worker_id: "w1".into(),
            undo: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(drained.worker.unwrap().draining);
    // Without a worker following, the replacement stays LOADING-less: w1 keeps its replica.
    eventually(WITHIN, "replacement assigned on w3", || async {
        assigned_workers(&coord, "m", "1").await == ["w1", "w2", "w3"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a few passes: nothing else changes
    assert_eq!(assigned_workers(&coord, "m", "1").await, ["w1", "w2", "w3"]);
    converge(&coord, "w1 emptied once w3 is ready", || async {
        assigned_workers(&coord, "m", "1").await == ["w2", "w3"]
    })
    .await;
    let listed = admin
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    let w1 = listed.workers.iter().position(|w| w.id == "w1").unwrap();
    assert!(listed.workers[w1].draining);
    assert_eq!(listed.loads[w1].replicas, 0);
    assert_eq!(listed.loads.iter().map(|l| l.replicas).sum::<u32>(), 2);
    let err = admin
        .drain_worker(DrainWorkerRequest {
            worker_id: "nope".into(),
            undo: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    admin
        .drain_worker(DrainWorkerRequest {
            worker_id: "w1".into(),
            undo: true,
        })
        .await
        .unwrap();
    assert!(coord.get(&keys::drain("w1")).await.unwrap().is_none());
    monitor.shutdown().await;
}
