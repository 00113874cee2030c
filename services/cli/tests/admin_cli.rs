//! The Admin commands against the real monitor, in-process on a free port over the in-memory
//! store. Workers are fake (records under their own lease) and replica states are written
//! straight into the store, as a worker would report them; the commands run through the
//! library (`kiln::commands::*`) or the built binary (`CARGO_BIN_EXE_kiln`).

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use kiln::args::{
    BatchingArgs, DeployArgs, DrainArgs, ListArgs, OutputFormat, PromoteArgs, SplitArgs, WaitArgs,
};
use kiln::commands::{deploy, status, traffic, workers};
use kiln_coord::codec::{self, ModelVersionRecord, ReplicaRecord, ReplicaState, WorkerRecord};
use kiln_coord::{MemoryCoordinator, SharedCoordinator, keys};

const WITHIN: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds, failing the test after [`WITHIN`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Fixture {
    coord: SharedCoordinator,
    monitor: kiln_monitor::Running,
    url: String,
}

impl Fixture {
    /// A monitor with workers `w1`, `w2` and registered versions `digits/1`, `digits/2`.
    async fn start() -> Self {
        let coord: SharedCoordinator = Arc::new(MemoryCoordinator::new());
        let config = kiln_monitor::Config {
            lease_ttl_secs: 2,
            reconcile_interval_ms: 100,
            shutdown_grace_secs: 1,
            ..kiln_monitor::Config::ephemeral()
        };
        let monitor = kiln_monitor::start(config, coord.clone()).await.unwrap();
        let url = format!("http://{}", monitor.grpc_addr);
        let f = Self {
            coord,
            monitor,
            url,
        };
        for (i, id) in ["w1", "w2"].into_iter().enumerate() {
            let lease = f.coord.grant_lease(Duration::from_secs(60)).await.unwrap();
            let record = WorkerRecord {
                id: id.into(),
                address: format!("127.0.0.1:{}", 9001 + i),
                backend: "flex".into(),
                device: "cpu".into(),
                capacity_bytes: 4 << 30,
                ..Default::default()
            };
            codec::put(f.coord.as_ref(), &keys::worker(id), &record, lease)
                .await
                .unwrap();
        }
        for version in ["1", "2"] {
            let record = ModelVersionRecord {
                model: "digits".into(),
                version: version.into(),
                package_uri: "/nowhere".into(),
                format: "onnx".into(),
                ..Default::default()
            };
            codec::put(
                f.coord.as_ref(),
                &keys::model_version("digits", version),
                &record,
                0,
            )
            .await
            .unwrap();
        }
        f
    }

    async fn admin(&self) -> kiln::admin::Admin {
        kiln::admin::connect(&self.url, &Default::default())
            .await
            .unwrap()
    }

    /// Reports a replica of `digits/version` on `worker` in `state`, as a worker would.
    async fn replica(&self, version: &str, worker: &str, state: ReplicaState, reason: &str) {
        let record = ReplicaRecord {
            model: "digits".into(),
            version: version.into(),
            worker_id: worker.into(),
            address: "127.0.0.1:9001".into(),
            state: state as i32,
            reason: reason.into(),
            memory_bytes: 1 << 20,
        };
        codec::put(
            self.coord.as_ref(),
            &keys::replica("digits", version, worker),
            &record,
            0,
        )
        .await
        .unwrap();
    }

    /// Runs the `kiln` binary against this monitor.
    async fn kiln(&self, args: &[&str]) -> Output {
        kiln_bin(&[&["--admin", &self.url], args].concat()).await
    }
}

async fn kiln_bin(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn deploy_args(version: &str, replicas: u32) -> DeployArgs {
    DeployArgs {
        model: "digits".into(),
        version: version.into(),
        replicas,
        package: None,
        traffic_weight: 0,
        backend: String::new(),
        selector: Vec::new(),
        batching: BatchingArgs::default(),
        no_wait: true,
        timeout_secs: 10,
        output: OutputFormat::Table,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_workers_and_deployments_and_split_sets_weights() {
    let f = Fixture::start().await;
    let mut admin = f.admin().await;
    deploy::run(&mut admin, deploy_args("1", 2)).await.unwrap();
    let mut v2 = deploy_args("2", 1);
    v2.selector = vec![("zone".into(), "a".into())];
    v2.batching.max_batch_size = 16;
    deploy::run(&mut admin, v2).await.unwrap();
    f.replica("1", "w1", ReplicaState::Ready, "").await;
    f.replica("1", "w2", ReplicaState::Loading, "").await;

    let s = status::fetch(&mut admin).await.unwrap();
    let table = status::render(&s);
    for want in [
        "WORKERS (2)",
        "w1",
        "w2",
        "127.0.0.1:9001",
        "/ 4.0 GiB",
        "DEPLOYMENTS (1)",
    ] {
        assert!(table.contains(want), "{want:?} missing in\n{table}");
    }
    let row = |prefix: &str| {
        table
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("digits  1"), "digits 1 1/2 100 100% -");
    assert_eq!(
        row("digits  2"),
        "digits 2 0/1 0 0% selector=zone=a max_batch=16"
    );
    eprintln!("{table}");
    assert!(table.contains("LOADING"), "{table}");

    traffic::split(
        &mut admin,
        SplitArgs {
            model: "digits".into(),
            weights: vec![("1".into(), 75), ("2".into(), 25)],
            output: OutputFormat::Table,
        },
    )
    .await
    .unwrap();
    let out = f.kiln(&["status", "--output", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["workers", "models", "deployments", "replicas"] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
    let weights: Vec<(String, u64)> = json["deployments"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                v["traffic_weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(weights, [("1".into(), 75), ("2".into(), 25)]);
    let ready: Vec<&str> = json["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "READY")
        .map(|r| r["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(ready, ["w1"]);

    let out = f.kiln(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("75%") && text.contains("25%"), "{text}");
    workers::workers(
        &mut admin,
        ListArgs {
            output: OutputFormat::Json,
        },
    )
    .await
    .unwrap();
    f.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replica_does_not_end_the_wait_while_another_loads() {
    // w2's load failed (no room, a missing mount): the controller tries w1, so deploy waits on.
    let f = Fixture::start().await;
    f.replica("2", "w2", ReplicaState::Failed, "not enough memory")
        .await;
    f.replica("2", "w1", ReplicaState::Loading, "").await;
    let mut args = deploy_args("2", 1);
    args.no_wait = false;
    let waiting = tokio::spawn({
        let mut admin = f.admin().await;
        async move { deploy::run(&mut admin, args).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "{:?}", waiting.await);
    f.replica("2", "w1", ReplicaState::Ready, "").await;
    tokio::time::timeout(WITHIN, waiting)
        .await
        .expect("deploy returns once w1 is ready")
        .unwrap()
        .unwrap();
    f.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_waits_for_ready_and_fails_fast_on_a_failed_replica() {
    let f = Fixture::start().await;
    let mut admin = f.admin().await;
    let mut args = deploy_args("1", 1);
    args.no_wait = false;
    let waiting = tokio::spawn({
        let mut admin = f.admin().await;
        let args = args.clone();
        async move { deploy::run(&mut admin, args).await }
    });
    f.replica("1", "w1", ReplicaState::Ready, "").await;
    tokio::time::timeout(WITHIN, waiting)
        .await
        .expect("deploy returns once the replica is ready")
        .unwrap()
        .unwrap();

    f.replica("2", "w2", ReplicaState::Failed, "model.onnx: bad magic")
        .await;
    let mut args = deploy_args("2", 1);
    args.no_wait = false;
    let err = deploy::run(&mut admin, args).await.unwrap_err();
    let msg = kiln::errors::explain(&err, Some(&f.url));
    assert!(msg.contains("FAILED") && msg.contains("bad magic"), "{msg}");

    // Through the binary: JSON output is the deployment record; an unregistered version says
    // how to register it.
    let out = f
        .kiln(&[
            "deploy",
            "digits",
            "--version",
            "1",
            "--no-wait",
            "-o",
            "json",
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["model"], "digits");
    let out = f
        .kiln(&["deploy", "digits", "--version", "9", "--no-wait"])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--package DIR"), "{stderr}");
    f.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_no_wait_writes_the_cordon_and_undo_lifts_it() {
    let f = Fixture::start().await;
    let mut admin = f.admin().await;
    let args = DrainArgs {
        worker: "w1".into(),
        undo: false,
        wait: WaitArgs {
            no_wait: true,
            timeout: 10,
        },
        output: OutputFormat::Table,
    };
    workers::drain(&mut admin, args.clone()).await.unwrap();
    let cordoned = |want: bool| {
        let coord = f.coord.clone();
        async move { coord.get(&keys::drain("w1")).await.unwrap().is_some() == want }
    };
    eventually("the cordon key", || cordoned(true)).await;
    let url = f.url.clone();
    eventually("w1 listed as draining", || {
        let url = url.clone();
        async move {
            let mut admin = kiln::admin::connect(&url, &Default::default())
                .await
                .unwrap();
            let s = status::fetch(&mut admin).await.unwrap();
            s.workers.iter().any(|w| w.id == "w1" && w.draining)
        }
    })
    .await;
    // Nothing is deployed: waiting for the drain returns at once.
    let out = f.kiln(&["drain", "w2", "--timeout", "10"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("w2 drained"),
        "{out:?}"
    );

    workers::drain(&mut admin, DrainArgs { undo: true, ..args })
        .await
        .unwrap();
    eventually("the cordon lifted", || cordoned(false)).await;
    let out = f.kiln(&["drain", "nobody", "--no-wait"]).await;
    assert!(!out.status.success(), "an unknown worker fails: {out:?}");
    f.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_move_the_traffic() {
    let f = Fixture::start().await;
    let mut admin = f.admin().await;
    deploy::run(&mut admin, deploy_args("1", 1)).await.unwrap();
    deploy::run(&mut admin, deploy_args("2", 1)).await.unwrap();
    f.replica("1", "w1", ReplicaState::Ready, "").await;

    // Promoting a version without a READY replica is refused with the server's reason.
    let out = f.kiln(&["promote", "digits", "2"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kiln status") && stderr.contains("ready"),
        "{stderr}"
    );

    f.replica("2", "w2", ReplicaState::Ready, "").await;
    let args = PromoteArgs {
        model: "digits".into(),
        version: "2".into(),
        wait: WaitArgs {
            no_wait: false,
            timeout: 10,
        },
        output: OutputFormat::Json,
    };
    traffic::promote(&mut admin, args).await.unwrap();
    let weights = |s: &status::Status| -> Vec<(String, u32, bool)> {
        s.deployments[0]
            .versions
            .iter()
            .map(|v| (v.version.clone(), v.traffic_weight, v.retiring))
            .collect()
    };
    let s = status::fetch(&mut admin).await.unwrap();
    assert_eq!(
        weights(&s),
        [("2".into(), 100, false)],
        "settled: 1 retired"
    );
    assert_eq!(s.deployments[0].previous_version, "1");

    let out = f
        .kiln(&["rollback", "digits", "--no-wait", "-o", "json"])
        .await;
    assert!(out.status.success(), "{out:?}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let to: Vec<&str> = record["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["traffic_weight"].as_u64() > Some(0))
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["1"], "{record}");
    f.monitor.shutdown().await;
}

#[tokio::test]
async fn completions_bash_prints_a_script() {
    let out = kiln_bin(&["completions", "bash"]).await;
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("kiln"), "{script}");
    assert!(script.contains("rollback"), "subcommands complete");
}

#[tokio::test]
async fn an_unreachable_monitor_is_explained() {
    // A port that nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for cmd in [&["status"][..], &["split", "digits", "1=100"], &["workers"]] {
        let out = kiln_bin(&[&["--admin", url.as_str()], cmd].concat()).await;
        assert!(!out.status.success(), "{cmd:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot reach the monitor at {url}"))
                && stderr.contains("kiln up")
                && stderr.contains("KILN_ADMIN"),
            "{cmd:?}: {stderr}"
        );
    }
}
