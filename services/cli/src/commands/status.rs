//! `kiln status`: workers, deployments and replicas on one screen, from the Admin API.

use kiln_proto::kiln::v1::{
    DeploymentRecord, ListDeploymentsRequest, ListModelsRequest, ListReplicasRequest,
    ListWorkersRequest, ModelVersionRecord, ReplicaRecord, WorkerRecord,
};
use serde::Serialize;

use crate::admin::Admin;
use crate::args::{OutputFormat, StatusArgs};
use crate::output::{emit, state_name, table};

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
}

/// Reads the whole status.
pub async fn fetch(admin: &mut Admin) -> anyhow::Result<Status> {
    Ok(Status {
        workers: admin
            .list_workers(ListWorkersRequest {})
            .await?
            .into_inner()
            .workers,
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

/// Renders the status as tables.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!("WORKERS ({})\n", s.workers.len()));
    let rows: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.address.clone(),
                w.backend.clone(),
                w.device.clone(),
                if w.draining {
                    "draining".into()
                } else {
                    "up".into()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "ADDRESS", "BACKEND", "DEVICE", "STATE"],
        &rows,
    ));

    out.push_str(&format!("\nDEPLOYMENTS ({})\n", s.deployments.len()));
    let rows: Vec<Vec<String>> = s
        .deployments
        .iter()
        .flat_map(|d| {
            d.versions.iter().map(|v| {
                let ready = s
                    .replicas
                    .iter()
                    .filter(|r| {
                        r.model == d.model
                            && r.version == v.version
                            && state_name(r.state) == "READY"
                    })
                    .count();
                vec![
                    d.model.clone(),
                    v.version.clone(),
                    format!("{ready}/{}", v.replicas),
                    v.traffic_weight.to_string(),
                ]
            })
        })
        .collect();
    out.push_str(&table(&["MODEL", "VERSION", "READY", "WEIGHT"], &rows));

    out.push_str(&format!("\nREPLICAS ({})\n", s.replicas.len()));
    let rows: Vec<Vec<String>> = s
        .replicas
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.version.clone(),
                r.worker_id.clone(),
                r.address.clone(),
                state_name(r.state).into(),
                r.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["MODEL", "VERSION", "WORKER", "ADDRESS", "STATE", "REASON"],
        &rows,
    ));

    out.push_str(&format!("\nMODELS ({})\n", s.models.len()));
    let rows: Vec<Vec<String>> = s
        .models
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                m.version.clone(),
                m.sha256.chars().take(12).collect(),
                m.package_uri.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["MODEL", "VERSION", "SHA256", "PACKAGE"], &rows));
    out
}

/// Runs `kiln status`.
pub async fn run(admin: &mut Admin, args: StatusArgs) -> anyhow::Result<()> {
    let status = fetch(admin).await?;
    match args.output {
        OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&status)?)),
        OutputFormat::Table => emit(&render(&status)),
    }
}
