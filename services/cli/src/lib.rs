//! `kiln`: the operator's command line for a Kiln cluster.
//!
//! - `kiln up` runs the whole cluster in one process (monitor, workers and gateway, each started
//!   through its library's `start`), registers the packages of a model repository, deploys the
//!   demo model and prints how to call it ([`commands::up`]).
//! - `kiln deploy | undeploy | scale | status` talk to the monitor's `kiln.v1.Admin` API
//!   ([`commands::deploy`], [`commands::status`]).
//! - `kiln predict` sends one Open Inference Protocol request through the gateway
//!   ([`commands::predict`], input handling in [`input`]).
//!
//! The binary (`main.rs`) only parses [`args::Cli`] and calls [`run`].

pub mod admin;
pub mod args;
pub mod commands;
pub mod input;
pub mod output;

use args::{Cli, Command};

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => commands::up::run(args).await,
        Command::Predict(args) => commands::predict::run(args).await,
        Command::Deploy(args) => {
            commands::deploy::run(&mut admin::connect(&cli.admin).await?, args).await
        }
        Command::Undeploy(args) => {
            commands::deploy::undeploy(&mut admin::connect(&cli.admin).await?, args).await
        }
        Command::Scale(args) => {
            commands::deploy::scale(&mut admin::connect(&cli.admin).await?, args).await
        }
        Command::Status(args) => {
            commands::status::run(&mut admin::connect(&cli.admin).await?, args).await
        }
    }
}

/// An error chain as one line, with gRPC statuses shown as `CODE: message` rather than tonic's
/// debug dump.
pub fn describe(err: &anyhow::Error) -> String {
    err.chain()
        .map(|cause| match cause.downcast_ref::<tonic::Status>() {
            Some(status) => format!("{:?}: {}", status.code(), status.message()),
            None => cause.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}
