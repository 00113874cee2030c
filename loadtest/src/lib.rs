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
//!   in a loop); [`cli`]: the flags that fill it in.
//! - [`target`]: connections, model description, request pool, the gRPC [`load::Call`];
//!   [`data`]: random tensor contents.
//! - [`load`]: the closed and open loops over any [`load::Call`]; [`record`]: histograms and
//!   the per-second series.
//! - [`report`]: the result, its JSON and table; [`assert`]: `--assert` conditions.

pub mod assert;
pub mod cli;
pub mod config;
pub mod data;
pub mod load;
pub mod record;
pub mod report;
pub mod target;

#[cfg(test)]
mod load_tests;

pub use config::{LoadConfig, LoadMode, RunConfig, TargetConfig};
pub use report::Report;

/// Runs `config` against its target and reports the measured outcomes.
pub async fn run(config: &RunConfig) -> anyhow::Result<Report> {
    config.load.validate()?;
    let mut clients = target::connect(&config.target.url, config.load.connections).await?;
    let plan = target::describe(&mut clients[0], &config.target).await?;
    let pool = target::build_pool(&plan, &config.target);
    let call = target::InferCall::new(clients, pool, config.target.timeout);
    let (recorder, measured) = load::run(call, &config.load).await;
    Ok(Report::new(config, &plan, &recorder, measured))
}
