//! The gateway's configuration: one plain struct with defaults, also usable as a clap `Args`
//! group so that `kiln-gateway` and `kiln up` parse the same flags.
//!
//! Every limit is explicit (STYLE.md "unbounded message sizes"); [`Config::validate`] rejects
//! values that would make the gateway refuse all traffic or retry without end.

use std::net::SocketAddr;
use std::time::Duration;

/// Gateway settings. `Default` gives the production defaults of the flags below.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Config {
    /// Address of the inference gRPC endpoint (port 0 picks a free port).
    #[arg(long, env = "KILN_GATEWAY_GRPC_ADDR", default_value = "127.0.0.1:8001")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP endpoints (/metrics, /healthz, /readyz).
    #[arg(long, env = "KILN_GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8002")]
    pub http_addr: SocketAddr,
    /// Deadline given to a request whose caller sent no `grpc-timeout`, in milliseconds.
    #[arg(long = "request-timeout-ms", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Time kept back from the caller's deadline so that the gateway's DEADLINE_EXCEEDED
    /// reaches the caller before the caller gives up by itself, in milliseconds (at most a
    /// tenth of the deadline is kept back).
    #[arg(long = "deadline-margin-ms", default_value_t = 5)]
    pub deadline_margin_ms: u64,
    /// Most inference requests in flight at once; above it requests get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 4096)]
    pub max_inflight: usize,
    /// Largest gRPC message accepted or forwarded, in bytes (bigger: RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Most attempts per request (the first one included), each on a different replica.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: usize,
    /// Retries allowed per request on average (0.1: at most 10 % extra load).
    #[arg(long, default_value_t = 0.1)]
    pub retry_budget_ratio: f64,
    /// Retries allowed per second whatever the request rate (the budget's floor).
    #[arg(long, default_value_t = 10.0)]
    pub retry_budget_floor_per_sec: f64,
    /// Timeout to open a connection to a worker or to the monitor, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub connect_timeout_ms: u64,
    /// The monitor's Admin API (`http://host:port`, or `host:port`) that RepositoryModelLoad
    /// and RepositoryModelUnload call. Absent: the controller leader found in etcd.
    #[arg(long, env = "KILN_ADMIN")]
    pub admin: Option<String>,
    /// Timeout of one worker's answer when ModelStatistics asks every worker, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub stats_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests before cutting them, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Most elements in one input tensor (the product of its shape); bigger: INVALID_ARGUMENT.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_tensor_elements: u64,
    /// Serve Triton's system shared memory extension: callers on this host register POSIX
    /// shared memory objects and pass tensors through them (perf_analyzer
    /// `--shared-memory=system`). Off by default: a registered key is opened with the
    /// gateway's own permissions.
    #[arg(long)]
    pub shared_memory: bool,
    /// Largest leading (batch) dimension of any input; bigger: INVALID_ARGUMENT. Workers also
    /// enforce each model's own `max_batch_size`.
    #[arg(long, default_value_t = 8192)]
    pub max_batch: u64,
    /// Requests per second each client may send (token bucket; the client is the bearer
    /// token's name, else the peer IP). 0: no rate limit. Above it: RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 0.0)]
    pub client_rate_limit: f64,
    /// Burst of the per-client rate limit (0: one second's worth, at least 1).
    #[arg(long, default_value_t = 0)]
    pub client_burst: u32,
    /// Most requests in flight per client (0: no per-client cap; `--max-inflight` still holds).
    /// Each message of a ModelStreamInfer stream counts as one request, for the rate too.
    #[arg(long, default_value_t = 0)]
    pub client_max_inflight: usize,
    /// Plaintext listener serving only grpc.health.v1, for probes that cannot do TLS.
    #[arg(long, env = "KILN_GATEWAY_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// The gateway's own admin token, sent to the monitor's Admin API on RepositoryModelLoad
    /// and RepositoryModelUnload (callers of those need an admin token themselves).
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<kiln_security::Secret>,
    #[command(flatten)]
    pub tls: kiln_security::TlsArgs,
    #[command(flatten)]
    pub tokens: kiln_security::TokenArgs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8002)),
            request_timeout_ms: 30_000,
            deadline_margin_ms: 5,
            max_inflight: 4096,
            max_message_bytes: 64 * 1024 * 1024,
            max_attempts: 3,
            retry_budget_ratio: 0.1,
            retry_budget_floor_per_sec: 10.0,
            connect_timeout_ms: 1_000,
            admin: None,
            stats_timeout_ms: 2_000,
            shutdown_grace_ms: 10_000,
            max_tensor_elements: 16 * 1024 * 1024,
            max_batch: 8192,
            shared_memory: false,
            client_rate_limit: 0.0,
            client_burst: 0,
            client_max_inflight: 0,
            health_addr: None,
            admin_token: None,
            tls: kiln_security::TlsArgs::default(),
            tokens: kiln_security::TokenArgs::default(),
        }
    }
}

impl Config {
    /// A config for tests and embedding: both endpoints on loopback port 0, other values default.
    pub fn ephemeral() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.request_timeout_ms > 0,
            "--request-timeout-ms must be > 0"
        );
        anyhow::ensure!(self.max_inflight > 0, "--max-inflight must be > 0");
        anyhow::ensure!(
            self.max_message_bytes > 0,
            "--max-message-bytes must be > 0"
        );
        anyhow::ensure!(
            (1..=10).contains(&self.max_attempts),
            "--max-attempts must be between 1 and 10"
        );
        anyhow::ensure!(
            self.retry_budget_ratio.is_finite() && self.retry_budget_ratio >= 0.0,
            "--retry-budget-ratio must be a non-negative number"
        );
        anyhow::ensure!(
            self.retry_budget_floor_per_sec.is_finite() && self.retry_budget_floor_per_sec >= 0.0,
            "--retry-budget-floor-per-sec must be a non-negative number"
        );
        anyhow::ensure!(
            self.connect_timeout_ms > 0,
            "--connect-timeout-ms must be > 0"
        );
        anyhow::ensure!(self.stats_timeout_ms > 0, "--stats-timeout-ms must be > 0");
        if let Some(admin) = &self.admin {
            admin_url(admin)?;
        }
        anyhow::ensure!(
            self.max_tensor_elements > 0 && self.max_batch > 0,
            "--max-tensor-elements and --max-batch must be > 0"
        );
        anyhow::ensure!(
            self.client_rate_limit.is_finite() && self.client_rate_limit >= 0.0,
            "--client-rate-limit must be a non-negative number"
        );
        Ok(())
    }

    /// [`Config::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Config::deadline_margin_ms`] as a duration.
    pub fn deadline_margin(&self) -> Duration {
        Duration::from_millis(self.deadline_margin_ms)
    }

    /// [`Config::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Config::stats_timeout_ms`] as a duration.
    pub fn stats_timeout(&self) -> Duration {
        Duration::from_millis(self.stats_timeout_ms)
    }

    /// [`Config::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// The URL of an `--admin` value: `http://` is added to a bare `host:port`; the result must be
/// a valid `http` or `https` URI with a host.
pub fn admin_url(value: &str) -> anyhow::Result<String> {
    kiln_proto::edge::endpoint_url(value).map_err(|e| anyhow::anyhow!("--admin {e}"))
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
    fn flag_defaults_match_default() {
        let cli = Cli::try_parse_from(["kiln-gateway"]).unwrap();
        assert_eq!(cli.config, Config::default());
        cli.config.validate().unwrap();
    }

    #[test]
    fn flags_override_and_validate() {
        let cli = Cli::try_parse_from([
            "kiln-gateway",
            "--request-timeout-ms",
            "500",
            "--max-inflight",
            "8",
            "--max-message-bytes",
            "1024",
        ])
        .unwrap();
        assert_eq!(cli.config.request_timeout(), Duration::from_millis(500));
        assert_eq!(cli.config.max_inflight, 8);
        assert_eq!(cli.config.max_message_bytes, 1024);
        let bad = Config {
            max_attempts: 0,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn admin_flag_takes_a_url_or_host_port() {
        let cli = Cli::try_parse_from(["kiln-gateway", "--admin", "127.0.0.1:8101"]).unwrap();
        assert_eq!(cli.config.admin.as_deref(), Some("127.0.0.1:8101"));
        cli.config.validate().unwrap();
        assert_eq!(
            admin_url("127.0.0.1:8101").unwrap(),
            "http://127.0.0.1:8101"
        );
        assert_eq!(
            admin_url("https://monitor:8101").unwrap(),
            "https://monitor:8101"
        );
        for bad in ["", "ftp://monitor:8101", "http://"] {
            let config = Config {
                admin: Some(bad.into()),
                ..Config::default()
            };
            assert!(config.validate().is_err(), "{bad:?}");
        }
    }
}
