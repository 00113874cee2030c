//! Arguments of the commands that change what is deployed: deploy, split, promote, rollback,
//! undeploy, scale.

use std::path::PathBuf;

use clap::Args;

use super::OutputFormat;

/// `kiln deploy`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// Model name.
    pub model: String,
    /// Version to deploy.
    #[arg(long)]
    pub version: String,
    /// Replicas of the version (1-64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub replicas: u32,
    /// Register this package directory first (a path the monitor can read).
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// Traffic weight of a newly deployed version (0: the first version gets 100, later ones
    /// none until a traffic split gives them some).
    #[arg(long, visible_alias = "weight", default_value_t = 0)]
    pub traffic_weight: u32,
    /// Place replicas only on workers with this backend (flex, ndarray, wgpu, ...).
    #[arg(long, default_value = "")]
    pub backend: String,
    /// Place replicas only on workers with this label, `KEY=VALUE` (repeatable).
    #[arg(long = "selector", value_parser = parse_key_value)]
    pub selector: Vec<(String, String)>,
    /// Batching overrides of the package's kiln.toml (0 or absent keeps the package's value).
    #[command(flatten)]
    pub batching: BatchingArgs,
    /// Return once the deployment is written instead of waiting for the replicas.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the replicas, seconds.
    #[arg(long, visible_alias = "timeout", default_value_t = 180)]
    pub timeout_secs: u64,
    /// Output format (json: the resulting deployment record).
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Batching overrides of `kiln deploy`.
#[derive(Debug, Clone, Default, Args)]
pub struct BatchingArgs {
    /// Largest batch the workers form for this version.
    #[arg(long, default_value_t = 0)]
    pub max_batch_size: u32,
    /// Batch sizes to prefer (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub preferred_batch_size: Vec<u32>,
    /// Longest a request waits for a batch to fill, microseconds.
    #[arg(long, default_value_t = 0)]
    pub max_queue_delay_us: u64,
    /// Most requests queued per replica before new ones are refused.
    #[arg(long, default_value_t = 0)]
    pub max_queue_size: u32,
}

/// Parses `KEY=VALUE` (a non-empty key).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Parses `VERSION=WEIGHT`.
pub fn parse_version_weight(s: &str) -> Result<(String, u32), String> {
    match s.split_once('=') {
        Some((v, w)) if !v.is_empty() => w
            .parse()
            .map(|w| (v.to_string(), w))
            .map_err(|_| format!("weight {w:?} of {v:?} is not a whole number")),
        _ => Err(format!("{s:?} is not VERSION=WEIGHT")),
    }
}

/// `kiln split`.
#[derive(Debug, Clone, Args)]
pub struct SplitArgs {
    /// Model name.
    pub model: String,
    /// New weights, `VERSION=WEIGHT` each; deployed versions not listed get 0.
    #[arg(required = true, value_parser = parse_version_weight)]
    pub weights: Vec<(String, u32)>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// How `kiln promote`, `kiln rollback` and `kiln drain` wait.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return once the change is written instead of waiting for the cluster to follow.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait, seconds.
    #[arg(long, visible_alias = "timeout-secs", default_value_t = 180)]
    pub timeout: u64,
}

/// `kiln promote`.
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// Model name.
    pub model: String,
    /// The version to take all traffic.
    pub version: String,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln rollback`.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// Model name.
    pub model: String,
    /// Version to return to (default: the one that had the traffic before the last promote).
    #[arg(long)]
    pub to: Option<String>,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln undeploy`.
#[derive(Debug, Clone, Args)]
pub struct UndeployArgs {
    /// Model name.
    pub model: String,
    /// Only this version (default: every version).
    #[arg(long)]
    pub version: Option<String>,
}

/// `kiln scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Model name.
    pub model: String,
    /// Deployed version.
    #[arg(long)]
    pub version: String,
    /// New replica count (1-64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub replicas: u32,
}
