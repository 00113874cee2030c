//! Command-line flags of `kiln-loadtest` and their translation into a [`RunConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::assert::Assertions;
use crate::config::{InputRange, LoadConfig, LoadMode, RunConfig, TargetConfig};
use crate::mix::parse_models;
use crate::plan::{self, Plan};
use crate::plan_args::{Levels, PlanArgs, RequestArgs};
use crate::schedule::stages_length;

/// A closed loop of `concurrency`.
fn closed(concurrency: usize) -> LoadMode {
    LoadMode::Closed { concurrency }
}

/// Load generator for Kiln (and any `inference.GRPCInferenceService`): closed-loop
/// (`--concurrency`) or open-loop (`--rate`, coordinated-omission corrected) load with HDR
/// latency histograms.
#[derive(Debug, Clone, Parser)]
#[command(name = "kiln-loadtest", version)]
pub struct Args {
    /// Server address: the gateway or a worker (`host:port`, or a URL).
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub url: String,
    /// Model name; several (repeat the flag or list them) with weights split the requests:
    /// `--model digits:3 --model digits_cnn:1` or `--model digits:3,digits_cnn:1` (weighted,
    /// seeded choice per request).
    #[arg(long, required = true)]
    pub model: Vec<String>,
    /// Model version (default: the server's choice).
    #[arg(long, default_value = "")]
    pub model_version: String,
    /// Items per request (batch dimension).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Range `lo,hi` of random input values (default FP [0,1), INT [0,10)).
    #[arg(long, allow_hyphen_values = true)]
    pub input_range: Option<InputRange>,
    /// Distinct pre-built requests cycled.
    #[arg(long, default_value_t = 16)]
    pub pool: usize,
    /// Seed of the random input data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Closed loop: requests in flight (default 1 when --rate is not given); a list
    /// (`1,4,16,64`) sweeps: one measured run per level, in order.
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<Levels<usize>>,
    /// Open loop: requests per second on a fixed schedule, latency from the intended send; a
    /// list (`100,200,400`) sweeps: one measured run per level, in order.
    #[arg(long)]
    pub rate: Option<Levels<f64>>,
    /// Open loop: most outstanding requests; requests due beyond it are counted as not sent.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Open loop: do not busy-wait for exact send times (saves a core, adds up to 1 ms lag).
    /// A generator allowed a single CPU never spins: the pacer would take it from the requests.
    #[arg(long)]
    pub no_spin: bool,
    /// HTTP/2 connections (default: min(concurrency, 4) closed, 4 open).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured duration (`10s`, `1m30s`, `2.5` seconds); default 10s unless --requests.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Unmeasured warm-up before the measured window.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Measured requests to send (stops at whichever of --duration/--requests comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Per-request gRPC deadline (`500ms`).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Write the full result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Conditions that must hold, else exit 1: `p99<5ms,errors=0,rps>1000,error_rate<1%`
    /// (also `client_cpu<90%`, `p95`, `mean`, `not_sent`, ...: see the `assert` module).
    #[arg(long = "assert")]
    pub assertions: Option<Assertions>,
    /// Output formats and files (`--format`, `--csv`, `--html`, ...).
    #[command(flatten)]
    pub output: crate::output::args::OutputArgs,
    /// Stability windows, SLO search, ramps and arrivals.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Input data, validation and drift.
    #[command(flatten)]
    pub content: RequestArgs,
    /// TLS and token for a secure server.
    #[command(flatten)]
    pub client: kiln_security::ClientArgs,
}

impl Args {
    /// The runs these flags describe: the levels of a sweep (one for a single level), or an
    /// SLO search (validated).
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let base = self.run_config()?;
        if let Some((slo, search)) = self.plan.search() {
            search.validate()?;
            return Ok(Plan::Slo {
                base: Box::new(base),
                slo,
                search,
            });
        }
        let modes: Vec<LoadMode> = match (&self.rate, &self.concurrency) {
            (Some(rates), _) => rates.0.iter().map(|&rate| self.open(rate)).collect(),
            (None, Some(levels)) => levels.0.iter().map(|&c| closed(c)).collect(),
            (None, None) => vec![base.load.mode],
        };
        let mut configs = plan::levels(&base, &modes);
        for config in &mut configs {
            config.load.connections = self
                .connections
                .unwrap_or_else(|| LoadConfig::default_connections(config.load.mode));
            config.load.validate()?;
        }
        Ok(Plan::Levels(configs))
    }

    fn open(&self, rate: f64) -> LoadMode {
        LoadMode::Open {
            rate,
            max_in_flight: self.max_in_flight,
        }
    }

    /// The first run these flags describe (validated).
    pub fn run_config(&self) -> anyhow::Result<RunConfig> {
        let stages = self.plan.stages.clone().map(|s| s.0).unwrap_or_default();
        let peak = stages.iter().map(|s| s.target).fold(0.0, f64::max);
        let mode = match (&self.rate, &self.plan.search(), &self.concurrency) {
            (Some(rates), _, _) => self.open(rates.0[0]),
            (None, Some((_, search)), _) => self.open(search.lo),
            _ if !stages.is_empty() => self.open(peak.max(f64::MIN_POSITIVE)),
            (None, None, levels) => closed(levels.as_ref().map_or(1, |l| l.0[0])),
        };
        let stability = self.plan.stability()?;
        // Stages and stability windows set the measured window's length themselves.
        let duration = match (self.duration, self.requests) {
            _ if !stages.is_empty() => Some(stages_length(&stages)),
            _ if stability.is_some() => stability.map(|s| s.limit()),
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        let load = LoadConfig {
            mode,
            connections: self
                .connections
                .unwrap_or_else(|| LoadConfig::default_connections(mode)),
            warmup: self.warmup,
            duration,
            requests: self.requests,
            spin: !self.no_spin && crate::client_cpu::allowed_cpus() > 1,
            stability,
            stages,
            arrival: self.plan.arrival,
            seed: self.seed,
        };
        load.validate()?;
        anyhow::ensure!(self.batch_size > 0, "batch-size must be at least 1");
        let models = parse_models(&self.model).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!models.is_empty(), "give a --model");
        let tls = self.client.tls()?;
        anyhow::ensure!(
            tls.is_some() || !self.url.starts_with("https://"),
            "an https:// URL needs --tls-ca (the CA bundle that verifies the server)"
        );
        Ok(RunConfig {
            target: TargetConfig {
                url: self.url.clone(),
                model: models[0].name.clone(),
                models: if models.len() > 1 { models } else { Vec::new() },
                model_version: self.model_version.clone(),
                batch_size: self.batch_size,
                input_range: self.input_range,
                pool_size: self.pool.max(1),
                seed: self.seed,
                timeout: self.timeout,
                input_data: self.content.input_data.clone(),
                expected: self.content.expected.clone(),
                validate: self.content.tolerance()?,
                drift: self.content.drift.clone(),
                credentials: crate::target::Credentials {
                    tls,
                    bearer: self.client.bearer()?,
                },
            },
            load,
        })
    }
}

/// Parses a duration: a plain number of seconds (`2.5`), a decimal with one unit (`1.5ms`,
/// `500us`, `2s`, `1m`), or anything humantime accepts (`1m30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    let scale = match unit {
        "ns" => Some(1e-9),
        "us" | "µs" => Some(1e-6),
        "ms" => Some(1e-3),
        "s" => Some(1.0),
        "m" | "min" => Some(60.0),
        "h" => Some(3600.0),
        _ => None,
    };
    if let (Ok(n), Some(scale)) = (number.parse::<f64>(), scale) {
        return Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(ms(2500)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(
            parse_duration("500us"),
            Ok(ms(0) + Duration::from_micros(500))
        );
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn flags_make_a_run() {
        let args = Args::try_parse_from([
            "kiln-loadtest",
            "--model",
            "digits",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--input-range",
            "-1,1",
            "--assert",
            "p99<5ms,errors=0",
        ])
        .unwrap();
        let run = args.run_config().unwrap();
        assert_eq!(
            run.load.mode,
            LoadMode::Open {
                rate: 200.0,
                max_in_flight: 10_000
            }
        );
        assert_eq!(run.load.connections, 4);
        assert_eq!(run.load.duration, Some(Duration::from_secs(3)));
        assert_eq!(
            run.target.input_range,
            Some(InputRange { lo: -1.0, hi: 1.0 })
        );
        assert_eq!(args.assertions.unwrap().0.len(), 2);

        let closed = Args::try_parse_from(["x", "--model", "m", "--concurrency", "2"]).unwrap();
        let run = closed.run_config().unwrap();
        assert_eq!(run.load.mode, LoadMode::Closed { concurrency: 2 });
        assert_eq!(run.load.connections, 2);
        assert_eq!(run.load.duration, Some(Duration::from_secs(10)));
        assert!(
            Args::try_parse_from(["x", "--model", "m", "--concurrency", "2", "--rate", "5"])
                .is_err()
        );
        let by_count = Args::try_parse_from(["x", "--model", "m", "--requests", "100"]).unwrap();
        assert_eq!(by_count.run_config().unwrap().load.duration, None);
    }
}
