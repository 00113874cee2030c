//! `kiln-worker`: the inference worker as a process. Everything it does is in the library; this
//! only sets the allocator, tracing and flags, connects the coordinator and runs until a signal.

use clap::Parser;
use kiln_coord::SharedCoordinator;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kiln inference worker: serves the models the cluster assigns to it.
#[derive(Parser)]
#[command(name = "kiln-worker", version, about)]
struct Cli {
    #[command(flatten)]
    etcd: kiln_coord::EtcdArgs,

    #[command(flatten)]
    config: kiln_worker::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiln_telemetry::init_tracing();
    let cli = Cli::parse();
    kiln_security::install_crypto_provider();
    let coord: SharedCoordinator = std::sync::Arc::new(cli.etcd.connect().await?);
    let running = kiln_worker::start(cli.config, coord).await?;
    kiln_telemetry::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
