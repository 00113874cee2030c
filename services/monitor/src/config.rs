//! The monitor's configuration: a plain struct with [`Default`] for code (`kiln up`, tests) and a
//! clap [`Args`](clap::Args) derive for the binary. Both give the same defaults (a test checks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a monitor instance runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (Admin API, health, reflection). Port 0 picks a free port.
    #[arg(long, env = "KILN_MONITOR_GRPC_ADDR", default_value = "127.0.0.1:8101")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP endpoints (/metrics, /healthz, /readyz). Port 0 picks a free port.
    #[arg(long, env = "KILN_MONITOR_HTTP_ADDR", default_value = "127.0.0.1:8102")]
    pub http_addr: SocketAddr,
    /// TTL of the controller election lease, seconds: a dead leader is replaced within it.
    #[arg(long, default_value_t = 3)]
    pub lease_ttl_secs: u64,
    /// Period of the reconcile tick, milliseconds (watch events trigger it sooner).
    #[arg(long, default_value_t = 1000)]
    pub reconcile_interval_ms: u64,
    /// If set, RegisterModelVersion only accepts packages under this directory.
    #[arg(long, env = "KILN_PACKAGE_ROOT")]
    pub package_root: Option<PathBuf>,
    /// Model repository: registration copies each package to REPOSITORY/MODEL/VERSION (sha256
    /// checked on the copy) and workers load the copy. Unset: packages are used where they are.
    #[arg(long, env = "KILN_REPOSITORY")]
    pub repository: Option<PathBuf>,
    /// Largest Admin request accepted, bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Time a single Admin request may take before it fails with DEADLINE_EXCEEDED, seconds.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Time in-flight requests get to finish on shutdown, seconds.
    #[arg(long, default_value_t = 5)]
    pub shutdown_grace_secs: u64,
    /// Name this instance campaigns with (shown as the leader); defaults to the gRPC address.
    #[arg(long)]
    pub instance_name: Option<String>,
    /// Telemetry windows kept per model version (older windows are dropped).
    #[arg(long, default_value_t = 60)]
    pub telemetry_windows: usize,
    /// Model versions whose telemetry is kept (the least recently pushed is evicted).
    #[arg(long, default_value_t = 64)]
    pub telemetry_versions: usize,
    /// Length of a telemetry window, seconds: pushes are merged into windows aligned on the
    /// Unix epoch.
    #[arg(long, default_value_t = 10)]
    pub telemetry_window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8101)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8102)),
            lease_ttl_secs: 3,
            reconcile_interval_ms: 1000,
            package_root: None,
            repository: None,
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 5,
            instance_name: None,
            telemetry_windows: 60,
            telemetry_versions: 64,
            telemetry_window_secs: 10,
        }
    }
}

impl Config {
    /// A config on ephemeral loopback ports, for tests and embedded use.
    pub fn ephemeral() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// The election lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.max(1))
    }

    /// The reconcile period.
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.reconcile_interval_ms.max(10))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn clap_defaults_match_default() {
        // The env vars behind some flags are never set in tests.
        let parsed = Cli::parse_from(["kiln-monitor"]).config;
        assert_eq!(parsed, Config::default());
        let parsed = Cli::parse_from([
            "kiln-monitor",
            "--grpc-addr",
            "0.0.0.0:1",
            "--lease-ttl-secs",
            "5",
        ])
        .config;
        assert_eq!(parsed.grpc_addr.port(), 1);
        assert_eq!(parsed.lease_ttl(), Duration::from_secs(5));
    }
}
