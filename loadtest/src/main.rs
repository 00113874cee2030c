//! `kiln-loadtest`: runs one load test, prints the summary table, writes `--json`, and exits 1
//! if an `--assert` condition fails (2 on any other error).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kiln_loadtest::cli::Args;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_inner() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let config = args.run_config()?;
    let report = kiln_loadtest::run(&config).await?;
    print!("{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failures = args
        .assertions
        .map(|a| a.check(&report))
        .unwrap_or_default();
    for failure in &failures {
        println!("{failure}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
