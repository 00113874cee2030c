//! `kiln-loadtest`: a load generator for Kiln and any other `inference.GRPCInferenceService`
//! (Triton's protocol), in the spirit of wrk2 and perf_analyzer.
//!
//! One run ([`run`]) connects `K` HTTP/2 connections to the target, reads the model's
//! signature (ModelMetadata + ModelConfig), pre-builds a pool of random requests, then drives
//! either a closed loop (`C` in flight) or an open loop (`R` per second on a fixed schedule,
//! latency counted from each request's due time, so coordinated omission is corrected) for a
//! warm-up plus a measured window, and returns a [`Report`]: per-status counts and HDR latency
//! summaries, throughput, send lag and a per-second series. [`report`] documents the JSON.
//!
//! Modules:
//! - [`config`]: what a run does, as plain data (so sweeps and SLO searches can call [`run`]
//!   in a loop); [`cli`] and [`plan_args`]: the flags that fill it in.
//! - [`plan`]: several runs — a sweep of levels or an SLO search ([`slo`]) — and their JSON.
//! - [`target`]: connections, model descriptions, request pools, the gRPC [`load::Call`];
//!   [`data`]: random tensor contents; [`inputs`]: input data files (perf_analyzer JSON,
//!   `.npy`, `.csv`); [`validate`]: output validation; [`drift`]: input drift over time;
//!   [`mix`]: weighted models and per-model counts.
//! - [`load`]: the closed and open loops over any [`load::Call`]; [`schedule`]: open-loop
//!   arrivals (constant, ramped stages, Poisson); [`stability`]: perf_analyzer's stability
//!   windows; [`record`]: histograms and the per-second series.
//! - [`extras`]: the load side's optional report fields.
//! - [`report`]: the result and its JSON; [`output`]: the table and the other formats (ghz
//!   JSON, perf_analyzer CSV, HTML, HdrHistogram logs); [`server_stats`]: the server's
//!   ModelStatistics over the window; [`client_cpu`]: the load generator's own CPU over it;
//!   [`mod@assert`]: `--assert` conditions.

pub mod assert;
pub mod cli;
pub mod client_cpu;
pub mod config;
pub mod data;
pub mod drift;
pub mod extras;
pub mod inputs;
pub mod load;
pub mod mix;
pub mod output;
pub mod plan;
pub mod plan_args;
pub mod progress;
pub mod record;
pub mod report;
pub mod schedule;
pub mod server_stats;
pub mod slo;
pub mod stability;
pub mod target;
pub mod validate;

#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod plan_tests;

pub use config::{LoadConfig, LoadMode, RunConfig, TargetConfig};
pub use report::Report;

/// Runs `config` against its target and reports the measured outcomes.
pub async fn run(config: &RunConfig) -> anyhow::Result<Report> {
    run_live(config, None).await
}

/// [`run`], also counting every answer (warm-up included) into `live`, for a progress display
/// ([`progress`]).
pub async fn run_live(
    config: &RunConfig,
    live: Option<std::sync::Arc<record::Live>>,
) -> anyhow::Result<Report> {
    config.load.validate()?;
    let mut clients = target::connect(
        &config.target.url,
        config.load.connections,
        &config.target.credentials,
    )
    .await?;
    let prepared = target::prepare(&mut clients[0], &config.target).await?;
    let plan = prepared.plans[0].clone();
    let stats_client = clients[0].clone();
    let call = target::InferCall::of(clients, prepared, config.target.seed, config.target.timeout);
    let load = load::run(progress::Observed::new(call, live), &config.load);
    let warmup = config.load.warmup;
    let load = client_cpu::around(warmup, config.load.measured_limit(), load, |o| {
        o.recorder.answered()
    });
    let ((outcome, client_cpu), server) =
        server_stats::around(stats_client, &config.target, warmup, load).await;
    let mut report = Report::new(config, &plan, &outcome.recorder, outcome.measured);
    report.client_cpu = client_cpu;
    report.server = server;
    report.extras = extras::RunExtras::of(config, &outcome);
    Ok(report)
}
