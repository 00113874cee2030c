//! `kiln drain`, `kiln workers`, `kiln models`: the workers and what is registered.

use std::time::Duration;

use anyhow::Context;
use kiln_proto::kiln::v1::{
    DrainWorkerRequest, ListModelsRequest, ListReplicasRequest, ListWorkersRequest,
};
use serde_json::json;

use crate::admin::Admin;
use crate::args::{DrainArgs, ListArgs, ModelsArgs, OutputFormat};
use crate::commands::status::{models_table, workers_table};
use crate::output::{emit, emit_json};
use crate::wait::wait_drained;

/// Runs `kiln drain`: cordons the worker (or lifts the cordon with `--undo`) and, unless
/// `--no-wait` or `--undo`, waits until no replica is left on it.
pub async fn drain(admin: &mut Admin, args: DrainArgs) -> anyhow::Result<()> {
    let reply = admin
        .drain_worker(DrainWorkerRequest {
            worker_id: args.worker.clone(),
            undo: args.undo,
        })
        .await
        .with_context(|| {
            let what = if args.undo { "uncordoning" } else { "draining" };
            format!("{what} {}", args.worker)
        })?
        .into_inner();
    let waited = !(args.undo || args.wait.no_wait);
    let message = if args.undo {
        format!("{} uncordoned: it takes new replicas again", args.worker)
    } else if waited {
        wait_drained(
            admin,
            &args.worker,
            reply.replicas as usize,
            Duration::from_secs(args.wait.timeout),
        )
        .await
        .with_context(|| format!("waiting for {} to drain", args.worker))?;
        format!("{} drained: no replicas left on it", args.worker)
    } else {
        format!(
            "{} cordoned: {} replica(s) to move (see `kiln status`)",
            args.worker, reply.replicas
        )
    };
    let left = if waited { 0 } else { reply.replicas };
    match args.output {
        OutputFormat::Json => emit_json(&json!({
            "worker_id": args.worker,
            "undo": args.undo,
            "worker": reply.worker,
            "replicas": left,
        })),
        OutputFormat::Table => emit(&format!("{message}\n")),
    }
}

/// Runs `kiln workers`: the WORKERS table of `kiln status`, or `{workers, loads}` as JSON.
pub async fn workers(admin: &mut Admin, args: ListArgs) -> anyhow::Result<()> {
    let reply = admin
        .list_workers(ListWorkersRequest {})
        .await
        .context("listing the workers")?
        .into_inner();
    if args.output == OutputFormat::Json {
        return emit_json(&json!({ "workers": reply.workers, "loads": reply.loads }));
    }
    // Loads from an older monitor are empty: the table then counts the replica records.
    let replicas = if reply.loads.is_empty() {
        admin
            .list_replicas(ListReplicasRequest::default())
            .await
            .context("listing the replicas")?
            .into_inner()
            .replicas
    } else {
        Vec::new()
    };
    emit(&workers_table(&reply.workers, &reply.loads, &replicas))
}

/// Runs `kiln models`: the registered model versions (JSON: the records).
pub async fn models(admin: &mut Admin, args: ModelsArgs) -> anyhow::Result<()> {
    let versions = admin
        .list_models(ListModelsRequest {
            model: args.model.clone().unwrap_or_default(),
        })
        .await
        .context("listing the models")?
        .into_inner()
        .versions;
    match args.output {
        OutputFormat::Json => emit_json(&versions),
        OutputFormat::Table => emit(&models_table(&versions)),
    }
}
