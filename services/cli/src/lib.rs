//! `kiln`: the operator's command line for a Kiln cluster.
//!
//! - `kiln up` runs the whole cluster in one process (monitor, workers and gateway, each started
//!   through its library's `start`), registers the packages of a model repository, deploys the
//!   demo model and prints how to call it ([`commands::up`]).
//! - `kiln deploy | undeploy | scale` ([`commands::deploy`]), `kiln split | promote | rollback`
//!   ([`commands::traffic`]), `kiln drain | workers | models` ([`commands::workers`]) and
//!   `kiln status` ([`commands::status`]) talk to the monitor's `kiln.v1.Admin` API; the waits
//!   for the cluster to follow are in [`admin`] and [`wait`].
//! - `kiln predict` sends one Open Inference Protocol request through the gateway
//!   ([`commands::predict`], input handling in [`input`]).
//! - `kiln certs dev` and `kiln token new` make development certificates and bearer tokens
//!   ([`commands::credentials`]); `--tls-*` and `--token` ([`kiln_security::ClientArgs`]) apply to every call.
//! - `kiln completions SHELL` prints a completion script ([`commands::completions`]).
//! - `kiln profile --package DIR` writes a package's reference profile and `kiln drift MODEL`
//!   prints the monitor's drift report ([`commands::drift`]).
//!
//! The binary (`main.rs`) only parses [`args::Cli`], calls [`run`] and prints a failure through
//! [`errors::explain`], the one place where errors become messages with the fix to try.

pub mod admin;
pub mod args;
pub mod commands;
pub mod errors;
pub mod input;
pub mod output;
pub mod wait;

use args::{Cli, Command};
use commands::{completions, credentials, deploy, drift, predict, status, traffic, up, workers};

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli.admin;
    let remote = cli.remote;
    let admin = |url: String| {
        let remote = remote.clone();
        async move { admin::connect(&url, &remote).await }
    };
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Predict(args) => predict::run(args, remote).await,
        Command::Certs(args) => credentials::certs(args),
        Command::Token(args) => credentials::token(args),
        Command::Completions(args) => completions::run(args),
        Command::Deploy(args) => deploy::run(&mut admin(url).await?, args).await,
        Command::Register(args) => deploy::register_cmd(&mut admin(url).await?, args).await,
        Command::Undeploy(args) => deploy::undeploy(&mut admin(url).await?, args).await,
        Command::Scale(args) => deploy::scale(&mut admin(url).await?, args).await,
        Command::Status(args) => status::run(&mut admin(url).await?, args).await,
        Command::Split(args) => traffic::split(&mut admin(url).await?, args).await,
        Command::Promote(args) => traffic::promote(&mut admin(url).await?, args).await,
        Command::Rollback(args) => traffic::rollback(&mut admin(url).await?, args).await,
        Command::Drain(args) => workers::drain(&mut admin(url).await?, args).await,
        Command::Workers(args) => workers::workers(&mut admin(url).await?, args).await,
        Command::Models(args) => workers::models(&mut admin(url).await?, args).await,
        Command::Profile(args) => drift::profile(args).await,
        Command::Drift(args) => drift::drift(&mut admin(url).await?, args).await,
    }
}

/// An error chain as one line, with gRPC statuses shown as `CODE: message` rather than tonic's
/// debug dump (for errors that do not come from the Admin API; see [`errors::explain`]).
pub fn describe(err: &anyhow::Error) -> String {
    err.chain()
        .map(|cause| match cause.downcast_ref::<tonic::Status>() {
            Some(status) => format!("{:?}: {}", status.code(), status.message()),
            None => cause.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}
