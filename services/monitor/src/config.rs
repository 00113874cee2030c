//! The monitor's configuration: a plain struct with [`Default`] for code (`kiln up`, tests) and a
//! clap [`Args`](clap::Args) derive for the binary. Both give the same defaults (a test checks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default `--telemetry-max-bytes`: 1 GiB.
pub const DEFAULT_TELEMETRY_MAX_BYTES: usize = 1 << 30;

/// How a monitor instance runs.
#[derive(Debug, Clone, PartialEq, clap::Args)]
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
    /// Largest Admin request or telemetry push accepted, bytes (a push carries a window of every
    /// version the worker serves: ~0.6 MiB per saturated 64-feature version).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
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
    /// Estimated memory of all telemetry windows kept, bytes; over it the oldest windows of any
    /// version are dropped first (a 64-feature window is 0.3-1.9 MiB).
    #[arg(long, default_value_t = DEFAULT_TELEMETRY_MAX_BYTES)]
    pub telemetry_max_bytes: usize,
    /// Length of a telemetry window, seconds: pushes are merged into windows aligned on the
    /// Unix epoch.
    #[arg(long, default_value_t = 10)]
    pub telemetry_window_secs: u64,
    /// Consecutive windows with dataset drift before the KilnDataDrift alert fires.
    #[arg(long, default_value_t = 3)]
    pub drift_alert_windows: u32,
    /// SLO of every deployment: p99 latency of a window, ms (0: not judged).
    #[arg(long, default_value_t = 0.0)]
    pub slo_p99_ms: f64,
    /// SLO of every deployment: error rate of a window, 0..1 (1: not judged).
    #[arg(long, default_value_t = 1.0)]
    pub slo_max_error_rate: f64,
    /// Fewest requests in a window for its SLO to be judged.
    #[arg(long, default_value_t = 20)]
    pub slo_min_requests: u64,
    /// Time after a telemetry window closes before it is judged, ms (workers push closed
    /// windows every --telemetry-interval-secs: keep this above it).
    #[arg(long, default_value_t = 6000)]
    pub watch_settle_ms: u64,
    /// Alertmanager-compatible webhook URL receiving firing and resolved alerts (leader only).
    #[arg(long, env = "KILN_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// Command (run with `sh -c`) when a serving version's KilnDataDrift alert fires; it gets
    /// KILN_MODEL, KILN_VERSION, KILN_NEXT_VERSION and KILN_ADMIN and should register the
    /// retrained version, which then goes through canary and promotion.
    #[arg(long, env = "KILN_RETRAIN_COMMAND")]
    pub retrain_command: Option<String>,
    /// Longest the retrain command may run, seconds.
    #[arg(long, default_value_t = 600)]
    pub retrain_timeout_secs: u64,
    /// Least time between two retrains of a model, seconds; also how long after a retrain a
    /// newly registered version counts as its result, and how long its canary may wait to be
    /// promoted before it is rolled back (a model has one retrained canary at a time).
    #[arg(long, default_value_t = 900)]
    pub retrain_cooldown_secs: u64,
    /// Traffic weight (of 100) of a retrained version's canary.
    #[arg(long, default_value_t = 10)]
    pub canary_weight: u32,
    /// Judged windows within the SLO and without drift before a retrained canary is promoted.
    #[arg(long, default_value_t = 3)]
    pub canary_windows: u32,
    /// Plaintext listener serving only grpc.health.v1, for probes that cannot do TLS.
    #[arg(long, env = "KILN_MONITOR_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// TLS of the Admin and Telemetry endpoints.
    #[command(flatten)]
    pub tls: kiln_security::TlsArgs,
    /// Bearer tokens: kiln.v1.Admin needs an `admin` token when these are set (workers'
    /// telemetry pushes are authenticated by their client certificates instead).
    #[command(flatten)]
    pub tokens: kiln_security::TokenArgs,
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
            max_message_bytes: 32 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 5,
            instance_name: None,
            telemetry_windows: 60,
            telemetry_versions: 64,
            telemetry_max_bytes: DEFAULT_TELEMETRY_MAX_BYTES,
            telemetry_window_secs: 10,
            drift_alert_windows: 3,
            slo_p99_ms: 0.0,
            slo_max_error_rate: 1.0,
            slo_min_requests: 20,
            watch_settle_ms: 6000,
            alert_webhook: None,
            retrain_command: None,
            retrain_timeout_secs: 600,
            retrain_cooldown_secs: 900,
            canary_weight: 10,
            canary_windows: 3,
            health_addr: None,
            tls: kiln_security::TlsArgs::default(),
            tokens: kiln_security::TokenArgs::default(),
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

    /// The watch loop's settings.
    pub fn watch(&self) -> crate::watch::WatchConfig {
        crate::watch::WatchConfig {
            drift_alert_windows: self.drift_alert_windows.max(1),
            slo_p99_ms: self.slo_p99_ms.max(0.0),
            slo_max_error_rate: self.slo_max_error_rate.clamp(0.0, 1.0),
            slo_min_requests: self.slo_min_requests,
            settle: Duration::from_millis(self.watch_settle_ms),
            webhook_url: self.alert_webhook.clone().filter(|u| !u.is_empty()),
            retrain_command: self.retrain_command.clone(),
            retrain_timeout: Duration::from_secs(self.retrain_timeout_secs.max(1)),
            retrain_cooldown: Duration::from_secs(self.retrain_cooldown_secs),
            canary_weight: self.canary_weight.clamp(1, 100),
            canary_windows: self.canary_windows.max(1),
        }
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
