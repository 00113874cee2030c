//! `kiln split`, `kiln promote`, `kiln rollback`: who gets a model's traffic.
//!
//! Each writes the change through the Admin API and prints the model's deployment (table or
//! JSON record). Promote and rollback then wait, unless `--no-wait`, until the deployment has
//! settled: no retiring versions left and every version with traffic fully READY
//! ([`crate::wait::wait_settled`]).

use std::time::Duration;

use anyhow::Context;
use kiln_proto::kiln::v1::{
    DeploymentRecord, ListReplicasRequest, PromoteRequest, RollbackRequest, SetTrafficSplitRequest,
    TrafficWeight,
};

use crate::admin::Admin;
use crate::args::{OutputFormat, PromoteArgs, RollbackArgs, SplitArgs, WaitArgs};
use crate::commands::status::deployments_table;
use crate::output::{emit, emit_json};
use crate::wait::wait_settled;

/// Prints `d` as a DEPLOYMENTS table (with its READY counts) under `headline`, or as JSON.
async fn show(
    admin: &mut Admin,
    headline: &str,
    d: &DeploymentRecord,
    output: OutputFormat,
) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return emit_json(d);
    }
    let replicas = admin
        .list_replicas(ListReplicasRequest {
            model: d.model.clone(),
            ..Default::default()
        })
        .await
        .context("ListReplicas")?
        .into_inner()
        .replicas;
    emit(&format!(
        "{headline}\n{}",
        deployments_table(std::slice::from_ref(d), &replicas)
    ))
}

/// Waits for `model` to settle unless `--no-wait`; returns the record to show.
async fn settle(
    admin: &mut Admin,
    model: &str,
    written: DeploymentRecord,
    wait: &WaitArgs,
) -> anyhow::Result<DeploymentRecord> {
    if wait.no_wait {
        return Ok(written);
    }
    wait_settled(admin, model, Duration::from_secs(wait.timeout))
        .await
        .with_context(|| format!("waiting for {model} to settle"))
}

/// Runs `kiln split`: sets the weights (versions not listed get 0).
pub async fn split(admin: &mut Admin, args: SplitArgs) -> anyhow::Result<()> {
    let weights = args
        .weights
        .iter()
        .map(|(version, weight)| TrafficWeight {
            version: version.clone(),
            weight: *weight,
        })
        .collect();
    let d = admin
        .set_traffic_split(SetTrafficSplitRequest {
            model: args.model.clone(),
            weights,
        })
        .await
        .with_context(|| format!("splitting the traffic of {}", args.model))?
        .into_inner()
        .deployment
        .context("SetTrafficSplit returned no deployment")?;
    show(
        admin,
        &format!("traffic of {} set", d.model),
        &d,
        args.output,
    )
    .await
}

/// Runs `kiln promote`: all traffic to one version, the others retire once it is ready.
pub async fn promote(admin: &mut Admin, args: PromoteArgs) -> anyhow::Result<()> {
    let written = admin
        .promote(PromoteRequest {
            model: args.model.clone(),
            version: args.version.clone(),
        })
        .await
        .with_context(|| format!("promoting {}/{}", args.model, args.version))?
        .into_inner()
        .deployment
        .context("Promote returned no deployment")?;
    let d = settle(admin, &args.model, written, &args.wait).await?;
    let headline = if args.wait.no_wait {
        format!("promoting {}/{} (not waiting)", args.model, args.version)
    } else {
        format!("promoted {}/{}", args.model, args.version)
    };
    show(admin, &headline, &d, args.output).await
}

/// Runs `kiln rollback`: all traffic back to `--to` or the server's previous version.
pub async fn rollback(admin: &mut Admin, args: RollbackArgs) -> anyhow::Result<()> {
    let written = admin
        .rollback(RollbackRequest {
            model: args.model.clone(),
            to_version: args.to.clone().unwrap_or_default(),
        })
        .await
        .with_context(|| format!("rolling {} back", args.model))?
        .into_inner()
        .deployment
        .context("Rollback returned no deployment")?;
    let to = written
        .versions
        .iter()
        .filter(|v| v.traffic_weight > 0 && !v.retiring)
        .map(|v| v.version.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let d = settle(admin, &args.model, written.clone(), &args.wait).await?;
    let headline = if args.wait.no_wait {
        format!("rolling {} back to {to} (not waiting)", args.model)
    } else {
        format!("rolled {} back to {to}", args.model)
    };
    show(admin, &headline, &d, args.output).await
}
