//! `kiln-gateway`: the gateway as a process. Everything else is in the library.

use std::sync::Arc;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Routes Open Inference Protocol v2 requests to Kiln workers.
#[derive(Parser)]
#[command(name = "kiln-gateway", version, about)]
struct Cli {
    #[command(flatten)]
    etcd: kiln_coord::EtcdArgs,
    #[command(flatten)]
    config: kiln_gateway::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiln_telemetry::init_tracing();
    let cli = Cli::parse();
    kiln_security::install_crypto_provider();
    let coord = cli.etcd.connect().await?;
    let running = kiln_gateway::start(cli.config, Arc::new(coord)).await?;
    kiln_telemetry::shutdown_signal().await;
    tracing::info!("shutting down");
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
