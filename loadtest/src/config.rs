//! What one run does, as plain data: the target (where, which model, what requests) and the
//! load (closed or open loop, connections, how long). The CLI ([`crate::cli`]) fills these in;
//! tests and later drivers (sweeps, SLO search, stages) build them directly and call
//! [`crate::run`] once per step.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drift::Drift;
use crate::mix::WeightedModel;
use crate::schedule::{Arrival, Stage, stages_length};
use crate::stability::Stability;

/// The server and the requests sent to it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// `host:port` of the gateway or a worker; `http://` is added when no scheme is given.
    pub url: String,
    /// Model name (the first model of a mix).
    pub model: String,
    /// Several models with weights (`--model a:3 --model b:1`); empty: `model` alone.
    pub models: Vec<WeightedModel>,
    /// Model version; empty lets the server choose (the gateway routes by traffic split).
    pub model_version: String,
    /// Items per request (the leading batch dimension) for models with `max_batch_size > 0`.
    pub batch_size: usize,
    /// Range of the random floating-point (and, when given, integer) input values.
    pub input_range: Option<InputRange>,
    /// Distinct pre-built requests, sent in turn.
    pub pool_size: usize,
    /// Seed of the random input data, so runs are repeatable.
    pub seed: u64,
    /// Per-request gRPC deadline (`grpc-timeout`), also enforced on the client side from the
    /// actual send: at the deadline the call is dropped (the stream is reset, as real gRPC
    /// clients do). Open-loop latency counts from the due time, so when the client falls
    /// behind its schedule an OK answer can show more latency than the deadline.
    pub timeout: Option<Duration>,
    /// Rows of input data instead of random values ([`crate::inputs`]: perf_analyzer JSON,
    /// `.npy`, `.csv`).
    pub input_data: Option<PathBuf>,
    /// Expected outputs (`.npy` or JSON `validation_data`) replacing the input data's own.
    pub expected: Option<PathBuf>,
    /// Validate answers against the expected outputs with this tolerance
    /// ([`crate::validate`]).
    pub validate: Option<f64>,
    /// Drift the float inputs over time ([`crate::drift`]).
    pub drift: Option<Drift>,
    /// TLS and token for a secure server (`--tls-*`, `--token`).
    pub credentials: crate::target::Credentials,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            url: "127.0.0.1:8001".into(),
            model: String::new(),
            models: Vec::new(),
            model_version: String::new(),
            batch_size: 1,
            input_range: None,
            pool_size: 16,
            seed: 0,
            timeout: None,
            input_data: None,
            expected: None,
            validate: None,
            drift: None,
            credentials: Default::default(),
        }
    }
}

impl TargetConfig {
    /// The models requests go to, with weights: `models`, or `model` alone.
    pub fn mix(&self) -> Vec<WeightedModel> {
        if self.models.is_empty() {
            vec![WeightedModel {
                name: self.model.clone(),
                weight: 1,
            }]
        } else {
            self.models.clone()
        }
    }
}

/// A half-open value range `[lo, hi)` for random inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputRange {
    /// Lowest value (inclusive).
    pub lo: f64,
    /// Highest value (exclusive).
    pub hi: f64,
}

impl std::str::FromStr for InputRange {
    type Err = String;

    /// Parses `lo,hi` (`0,1`, `-1.5,1.5`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (lo, hi) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: expected lo,hi"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|e| format!("{v:?} in {s:?}: {e}"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo.is_finite() && hi.is_finite() && lo < hi {
            Ok(Self { lo, hi })
        } else {
            Err(format!("{s:?}: need finite lo < hi"))
        }
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadMode {
    /// `concurrency` requests in flight; each worker sends the next as soon as the previous
    /// answers. Latency is measured from the actual send (a closed loop slows down with the
    /// server, so it under-reports queueing: use [`LoadMode::Open`] for latency SLOs).
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// `rate` requests per second on a fixed schedule, each measured from its intended send
    /// time (coordinated omission corrected), at most `max_in_flight` outstanding: a request
    /// due while that many are outstanding is counted as not sent (client saturated).
    Open {
        /// Requests per second.
        rate: f64,
        /// Most outstanding requests.
        max_in_flight: usize,
    },
}

/// The load and its extent.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Closed or open loop.
    pub mode: LoadMode,
    /// Separate HTTP/2 connections (tonic Channels), used round-robin.
    pub connections: usize,
    /// Time at the start whose requests are sent but not recorded.
    pub warmup: Duration,
    /// Measured time after the warm-up; `None` with `requests` set means "until N requests".
    pub duration: Option<Duration>,
    /// Measured requests to issue (after the warm-up); the run stops at whichever of
    /// `duration` and `requests` comes first.
    pub requests: Option<u64>,
    /// Open loop: busy-wait the last millisecond before each due time (precise send times at
    /// the cost of CPU) instead of relying on tokio's 1 ms timer alone.
    pub spin: bool,
    /// End the measured window when its windows are stable (perf_analyzer's rule) instead of
    /// after `duration`; see [`crate::stability`].
    pub stability: Option<Stability>,
    /// Open loop: ramp the rate through these stages instead of holding `rate` (the measured
    /// window is their total length); see [`crate::schedule`].
    pub stages: Vec<Stage>,
    /// Open loop: evenly spaced or Poisson arrivals.
    pub arrival: Arrival,
    /// Seed of the Poisson arrivals.
    pub seed: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            mode: LoadMode::Closed { concurrency: 1 },
            connections: 1,
            warmup: Duration::from_secs(2),
            duration: Some(Duration::from_secs(10)),
            requests: None,
            spin: true,
            stability: None,
            stages: Vec::new(),
            arrival: Arrival::Constant,
            seed: 0,
        }
    }
}

impl LoadConfig {
    /// The default number of connections of a mode: `min(C, 4)` for a closed loop, 4 for an
    /// open loop.
    pub fn default_connections(mode: LoadMode) -> usize {
        match mode {
            LoadMode::Closed { concurrency } => concurrency.clamp(1, 4),
            LoadMode::Open { .. } => 4,
        }
    }

    /// How long the measured window lasts at most: the stability cap, the stages' length, or
    /// `duration` (`None`: until `requests` are sent).
    pub fn measured_limit(&self) -> Option<Duration> {
        if let Some(stability) = &self.stability {
            Some(stability.limit())
        } else if !self.stages.is_empty() {
            Some(stages_length(&self.stages))
        } else {
            self.duration
        }
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.mode {
            LoadMode::Closed { concurrency } => {
                anyhow::ensure!(concurrency > 0, "concurrency must be at least 1")
            }
            LoadMode::Open {
                rate,
                max_in_flight,
            } => {
                anyhow::ensure!(rate.is_finite() && rate > 0.0, "rate must be > 0");
                anyhow::ensure!(max_in_flight > 0, "max-in-flight must be at least 1");
            }
        }
        anyhow::ensure!(self.connections > 0, "connections must be at least 1");
        anyhow::ensure!(
            self.duration.is_some() || self.requests.is_some(),
            "give a duration or a request count"
        );
        anyhow::ensure!(self.requests != Some(0), "requests must be at least 1");
        if let Some(stability) = &self.stability {
            stability.validate()?;
            anyhow::ensure!(
                self.requests.is_none(),
                "stability windows end the run: drop --requests"
            );
        }
        if !self.stages.is_empty() {
            anyhow::ensure!(
                matches!(self.mode, LoadMode::Open { .. }),
                "stages ramp an open loop's rate"
            );
            anyhow::ensure!(
                self.stability.is_none(),
                "stages and stability windows do not mix"
            );
        }
        Ok(())
    }
}

/// One run: a target and a load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunConfig {
    /// Where and what.
    pub target: TargetConfig,
    /// How hard and how long.
    pub load: LoadConfig,
}
