//! `kiln deploy`, `kiln undeploy`, `kiln scale`.

use std::time::Duration;

use anyhow::Context;
use kiln_proto::kiln::v1::{
    BatchingOverrides, DeployRequest, ModelVersionRecord, RegisterModelVersionRequest,
    ScaleRequest, UndeployRequest,
};

use crate::admin::{Admin, wait_ready};
use crate::args::{DeployArgs, OutputFormat, RegisterArgs, ScaleArgs, UndeployArgs};
use crate::output::{self, emit_json};

/// Registers the package in `dir` (made absolute here: the monitor resolves paths itself).
pub async fn register(
    admin: &mut Admin,
    dir: &std::path::Path,
) -> anyhow::Result<ModelVersionRecord> {
    let dir = std::path::absolute(dir).with_context(|| format!("package {}", dir.display()))?;
    let record = admin
        .register_model_version(RegisterModelVersionRequest {
            record: Some(ModelVersionRecord {
                package_uri: dir.display().to_string(),
                ..Default::default()
            }),
        })
        .await
        .with_context(|| format!("registering {}", dir.display()))?
        .into_inner()
        .record
        .context("RegisterModelVersion returned no record")?;
    Ok(record)
}

/// Runs `kiln register`.
pub async fn register_cmd(admin: &mut Admin, args: RegisterArgs) -> anyhow::Result<()> {
    let r = register(admin, &args.package).await?;
    match args.output {
        OutputFormat::Json => emit_json(&r),
        OutputFormat::Table => crate::output::emit(&format!(
            "registered {}/{} ({}, {} bytes) from {}\n",
            r.model, r.version, r.format, r.size_bytes, r.package_uri
        )),
    }
}

/// The DeployRequest of `kiln deploy` (batching overrides only when one is set).
pub fn request(args: &DeployArgs) -> DeployRequest {
    let b = &args.batching;
    let batching = BatchingOverrides {
        max_batch_size: b.max_batch_size,
        preferred_batch_size: b.preferred_batch_size.clone(),
        max_queue_delay_microseconds: b.max_queue_delay_us,
        max_queue_size: b.max_queue_size,
    };
    DeployRequest {
        model: args.model.clone(),
        version: args.version.clone(),
        replicas: args.replicas,
        traffic_weight: args.traffic_weight,
        backend: args.backend.clone(),
        selector: args.selector.iter().cloned().collect(),
        batching: (batching != BatchingOverrides::default()).then_some(batching),
    }
}

/// Runs `kiln deploy`: registers `--package` first, deploys, and (unless `--no-wait`) waits
/// until the version's READY replicas reach the desired count, failing on a FAILED one once
/// nothing loads any more.
/// Progress lines go to stderr with `--output json`, so stdout is the deployment record only.
pub async fn run(admin: &mut Admin, args: DeployArgs) -> anyhow::Result<()> {
    let json = args.output == OutputFormat::Json;
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            // A closed pipe (`| head -1`) is not an error of the deploy.
            let _ = output::emit(&format!("{line}\n"));
        }
    };
    if let Some(dir) = &args.package {
        let record = register(admin, dir).await?;
        anyhow::ensure!(
            record.model == args.model && record.version == args.version,
            "the package is {}/{}, not {}/{}",
            record.model,
            record.version,
            args.model,
            args.version
        );
        say(format!(
            "registered {}/{} (sha256 {})",
            record.model, record.version, &record.sha256
        ));
    }
    let deployment = admin
        .deploy(request(&args))
        .await
        .with_context(|| format!("deploying {}/{}", args.model, args.version))?
        .into_inner()
        .deployment
        .context("Deploy returned no deployment")?;
    let weights: Vec<String> = deployment
        .versions
        .iter()
        .map(|v| format!("{}×{} (weight {})", v.version, v.replicas, v.traffic_weight))
        .collect();
    say(format!(
        "deployed {}: {}",
        deployment.model,
        weights.join(", ")
    ));
    if !args.no_wait {
        let ready = wait_ready(
            admin,
            &args.model,
            &args.version,
            args.replicas as usize,
            Duration::from_secs(args.timeout_secs),
        )
        .await?;
        let workers: Vec<&str> = ready.iter().map(|r| r.worker_id.as_str()).collect();
        say(format!(
            "{}/{} ready on {}",
            args.model,
            args.version,
            workers.join(", ")
        ));
    }
    if json {
        emit_json(&deployment)?;
    }
    Ok(())
}

/// Runs `kiln undeploy`.
pub async fn undeploy(admin: &mut Admin, args: UndeployArgs) -> anyhow::Result<()> {
    let left = admin
        .undeploy(UndeployRequest {
            model: args.model.clone(),
            version: args.version.clone().unwrap_or_default(),
        })
        .await
        .with_context(|| format!("undeploying {}", args.model))?
        .into_inner()
        .deployment;
    match left {
        Some(d) => {
            let versions: Vec<&str> = d.versions.iter().map(|v| v.version.as_str()).collect();
            output::emit(&format!(
                "undeployed; {} keeps version(s) {}\n",
                d.model,
                versions.join(", ")
            ))?;
        }
        None => output::emit(&format!("undeployed {}\n", args.model))?,
    }
    Ok(())
}

/// Runs `kiln scale`.
pub async fn scale(admin: &mut Admin, args: ScaleArgs) -> anyhow::Result<()> {
    admin
        .scale(ScaleRequest {
            model: args.model.clone(),
            version: args.version.clone(),
            replicas: args.replicas,
        })
        .await
        .with_context(|| format!("scaling {}/{}", args.model, args.version))?;
    output::emit(&format!(
        "{}/{} scaled to {} replicas (not waiting: `kiln status` shows them come up)\n",
        args.model, args.version, args.replicas
    ))
}
