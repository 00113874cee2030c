//! `kiln-monitor`: the control plane as its own process (Admin API, controller, metrics).

use clap::Parser;
use kiln_coord::{EtcdConfig, EtcdCoordinator, SharedCoordinator};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kiln's monitor: Admin API and leader-elected controller.
#[derive(Parser)]
#[command(name = "kiln-monitor", version, about)]
struct Cli {
    /// etcd client endpoints, comma-separated.
    #[arg(
        long,
        env = "KILN_ETCD",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    #[command(flatten)]
    config: kiln_monitor::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiln_telemetry::init_tracing();
    let cli = Cli::parse();
    let coord: SharedCoordinator =
        Arc::new(EtcdCoordinator::connect(&EtcdConfig::new(cli.etcd)).await?);
    let running = kiln_monitor::start(cli.config, coord).await?;
    kiln_telemetry::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
