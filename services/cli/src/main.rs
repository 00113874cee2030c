//! `kiln`: parses the command line and runs it (everything else is in the library).

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = kiln::args::Cli::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    // Logs go to stderr: stdout carries the command's answer (`--output json`).
    kiln_telemetry::logs::init_to_stderr();
    let runtime = match kiln_worker::priority::runtime(cli.command.intake_nice()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = cli.command.uses_admin().then(|| cli.admin.clone());
    match runtime.block_on(kiln::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", kiln::errors::explain(&e, admin.as_deref()));
            ExitCode::FAILURE
        }
    }
}
