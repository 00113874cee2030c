//! `kiln-gateway`: the gateway as a process. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kiln_coord::{EtcdConfig, EtcdCoordinator};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Routes Open Inference Protocol v2 requests to Kiln workers.
#[derive(Parser)]
#[command(name = "kiln-gateway", version, about)]
struct Cli {
    /// etcd client endpoints, comma separated.
    #[arg(
        long,
        env = "KILN_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd: Vec<String>,
    #[command(flatten)]
    config: kiln_gateway::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiln_telemetry::init_tracing();
    let cli = Cli::parse();
    let coord = EtcdCoordinator::connect(&EtcdConfig::new(cli.etcd.clone()))
        .await
        .with_context(|| format!("connect to etcd at {:?}", cli.etcd))?;
    let running = kiln_gateway::start(cli.config, Arc::new(coord)).await?;
    kiln_telemetry::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
