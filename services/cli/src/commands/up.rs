//! `kiln up`: a whole cluster in one process.
//!
//! [`Cluster::start`] starts the monitor, N workers and the gateway through their libraries over
//! one coordinator (in-memory, or etcd with `--etcd`), each binding its port before anything is
//! called. [`Cluster::prepare`] then does what an operator would do over the Admin API: register
//! every package of the model repository, deploy the requested versions (one replica per
//! worker), and wait until each has a READY replica. `run` prints how to call the models and
//! waits for Ctrl-C or SIGTERM; the cluster always shuts down gracefully, gateway first (stop
//! taking requests), then the workers (drain, release leases), then the monitor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_coord::{EtcdConfig, EtcdCoordinator, MemoryCoordinator, SharedCoordinator};
use kiln_model::{Backend, Manifest};
use kiln_proto::kiln::v1::DeployRequest;

use super::deploy::register;
use super::snippets;
use crate::admin::{self, wait_ready};
use crate::args::{ModelVersion, UpArgs};

/// How to lay out the embedded cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Number of workers.
    pub workers: u16,
    /// Bind every service to port 0 instead of the default ports.
    pub ephemeral_ports: bool,
    /// Backend of the workers.
    pub backend: Backend,
    /// The model repository (packages are confined to it).
    pub models: PathBuf,
    /// Compute threads per model version in each worker (None: the worker's default).
    pub compute_threads: Option<usize>,
    /// Disable the workers' dynamic batching (benchmark baseline).
    pub no_dynamic_batching: bool,
    /// The monitor's retrain hook, as given to `kiln up`.
    pub retrain_command: Option<String>,
    /// The gateway serves system shared memory (`kiln-gateway --shared-memory`).
    pub shared_memory: bool,
}

/// A running embedded cluster.
pub struct Cluster {
    /// The monitor (Admin API, controller).
    pub monitor: kiln_monitor::Running,
    /// The workers, in order.
    pub workers: Vec<kiln_worker::Running>,
    /// The gateway.
    pub gateway: kiln_gateway::Running,
    /// Which coordinator the cluster shares (`memory` or `etcd`).
    pub coordinator: &'static str,
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The hook command with the embedded cluster's environment: new packages go into the model
/// repository (the only place its monitor accepts packages from) and `kiln` is this binary.
fn retrain_command(command: &str, models: &Path) -> String {
    let models = std::path::absolute(models).unwrap_or_else(|_| models.to_path_buf());
    let kiln = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "kiln".into());
    format!(
        "KILN_RETRAIN_DIR={} KILN={} {command}",
        shell_quote(&models.display().to_string()),
        shell_quote(&kiln)
    )
}

fn addr(port: u16, ephemeral: bool) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], if ephemeral { 0 } else { port }))
}

impl Cluster {
    /// Starts monitor, workers and gateway. On failure, whatever started is shut down again.
    pub async fn start(config: &ClusterConfig, coord: SharedCoordinator) -> anyhow::Result<Self> {
        let eph = config.ephemeral_ports;
        let monitor = kiln_monitor::start(
            kiln_monitor::Config {
                grpc_addr: addr(8101, eph),
                http_addr: addr(8102, eph),
                package_root: Some(config.models.clone()),
                retrain_command: config
                    .retrain_command
                    .as_deref()
                    .map(|c| retrain_command(c, &config.models)),
                ..kiln_monitor::Config::default()
            },
            coord.clone(),
        )
        .await
        .context("starting the monitor")?;
        let mut workers = Vec::new();
        for i in 1..=config.workers {
            let worker = kiln_worker::Config {
                id: Some(format!("worker-{i}")),
                grpc_addr: addr(9000 + i, eph),
                http_addr: addr(9100 + i, eph),
                backend: config.backend,
                package_root: Some(config.models.clone()),
                no_dynamic_batching: config.no_dynamic_batching,
                // The whole cluster stops together (gateway first): nothing to drain to.
                drain_timeout_secs: 0,
                ..kiln_worker::Config::default()
            };
            let worker = kiln_worker::Config {
                compute_threads: config.compute_threads.unwrap_or(worker.compute_threads),
                ..worker
            };
            match kiln_worker::start(worker, coord.clone()).await {
                Ok(w) => workers.push(w),
                Err(e) => {
                    stop_all(None, workers, monitor).await;
                    return Err(e.context(format!("starting worker-{i}")));
                }
            }
        }
        let gateway = kiln_gateway::Config {
            grpc_addr: addr(8001, eph),
            http_addr: addr(8002, eph),
            shared_memory: config.shared_memory,
            ..kiln_gateway::Config::default()
        };
        let gateway = match kiln_gateway::start(gateway, coord.clone()).await {
            Ok(g) => g,
            Err(e) => {
                stop_all(None, workers, monitor).await;
                return Err(e.context("starting the gateway"));
            }
        };
        Ok(Self {
            monitor,
            workers,
            gateway,
            coordinator: coord.kind(),
        })
    }

    /// Registers every package under `models`, deploys `deploy` (one replica per worker) and waits
    /// up to `within` for a READY replica of each. Returns the deployed packages.
    pub async fn prepare(
        &self,
        models: &Path,
        deploy: &[ModelVersion],
        within: Duration,
    ) -> anyhow::Result<Vec<(PathBuf, Manifest)>> {
        let mut admin = admin::connect(
            &format!("http://{}", self.monitor.grpc_addr),
            &kiln_security::ClientArgs::default(),
        )
        .await?;
        let mut registered = Vec::new();
        for dir in packages(models)? {
            match register(&mut admin, &dir).await {
                Ok(r) => {
                    eprintln!(
                        "registered {}/{} from {}",
                        r.model, r.version, r.package_uri
                    );
                    registered.push((r.model, r.version, dir));
                }
                Err(e) => eprintln!(
                    "warning: skipping {}: {}",
                    dir.display(),
                    crate::describe(&e)
                ),
            }
        }
        let replicas = u32::try_from(self.workers.len()).unwrap_or(1).clamp(1, 64);
        let mut deployed = Vec::new();
        for target in deploy.iter().filter(|t| !t.model.is_empty()) {
            let Some((_, _, dir)) = registered
                .iter()
                .find(|(m, v, _)| *m == target.model && *v == target.version)
            else {
                eprintln!(
                    "warning: {}:{} is not in {}; not deploying it",
                    target.model,
                    target.version,
                    models.display()
                );
                continue;
            };
            admin
                .deploy(DeployRequest {
                    model: target.model.clone(),
                    version: target.version.clone(),
                    replicas,
                    traffic_weight: 0,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("deploying {}:{}", target.model, target.version))?;
            eprintln!(
                "deployed {}/{} with {replicas} replicas",
                target.model, target.version
            );
            deployed.push((dir.clone(), Manifest::read(dir)?));
        }
        for (_, m) in &deployed {
            wait_ready(&mut admin, &m.name, &m.version, 1, within).await?;
        }
        Ok(deployed)
    }

    /// What is running where, for people.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "Kiln is up ({} workers, {} coordinator)\n",
            self.workers.len(),
            self.coordinator
        );
        s.push_str(&format!(
            "  gateway    {:<21} metrics http://{}/metrics\n",
            self.gateway.grpc_addr, self.gateway.http_addr
        ));
        s.push_str(&format!(
            "  monitor    {:<21} metrics http://{}/metrics\n",
            self.monitor.grpc_addr, self.monitor.http_addr
        ));
        for w in &self.workers {
            s.push_str(&format!(
                "  {:<10} {:<21} metrics http://{}/metrics\n",
                w.id, w.grpc_addr, w.http_addr
            ));
        }
        s
    }

    /// Graceful shutdown: gateway, then workers, then monitor.
    pub async fn shutdown(self) {
        stop_all(Some(self.gateway), self.workers, self.monitor).await;
    }
}

async fn stop_all(
    gateway: Option<kiln_gateway::Running>,
    workers: Vec<kiln_worker::Running>,
    monitor: kiln_monitor::Running,
) {
    if let Some(g) = gateway {
        g.shutdown().await;
    }
    join_all(workers.into_iter().map(|w| w.shutdown())).await;
    monitor.shutdown().await;
}

/// Awaits every future concurrently (workers drain in parallel).
async fn join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Every package directory `MODEL/VERSION/` with a `kiln.toml` under `models`, sorted.
pub fn packages(models: &Path) -> anyhow::Result<Vec<PathBuf>> {
    kiln_model::packages(models).with_context(|| format!("reading {}", models.display()))
}

/// Runs `kiln up`.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let models = args.models.canonicalize().with_context(|| {
        format!(
            "model repository {} not found (run from the repository root or pass --models)",
            args.models.display()
        )
    })?;
    let coord: SharedCoordinator = if args.etcd.is_empty() {
        Arc::new(MemoryCoordinator::new())
    } else {
        Arc::new(EtcdCoordinator::connect(&EtcdConfig::new(args.etcd.clone())).await?)
    };
    let config = ClusterConfig {
        workers: args.workers,
        ephemeral_ports: args.ephemeral_ports,
        backend: args.backend,
        models: models.clone(),
        compute_threads: args.compute_threads,
        no_dynamic_batching: args.no_dynamic_batching,
        retrain_command: args.retrain_command.clone(),
        shared_memory: args.shared_memory,
    };
    let cluster = Cluster::start(&config, coord).await?;
    let prepared = tokio::select! {
        r = cluster.prepare(&models, &args.deploy, Duration::from_secs(args.timeout_secs)) => r.map(Some),
        _ = kiln_telemetry::shutdown_signal() => Ok(None),
    };
    match prepared {
        Ok(Some(deployed)) => {
            println!("\n{}", cluster.describe());
            for (dir, manifest) in &deployed {
                let sample = snippets::reference_row(dir, manifest);
                let s = snippets::build(cluster.gateway.grpc_addr, manifest, sample.as_deref());
                println!("Call {}/{}:\n", manifest.name, manifest.version);
                println!("  {}\n", s.kiln);
                println!("  {}\n", s.grpcurl);
                println!("  # Python (pip install tritonclient[grpc] numpy)");
                for line in s.python.lines() {
                    println!(
                        "{}",
                        if line.is_empty() {
                            String::new()
                        } else {
                            format!("  {line}")
                        }
                    );
                }
                println!();
            }
            let admin = cluster.monitor.grpc_addr;
            if admin.port() != 8101 {
                println!("kiln status --admin http://{admin}");
            } else {
                println!("kiln status");
            }
            println!("Press Ctrl-C to stop.");
            kiln_telemetry::shutdown_signal().await;
        }
        Ok(None) => {}
        Err(e) => {
            cluster.shutdown().await;
            return Err(e);
        }
    }
    eprintln!("shutting down…");
    cluster.shutdown().await;
    Ok(())
}
