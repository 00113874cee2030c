//! The command line: one clap derive tree, parsed by `main` and tested here without a process.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Kiln: a gRPC model-serving cluster. `kiln up` runs one on this machine.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    /// Admin API of the monitor (kiln.v1.Admin).
    #[arg(
        long,
        global = true,
        env = "KILN_ADMIN",
        default_value = "http://127.0.0.1:8101"
    )]
    pub admin: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole cluster in this process (monitor, workers, gateway) and deploy the demo models.
    Up(UpArgs),
    /// Register (with --package) and deploy a model version, then wait for its replicas.
    Deploy(DeployArgs),
    /// Stop serving a model, or one version of it.
    Undeploy(UndeployArgs),
    /// Change the replica count of a deployed version.
    Scale(ScaleArgs),
    /// Show workers, deployments and replicas.
    Status(StatusArgs),
    /// Send one inference request through the gateway and print the outputs.
    Predict(PredictArgs),
}

/// How lists are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
}

/// `kiln up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Use this etcd (comma-separated endpoints) instead of the in-memory store.
    #[arg(long, env = "KILN_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Model repository: every `MODEL/VERSION/kiln.toml` under it is registered.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Number of workers (worker i listens on 9000+i, metrics on 9100+i).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub workers: u16,
    /// Bind every service to a free port instead of the defaults (8001, 8101, 9001, ...).
    #[arg(long)]
    pub ephemeral_ports: bool,
    /// burn backend of the workers: flex, ndarray, wgpu or wgpu-cpu.
    #[arg(long, default_value = "flex")]
    pub backend: kiln_model::Backend,
    /// Compute threads per loaded model version in each worker (a package's `instance_count`
    /// wins); default: the worker's default.
    #[arg(long)]
    pub compute_threads: Option<usize>,
    /// Run every request alone in the workers (the baseline for batching benchmarks).
    #[arg(long)]
    pub no_dynamic_batching: bool,
    /// Model versions to deploy, `MODEL:VERSION`, one replica per worker (repeatable; `none`
    /// deploys nothing).
    #[arg(long = "deploy", default_value = "digits:1", value_parser = parse_model_version)]
    pub deploy: Vec<ModelVersion>,
    /// How long to wait for the first replicas to become ready, seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
}

/// A `MODEL:VERSION` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
}

/// Parses `MODEL:VERSION` (`none` parses to an empty model, meaning "deploy nothing").
pub fn parse_model_version(s: &str) -> Result<ModelVersion, String> {
    if s == "none" {
        return Ok(ModelVersion {
            model: String::new(),
            version: String::new(),
        });
    }
    match s.split_once(':') {
        Some((m, v)) if !m.is_empty() && !v.is_empty() => Ok(ModelVersion {
            model: m.to_string(),
            version: v.to_string(),
        }),
        _ => Err(format!("{s:?} is not MODEL:VERSION")),
    }
}

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
    #[arg(long, default_value_t = 0)]
    pub traffic_weight: u32,
    /// Return once the deployment is written instead of waiting for the replicas.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the replicas, seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
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

/// `kiln status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Model name.
    pub model: String,
    /// Version (default: the gateway routes by the deployment's traffic split).
    #[arg(long, default_value = "")]
    pub version: String,
    /// Input values: comma- or space-separated numbers, or a JSON array (nested arrays are
    /// rows of a batch). Random values when neither this nor --input-file is given.
    #[arg(long, conflicts_with = "input_file", allow_hyphen_values = true)]
    pub input: Option<String>,
    /// File with the input values, in the same formats as --input; a JSON object's `inputs`
    /// field is used (so `models/digits/testdata/heldout.json` works, one row per item).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Send only the first N rows of a batch.
    #[arg(long)]
    pub rows: Option<usize>,
    /// Gateway (inference.GRPCInferenceService) to call.
    #[arg(long, env = "KILN_GATEWAY", default_value = "http://127.0.0.1:8001")]
    pub gateway: String,
    /// Probabilities to show per item.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_up_with_defaults_and_options() {
        let Command::Up(up) = parse(&["up"]).command else {
            panic!()
        };
        assert_eq!(up.workers, 2);
        assert!(up.etcd.is_empty());
        assert_eq!(up.models, PathBuf::from("models"));
        assert_eq!(up.deploy, [parse_model_version("digits:1").unwrap()]);
        let Command::Up(up) = parse(&[
            "up",
            "--workers",
            "3",
            "--ephemeral-ports",
            "--etcd",
            "http://a:2379,http://b:2379",
            "--deploy",
            "m:2",
            "--deploy",
            "n:1",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(up.workers, 3);
        assert!(up.ephemeral_ports);
        assert_eq!(up.etcd.len(), 2);
        assert_eq!(up.deploy.len(), 2);
        assert!(Cli::try_parse_from(["kiln", "up", "--workers", "0"]).is_err());
        assert!(Cli::try_parse_from(["kiln", "up", "--deploy", "digits"]).is_err());
    }

    #[test]
    fn parses_deploy_and_global_admin() {
        let cli = parse(&[
            "deploy",
            "digits",
            "--version",
            "1",
            "--replicas",
            "2",
            "--admin",
            "http://h:1",
        ]);
        assert_eq!(cli.admin, "http://h:1");
        let Command::Deploy(d) = cli.command else {
            panic!()
        };
        assert_eq!(
            (d.model.as_str(), d.version.as_str(), d.replicas),
            ("digits", "1", 2)
        );
        assert!(!d.no_wait);
        assert!(d.package.is_none());
        assert!(
            Cli::try_parse_from(["kiln", "deploy", "digits"]).is_err(),
            "--version is required"
        );
        assert!(
            Cli::try_parse_from(["kiln", "deploy", "d", "--version", "1", "--replicas", "65"])
                .is_err()
        );
    }

    #[test]
    fn parses_predict_and_status() {
        let Command::Predict(p) = parse(&["predict", "digits", "--input", "-1,2.5,3"]).command
        else {
            panic!()
        };
        assert_eq!(p.input.as_deref(), Some("-1,2.5,3"));
        assert_eq!(p.gateway, "http://127.0.0.1:8001");
        assert_eq!(p.version, "");
        assert!(
            Cli::try_parse_from([
                "kiln",
                "predict",
                "m",
                "--input",
                "1",
                "--input-file",
                "x.json"
            ])
            .is_err()
        );
        let Command::Status(s) = parse(&["status", "-o", "json"]).command else {
            panic!()
        };
        assert_eq!(s.output, OutputFormat::Json);
    }
}
