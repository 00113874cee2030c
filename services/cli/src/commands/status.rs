//! `kiln status`: workers, deployments and replicas on one screen, from the Admin API.
//!
//! The tables are built here and reused by `kiln workers`, `kiln models`, `kiln split`,
//! `kiln promote` and `kiln rollback`. The JSON form keeps the keys `workers`, `models`,
//! `deployments` and `replicas` (scripts and tests/e2e read them) and adds `loads`.

use kiln_proto::kiln::v1::{
    DeploymentRecord, DeploymentVersion, ListDeploymentsRequest, ListModelsRequest,
    ListReplicasRequest, ListWorkersRequest, ModelVersionRecord, ReplicaRecord, ReplicaState,
    WorkerLoad, WorkerRecord,
};
use serde::Serialize;

use crate::admin::Admin;
use crate::args::{OutputFormat, StatusArgs};
use crate::output::{emit, emit_json, human_bytes, state_name, table};

/// Everything `kiln status` shows (also its JSON form).
#[derive(Debug, Default, Serialize)]
pub struct Status {
    /// Registered workers.
    pub workers: Vec<WorkerRecord>,
    /// Registered model versions.
    pub models: Vec<ModelVersionRecord>,
    /// Deployments.
    pub deployments: Vec<DeploymentRecord>,
    /// Replica states reported by the workers.
    pub replicas: Vec<ReplicaRecord>,
    /// What each worker carries (same order as `workers`; empty from an older monitor).
    pub loads: Vec<WorkerLoad>,
}

/// Reads the whole status.
pub async fn fetch(admin: &mut Admin) -> anyhow::Result<Status> {
    let workers = admin
        .list_workers(ListWorkersRequest {})
        .await?
        .into_inner();
    Ok(Status {
        workers: workers.workers,
        loads: workers.loads,
        models: admin
            .list_models(ListModelsRequest::default())
            .await?
            .into_inner()
            .versions,
        deployments: admin
            .list_deployments(ListDeploymentsRequest::default())
            .await?
            .into_inner()
            .deployments,
        replicas: admin
            .list_replicas(ListReplicasRequest::default())
            .await?
            .into_inner()
            .replicas,
    })
}

fn is_ready(r: &ReplicaRecord) -> bool {
    r.state == ReplicaState::Ready as i32
}

/// The load of worker `i`: the monitor's `loads` entry for it (matched by id, else by
/// position), or, from a monitor without loads, what its replica records say.
fn load_of(
    i: usize,
    w: &WorkerRecord,
    loads: &[WorkerLoad],
    replicas: &[ReplicaRecord],
) -> WorkerLoad {
    if let Some(l) = loads
        .iter()
        .find(|l| l.worker_id == w.id)
        .or_else(|| loads.get(i).filter(|l| l.worker_id.is_empty()))
    {
        return l.clone();
    }
    let mine: Vec<&ReplicaRecord> = replicas.iter().filter(|r| r.worker_id == w.id).collect();
    WorkerLoad {
        worker_id: w.id.clone(),
        replicas: mine.len() as u32,
        ready_replicas: mine.iter().filter(|r| is_ready(r)).count() as u32,
        memory_bytes: mine.iter().map(|r| r.memory_bytes).sum(),
    }
}

/// The WORKERS table: id, address, backend, device, state, replicas ready/total, memory
/// used / capacity.
pub fn workers_table(
    workers: &[WorkerRecord],
    loads: &[WorkerLoad],
    replicas: &[ReplicaRecord],
) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let load = load_of(i, w, loads, replicas);
            let capacity = if w.capacity_bytes == 0 {
                "?".to_string()
            } else {
                human_bytes(w.capacity_bytes)
            };
            vec![
                w.id.clone(),
                w.address.clone(),
                w.backend.clone(),
                w.device.clone(),
                if w.draining { "draining" } else { "up" }.into(),
                format!("{}/{}", load.ready_replicas, load.replicas),
                format!("{} / {capacity}", human_bytes(load.memory_bytes)),
            ]
        })
        .collect();
    table(
        &[
            "ID", "ADDRESS", "BACKEND", "DEVICE", "STATE", "REPLICAS", "MEMORY",
        ],
        &rows,
    )
}

/// A version's share of its model's total traffic weight, in percent (`90%`, `33.3%`).
pub fn share(weight: u32, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    let pct = f64::from(weight) * 100.0 / total as f64;
    if (pct - pct.round()).abs() < 0.05 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

/// The FLAGS of a deployed version: retiring, rollback target, placement constraints and
/// batching overrides; `-` when none.
pub fn flags(d: &DeploymentRecord, v: &DeploymentVersion) -> String {
    let mut f = Vec::new();
    if v.retiring {
        f.push("retiring".to_string());
    }
    if !d.previous_version.is_empty() && d.previous_version == v.version {
        f.push("previous".into());
    }
    if !v.backend.is_empty() {
        f.push(format!("backend={}", v.backend));
    }
    if !v.selector.is_empty() {
        let mut sel: Vec<String> = v.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sel.sort();
        f.push(format!("selector={}", sel.join(",")));
    }
    if let Some(b) = &v.batching {
        if b.max_batch_size > 0 {
            f.push(format!("max_batch={}", b.max_batch_size));
        }
        if !b.preferred_batch_size.is_empty() {
            let p: Vec<String> = b.preferred_batch_size.iter().map(u32::to_string).collect();
            f.push(format!("preferred={}", p.join(",")));
        }
        if b.max_queue_delay_microseconds > 0 {
            f.push(format!("delay={}us", b.max_queue_delay_microseconds));
        }
        if b.max_queue_size > 0 {
            f.push(format!("queue={}", b.max_queue_size));
        }
    }
    if f.is_empty() {
        "-".into()
    } else {
        f.join(" ")
    }
}

/// READY replicas of `model/version` among `replicas`.
pub fn ready_count(replicas: &[ReplicaRecord], model: &str, version: &str) -> usize {
    replicas
        .iter()
        .filter(|r| r.model == model && r.version == version && is_ready(r))
        .count()
}

/// The DEPLOYMENTS table: per version, replicas ready/desired, weight, share and flags.
pub fn deployments_table(deployments: &[DeploymentRecord], replicas: &[ReplicaRecord]) -> String {
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .flat_map(|d| {
            let total: u64 = d.versions.iter().map(|v| u64::from(v.traffic_weight)).sum();
            d.versions.iter().map(move |v| {
                vec![
                    d.model.clone(),
                    v.version.clone(),
                    format!(
                        "{}/{}",
                        ready_count(replicas, &d.model, &v.version),
                        v.replicas
                    ),
                    v.traffic_weight.to_string(),
                    share(v.traffic_weight, total),
                    flags(d, v),
                ]
            })
        })
        .collect();
    table(
        &["MODEL", "VERSION", "READY", "WEIGHT", "SHARE", "FLAGS"],
        &rows,
    )
}

/// The REPLICAS table: model, version, worker, state, reason.
pub fn replicas_table(replicas: &[ReplicaRecord]) -> String {
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.version.clone(),
                r.worker_id.clone(),
                state_name(r.state).into(),
                r.reason.clone(),
            ]
        })
        .collect();
    table(&["MODEL", "VERSION", "WORKER", "STATE", "REASON"], &rows)
}

/// The registered model versions.
pub fn models_table(models: &[ModelVersionRecord]) -> String {
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                m.version.clone(),
                m.format.clone(),
                human_bytes(m.size_bytes),
                m.sha256.chars().take(12).collect(),
                m.package_uri.clone(),
            ]
        })
        .collect();
    table(
        &["MODEL", "VERSION", "FORMAT", "SIZE", "SHA256", "PACKAGE"],
        &rows,
    )
}

/// Renders the status as tables.
pub fn render(s: &Status) -> String {
    let mut out = format!("WORKERS ({})\n", s.workers.len());
    out.push_str(&workers_table(&s.workers, &s.loads, &s.replicas));
    out.push_str(&format!("\nDEPLOYMENTS ({})\n", s.deployments.len()));
    out.push_str(&deployments_table(&s.deployments, &s.replicas));
    out.push_str(&format!("\nREPLICAS ({})\n", s.replicas.len()));
    out.push_str(&replicas_table(&s.replicas));
    out.push_str(&format!(
        "\nMODELS: {} registered version(s); `kiln models` lists them\n",
        s.models.len()
    ));
    out
}

/// Runs `kiln status`.
pub async fn run(admin: &mut Admin, args: StatusArgs) -> anyhow::Result<()> {
    let status = fetch(admin).await?;
    match args.output {
        OutputFormat::Json => emit_json(&status),
        OutputFormat::Table => emit(&render(&status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::kiln::v1::BatchingOverrides;

    fn replica(model: &str, version: &str, worker: &str, state: ReplicaState) -> ReplicaRecord {
        ReplicaRecord {
            model: model.into(),
            version: version.into(),
            worker_id: worker.into(),
            state: state as i32,
            memory_bytes: 1 << 20,
            ..Default::default()
        }
    }

    fn sample() -> Status {
        let version = |v: &str, replicas, w, retiring| DeploymentVersion {
            version: v.into(),
            replicas,
            traffic_weight: w,
            retiring,
            ..Default::default()
        };
        let mut v2 = version("2", 1, 10, false);
        v2.backend = "wgpu".into();
        v2.selector.insert("zone".into(), "a".into());
        v2.batching = Some(BatchingOverrides {
            max_batch_size: 32,
            ..Default::default()
        });
        Status {
            workers: vec![
                WorkerRecord {
                    id: "w1".into(),
                    address: "127.0.0.1:9001".into(),
                    backend: "flex".into(),
                    device: "cpu".into(),
                    capacity_bytes: 8 << 30,
                    ..Default::default()
                },
                WorkerRecord {
                    id: "w2".into(),
                    draining: true,
                    ..Default::default()
                },
            ],
            loads: vec![WorkerLoad {
                worker_id: "w1".into(),
                replicas: 2,
                ready_replicas: 1,
                memory_bytes: 3 << 20,
            }],
            deployments: vec![DeploymentRecord {
                model: "digits".into(),
                versions: vec![version("1", 2, 90, true), v2],
                previous_version: "1".into(),
            }],
            replicas: vec![
                replica("digits", "1", "w1", ReplicaState::Ready),
                replica("digits", "1", "w2", ReplicaState::Ready),
                replica("digits", "2", "w2", ReplicaState::Failed),
            ],
            models: Vec::new(),
        }
    }

    #[test]
    fn renders_loads_shares_and_flags() {
        let out = render(&sample());
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in\n{out}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            line("w1"),
            "w1 127.0.0.1:9001 flex cpu up 1/2 3.0 MiB / 8.0 GiB"
        );
        // No load entry: counted from the replica records.
        assert!(line("w2").contains("draining 1/2 2.0 MiB / ?"), "{out}");
        assert_eq!(line("digits  1"), "digits 1 2/2 90 90% retiring previous");
        assert_eq!(
            line("digits  2"),
            "digits 2 0/1 10 10% backend=wgpu selector=zone=a max_batch=32"
        );
        assert!(out.contains("REPLICAS (3)"), "{out}");
        assert_eq!(share(1, 3), "33.3%");
        assert_eq!(share(0, 0), "0%");
    }

    #[test]
    fn json_keeps_the_documented_keys() {
        let v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        for key in ["workers", "models", "deployments", "replicas", "loads"] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert_eq!(v["replicas"][0]["state"], "READY");
        assert_eq!(v["replicas"][0]["worker_id"], "w1");
    }
}
