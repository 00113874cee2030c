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

    /// Run request intake (the async runtime: gRPC, decoding, admission, refusals) this much
    /// above the process's nice value, compute and model loading at its own, so that a flood
    /// of requests cannot take the CPU from admitted batches (Linux; 0: no split). Default: 10
    /// with `--backend wgpu`, else 0.
    #[arg(long, env = "KILN_INTAKE_NICE", value_parser = clap::value_parser!(i32).range(0..=19))]
    intake_nice: Option<i32>,
}

fn main() -> anyhow::Result<()> {
    kiln_telemetry::init_tracing();
    let cli = Cli::parse();
    kiln_security::install_crypto_provider();
    let nice = cli
        .intake_nice
        .unwrap_or_else(|| kiln_worker::priority::default_intake_nice(cli.config.backend));
    kiln_worker::priority::runtime(nice)?.block_on(async {
        let coord: SharedCoordinator = std::sync::Arc::new(cli.etcd.connect().await?);
        let running = kiln_worker::start(cli.config, coord).await?;
        kiln_telemetry::shutdown_signal().await;
        running.shutdown().await;
        Ok(())
    })
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
