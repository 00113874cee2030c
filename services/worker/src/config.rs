//! The worker's configuration: one plain struct, usable from code (`kiln up`, tests) through
//! [`Default`] and from the command line through its clap derive (flags `--grpc-addr`, env
//! `KILN_GRPC_ADDR`, ...). Flags win over the environment, which wins over the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kiln_model::Backend;

/// Default gRPC address of worker 1 (worker i: 9000 + i).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:9001";
/// Default HTTP address (/metrics, /healthz, /readyz) of worker 1 (worker i: 9100 + i).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9101";
/// Default gRPC message size limit, both directions: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Default bound of the rows waiting to be profiled, per model version (64 Ki rows: 16 MiB of
/// 64-feature FP32 rows at most).
pub const DEFAULT_TELEMETRY_BUFFER_ROWS: usize = 65_536;
/// Default of `--telemetry-buffer-bytes`: 64 MiB per model version.
pub const DEFAULT_TELEMETRY_BUFFER_BYTES: usize = 64 << 20;

/// How a worker runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Worker id, a key segment (letters, digits, `-_.`); default `{hostname}-{grpc port}`.
    #[arg(long, env = "KILN_ID")]
    pub id: Option<String>,

    /// Address the inference gRPC server binds (port 0 picks a free port).
    #[arg(long, env = "KILN_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,

    /// `host:port` published in the coordination store for gateways to dial; default the bound
    /// gRPC address.
    #[arg(long, env = "KILN_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Address of the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "KILN_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// burn backend that runs the models: flex, ndarray, wgpu or wgpu-cpu (the last three need
    /// the matching cargo feature).
    #[arg(long, env = "KILN_BACKEND", default_value = "flex")]
    pub backend: Backend,

    /// TTL of the worker's lease; its keys vanish this long after the worker dies.
    #[arg(long, env = "KILN_LEASE_TTL_SECS", default_value_t = 3)]
    pub lease_ttl_secs: u64,

    /// Compute threads per loaded model version.
    #[arg(long, env = "KILN_COMPUTE_THREADS", default_value_t = default_compute_threads())]
    pub compute_threads: usize,

    /// Run every request alone: disables the dynamic batcher's merging (a baseline for
    /// benchmarks; the manifest's batching knobs then only bound the queue).
    #[arg(long, env = "KILN_NO_DYNAMIC_BATCHING")]
    pub no_dynamic_batching: bool,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "KILN_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// How long shutdown waits for in-flight requests before cutting them off.
    #[arg(long, env = "KILN_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// On shutdown, how long to wait for the controller to move this worker's replicas to other
    /// workers (each old one goes once its replacement is READY) before leaving anyway; 0 skips
    /// the wait. Skipped too when no other worker is live.
    #[arg(long, env = "KILN_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// How long a replica keeps serving after it is withdrawn (unassigned, or at shutdown), so
    /// that gateways see the withdrawal before the version goes, milliseconds.
    #[arg(long, env = "KILN_UNLOAD_DELAY_MS", default_value_t = 1000)]
    pub unload_delay_ms: u64,

    /// If set, model packages must lie under this directory (others fail to load).
    #[arg(long, env = "KILN_PACKAGE_ROOT")]
    pub package_root: Option<PathBuf>,

    /// Memory available for models, in bytes, advertised for placement; default the host's total
    /// memory (0 if unknown).
    #[arg(long, env = "KILN_CAPACITY_BYTES")]
    pub capacity_bytes: Option<u64>,

    /// Scheduling labels advertised in the worker record, `key=value` (repeatable).
    #[arg(long = "label", env = "KILN_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Length of a traffic-profile window and how often closed windows are pushed to the
    /// monitor(s), seconds; 0 disables telemetry (no sampling, no profiling thread, no pushes).
    #[arg(long, env = "KILN_TELEMETRY_INTERVAL_SECS", default_value_t = 5)]
    pub telemetry_interval_secs: u64,

    /// Monitors to push profiles to (`host:port` or `http://host:port`, comma separated);
    /// default: every monitor in the controller election (`/kiln/v1/election/controller/`).
    #[arg(long = "monitor", env = "KILN_MONITOR", value_delimiter = ',')]
    pub monitors: Vec<String>,

    /// Fraction of requests whose rows are profiled (0 < rate <= 1; every request by default).
    /// Request counts, errors and latency always cover every request.
    #[arg(long, env = "KILN_TELEMETRY_SAMPLE_RATE", default_value_t = 1.0)]
    pub telemetry_sample_rate: f64,

    /// Most rows profiled per second per model version (0: every sampled row). Profiling more
    /// adds no drift accuracy (the sketches' rank error bounds it) and would take CPU from
    /// serving at high load; counts, errors and latency still cover every request.
    #[arg(long, env = "KILN_TELEMETRY_MAX_ROWS_PER_SEC", default_value_t = 2000)]
    pub telemetry_max_rows_per_sec: u64,

    /// Rows waiting for the profiling thread, per model version, beyond which a request's rows
    /// are dropped (and counted in `kiln_telemetry_samples_dropped_total`) rather than waited for.
    #[arg(long, env = "KILN_TELEMETRY_BUFFER_ROWS", default_value_t = DEFAULT_TELEMETRY_BUFFER_ROWS)]
    pub telemetry_buffer_rows: usize,

    /// Bytes of copied rows waiting for the profiling thread, per model version, beyond which a
    /// request's rows are dropped like over `--telemetry-buffer-rows` (a row of a model with
    /// wide outputs can be large).
    #[arg(long, env = "KILN_TELEMETRY_BUFFER_BYTES", default_value_t = DEFAULT_TELEMETRY_BUFFER_BYTES)]
    pub telemetry_buffer_bytes: usize,

    /// Plaintext listener serving only grpc.health.v1, for probes that cannot do TLS.
    #[arg(long, env = "KILN_WORKER_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// TLS of the inference endpoint and of the telemetry pushes to the monitor.
    #[command(flatten)]
    pub tls: kiln_security::TlsArgs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            id: None,
            grpc_addr: DEFAULT_GRPC_ADDR.parse().expect("valid default"),
            advertise_addr: None,
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default"),
            backend: Backend::Flex,
            lease_ttl_secs: 3,
            compute_threads: default_compute_threads(),
            no_dynamic_batching: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shutdown_grace_secs: 10,
            drain_timeout_secs: 30,
            unload_delay_ms: 1000,
            package_root: None,
            capacity_bytes: None,
            labels: Vec::new(),
            telemetry_interval_secs: 5,
            monitors: Vec::new(),
            telemetry_sample_rate: 1.0,
            telemetry_max_rows_per_sec: 2000,
            telemetry_buffer_rows: DEFAULT_TELEMETRY_BUFFER_ROWS,
            telemetry_buffer_bytes: DEFAULT_TELEMETRY_BUFFER_BYTES,
            health_addr: None,
            tls: kiln_security::TlsArgs::default(),
        }
    }
}

impl Config {
    /// The lease TTL (at least one second).
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.max(1))
    }

    /// How long shutdown waits for the replicas to move.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// The linger of a withdrawn replica.
    pub fn unload_delay(&self) -> Duration {
        Duration::from_millis(self.unload_delay_ms)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The telemetry window length; `None` when telemetry is disabled.
    pub fn telemetry_interval(&self) -> Option<Duration> {
        (self.telemetry_interval_secs > 0)
            .then(|| Duration::from_secs(self.telemetry_interval_secs))
    }
}

/// `min(2, cores)`: enough to overlap two requests without starving the async runtime and the
/// backend's own intra-op threads on small machines.
pub fn default_compute_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

/// The default worker id: `{hostname}-{port}`, reduced to key-safe characters; a random id when
/// the host name is unknown.
pub(crate) fn default_worker_id(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .filter(|h| !h.is_empty() && h.len() <= 100)
        .unwrap_or_else(|| format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    format!("{host}-{port}")
}

/// Total memory of the host from `/proc/meminfo`, 0 if unknown.
pub(crate) fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn flags_match_the_defaults() {
        let parsed = Cli::try_parse_from(["kiln-worker"]).unwrap().config;
        let default = Config::default();
        assert_eq!(parsed.grpc_addr, default.grpc_addr);
        assert_eq!(parsed.http_addr, default.http_addr);
        assert_eq!(parsed.backend, default.backend);
        assert_eq!(parsed.max_message_bytes, 64 << 20);
        assert_eq!(parsed.compute_threads, default.compute_threads);
        assert_eq!(parsed.lease_ttl(), Duration::from_secs(3));
        assert_eq!(
            parsed.telemetry_interval_secs,
            default.telemetry_interval_secs
        );
        assert_eq!(parsed.telemetry_interval(), Some(Duration::from_secs(5)));
        assert_eq!(parsed.monitors, default.monitors);
        assert_eq!(parsed.telemetry_sample_rate, default.telemetry_sample_rate);
        assert_eq!(parsed.telemetry_buffer_rows, default.telemetry_buffer_rows);
        assert_eq!(parsed.telemetry_buffer_bytes, 64 << 20);
    }

    #[test]
    fn parses_telemetry_flags() {
        let c = Cli::try_parse_from([
            "kiln-worker",
            "--telemetry-interval-secs",
            "0",
            "--monitor",
            "127.0.0.1:8101,http://m2:8101",
            "--telemetry-sample-rate",
            "0.25",
            "--telemetry-buffer-rows",
            "100",
            "--telemetry-buffer-bytes",
            "4096",
        ])
        .unwrap()
        .config;
        assert_eq!(c.telemetry_interval(), None);
        assert_eq!(c.monitors, ["127.0.0.1:8101", "http://m2:8101"]);
        assert_eq!(c.telemetry_sample_rate, 0.25);
        assert_eq!(c.telemetry_buffer_rows, 100);
        assert_eq!(c.telemetry_buffer_bytes, 4096);
    }

    #[test]
    fn parses_flags() {
        let c = Cli::try_parse_from([
            "kiln-worker",
            "--grpc-addr",
            "0.0.0.0:9002",
            "--backend",
            "ndarray",
            "--label",
            "zone=a",
            "--label",
            "gpu=none",
            "--compute-threads",
            "4",
        ])
        .unwrap()
        .config;
        assert_eq!(c.grpc_addr.port(), 9002);
        assert_eq!(c.backend, Backend::Ndarray);
        assert_eq!(c.compute_threads, 4);
        assert_eq!(c.labels.len(), 2);
        assert!(Cli::try_parse_from(["kiln-worker", "--backend", "tpu"]).is_err());
        assert!(Cli::try_parse_from(["kiln-worker", "--label", "novalue"]).is_err());
    }

    #[test]
    fn default_id_is_a_key_segment() {
        let id = default_worker_id(9001);
        assert!(kiln_coord::keys::valid_segment(&id), "{id}");
        assert!(id.ends_with("-9001"));
    }
}
