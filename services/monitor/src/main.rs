//! `kiln-monitor`: the control plane as its own process (Admin API, controller, metrics).

use clap::Parser;
use kiln_coord::SharedCoordinator;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kiln's monitor: Admin API and leader-elected controller.
#[derive(Parser)]
#[command(name = "kiln-monitor", version, about)]
struct Cli {
    #[command(flatten)]
    etcd: kiln_coord::EtcdArgs,
    #[command(flatten)]
    config: kiln_monitor::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiln_telemetry::init_tracing();
    let cli = Cli::parse();
    kiln_security::install_crypto_provider();
    let coord: SharedCoordinator = Arc::new(cli.etcd.connect().await?);
    let running = kiln_monitor::start(cli.config, coord).await?;
    kiln_telemetry::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Flags of the flattened groups (TLS, tokens, etcd, the service's own) never collide.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
