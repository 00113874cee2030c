//! The command line: one clap derive tree, parsed by `main` and tested here without a process.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::commands::credentials::{
    CertsCommand, CertsDevArgs, RoleArg, TokenCommand, TokenNewArgs,
};

mod rollout;

pub use rollout::{
    BatchingArgs, DeployArgs, PromoteArgs, RollbackArgs, ScaleArgs, SplitArgs, UndeployArgs,
    WaitArgs, parse_key_value, parse_version_weight,
};

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
    /// TLS and token for every call.
    #[command(flatten)]
    pub remote: kiln_security::ClientArgs,
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
    /// Register a model version (a package directory) without deploying it.
    Register(RegisterArgs),
    /// Stop serving a model, or one version of it.
    Undeploy(UndeployArgs),
    /// Change the replica count of a deployed version.
    Scale(ScaleArgs),
    /// Show workers, deployments and replicas.
    Status(StatusArgs),
    /// Send one inference request through the gateway and print the outputs.
    Predict(PredictArgs),
    /// Set the traffic weights of a model's deployed versions (`kiln split digits 1=90 2=10`).
    Split(SplitArgs),
    /// Send all traffic to one version and retire the others once it is ready.
    Promote(PromoteArgs),
    /// Return all traffic to the previous version (or `--to VERSION`).
    Rollback(RollbackArgs),
    /// Cordon a worker and wait until its replicas have moved elsewhere (`--undo` lifts it).
    Drain(DrainArgs),
    /// List the workers with their load.
    Workers(ListArgs),
    /// List the registered model versions.
    Models(ModelsArgs),
    /// Print a shell completion script (`kiln completions bash > ~/.kiln.bash`).
    Completions(CompletionsArgs),
    /// Build a package's reference profile from its training data (`reference.profile.pb`).
    Profile(ProfileArgs),
    /// Compare a model version's live traffic with its reference profile, feature by feature.
    Drift(DriftArgs),
    /// Write development TLS certificates (`kiln certs dev --out DIR`).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Make bearer tokens (`kiln token new --client NAME --role infer`).
    #[command(subcommand)]
    Token(TokenCommand),
}

impl Command {
    /// True for the commands that talk to the monitor's Admin API (`--admin`).
    pub fn uses_admin(&self) -> bool {
        !matches!(
            self,
            Command::Up(_)
                | Command::Predict(_)
                | Command::Completions(_)
                | Command::Profile(_)
                | Command::Certs(_)
                | Command::Token(_)
        )
    }

    /// How much above the process's nice value the async runtime runs (`kiln up
    /// --intake-nice`, by default per backend; 0, no split, for every other command).
    pub fn intake_nice(&self) -> i32 {
        match self {
            Command::Up(up) => up
                .intake_nice
                .unwrap_or_else(|| kiln_worker::priority::default_intake_nice(up.backend)),
            _ => 0,
        }
    }
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
    /// Run request intake (the async runtime: gRPC, decoding, admission, refusals) this much
    /// above the process's nice value, the workers' compute and model loading at its own, so
    /// that a flood of requests cannot take the CPU from admitted batches (Linux; 0: no split).
    /// Default: 10 with `--backend wgpu`, else 0.
    #[arg(long, env = "KILN_INTAKE_NICE", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub intake_nice: Option<i32>,
    /// The gateway serves Triton's system shared memory to callers on this host
    /// (perf_analyzer `--shared-memory system`; off by default).
    #[arg(long)]
    pub shared_memory: bool,
    /// Model versions to deploy, `MODEL:VERSION`, one replica per worker (repeatable; `none`
    /// deploys nothing).
    #[arg(long = "deploy", default_value = "digits:1", value_parser = parse_model_version)]
    pub deploy: Vec<ModelVersion>,
    /// How long to wait for the first replicas to become ready, seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
    /// Retrain hook of the monitor (`sh -c`), run when a serving version drifts persistently,
    /// e.g. `models/digits/retrain.sh`; it gets KILN_RETRAIN_DIR (the model repository, where
    /// the new package goes) and KILN (this binary) besides the monitor's variables.
    #[arg(long, env = "KILN_RETRAIN_COMMAND")]
    pub retrain_command: Option<String>,
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

/// `kiln drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Worker id (see `kiln workers`).
    pub worker: String,
    /// Lift the cordon instead.
    #[arg(long)]
    pub undo: bool,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln workers`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln models`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// Only this model.
    pub model: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln profile`.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// The model package (a directory holding kiln.toml).
    #[arg(long)]
    pub package: PathBuf,
    /// Training data: CSV with a header of feature names, or NPY (2-D float32/float64).
    /// Default: the package's `reference` file named in kiln.toml.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

/// `kiln register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// The model package (a directory holding kiln.toml), at a path the monitor can read.
    #[arg(long)]
    pub package: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln drift`.
#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    /// The model.
    pub model: String,
    /// The version (default: the version whose traffic was profiled last).
    #[arg(long)]
    pub version: Option<String>,
    /// Look-back, seconds (0: the monitor's default, 60 s).
    #[arg(long, default_value_t = 0)]
    pub window: u64,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `kiln completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
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
    fn intake_nice_defaults_by_backend_and_applies_to_up_only() {
        assert_eq!(parse(&["up"]).command.intake_nice(), 0);
        assert_eq!(
            parse(&["up", "--backend", "wgpu-cpu"])
                .command
                .intake_nice(),
            0
        );
        assert_eq!(
            parse(&["up", "--backend", "wgpu"]).command.intake_nice(),
            10
        );
        let explicit = parse(&["up", "--backend", "wgpu", "--intake-nice", "0"]);
        assert_eq!(explicit.command.intake_nice(), 0);
        assert_eq!(
            parse(&["up", "--intake-nice", "5"]).command.intake_nice(),
            5
        );
        assert_eq!(parse(&["predict", "digits"]).command.intake_nice(), 0);
        assert!(Cli::try_parse_from(["kiln", "up", "--intake-nice", "20"]).is_err());
        assert!(Cli::try_parse_from(["kiln", "up", "--intake-nice", "-1"]).is_err());
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

    #[test]
    fn parses_deploy_constraints_and_batching() {
        let Command::Deploy(d) = parse(&[
            "deploy",
            "digits",
            "--version",
            "2",
            "--backend",
            "wgpu",
            "--selector",
            "zone=a",
            "--selector",
            "gpu=h100",
            "--max-batch-size",
            "32",
            "--preferred-batch-size",
            "8,16",
            "--preferred-batch-size",
            "32",
            "--max-queue-delay-us",
            "500",
            "-o",
            "json",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(d.backend, "wgpu");
        assert_eq!(d.selector.len(), 2);
        assert_eq!(d.batching.preferred_batch_size, [8, 16, 32]);
        assert_eq!(
            (d.batching.max_batch_size, d.batching.max_queue_delay_us),
            (32, 500)
        );
        assert_eq!(d.batching.max_queue_size, 0);
        assert_eq!(d.output, OutputFormat::Json);
        assert!(
            Cli::try_parse_from(["kiln", "deploy", "d", "--version", "1", "--selector", "x"])
                .is_err()
        );
    }

    #[test]
    fn parses_split_promote_rollback_drain() {
        let Command::Split(s) = parse(&["split", "digits", "1=90", "2=10"]).command else {
            panic!()
        };
        assert_eq!(s.weights, [("1".into(), 90), ("2".into(), 10)]);
        assert!(Cli::try_parse_from(["kiln", "split", "digits"]).is_err());
        assert!(Cli::try_parse_from(["kiln", "split", "digits", "1=x"]).is_err());
        let Command::Promote(p) = parse(&["promote", "digits", "2", "--no-wait"]).command else {
            panic!()
        };
        assert!(p.wait.no_wait);
        assert_eq!(p.wait.timeout, 180);
        let Command::Rollback(r) = parse(&["rollback", "digits", "--to", "1"]).command else {
            panic!()
        };
        assert_eq!(r.to.as_deref(), Some("1"));
        let Command::Drain(d) = parse(&["drain", "worker-1", "--undo", "--timeout", "5"]).command
        else {
            panic!()
        };
        assert!(d.undo);
        assert_eq!(d.wait.timeout, 5);
        assert!(matches!(
            parse(&["completions", "zsh"]).command,
            Command::Completions(_)
        ));
        assert!(Cli::try_parse_from(["kiln", "completions", "tcsh"]).is_err());
    }
}
