//! `kiln-loadtest`: runs a plan (one load test, a sweep of levels or an SLO search) with live
//! progress on stderr, prints each run's summary table as it ends (or, with `--format
//! json|ghz`, the JSON at the end), writes the requested files (`--json`, `--ghz-json`,
//! `--csv`, `--html`, `--hist-log`), and exits 1 if an `--assert` condition fails on any run
//! (2 on any other error). `kiln-loadtest merge LOG...` combines interval logs instead.

use std::process::ExitCode;

use clap::Parser;
use kiln_loadtest::cli::Args;
use kiln_loadtest::output::args::{Format, MergeArgs, json_of, write_file};
use kiln_loadtest::output::ghz;
use kiln_loadtest::plan::run_plan;
use kiln_loadtest::progress::Progress;
use kiln_loadtest::{Report, RunConfig};

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
    let argv: Vec<_> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "merge") {
        MergeArgs::parse_from(&argv[1..]).run()?;
        return Ok(ExitCode::SUCCESS);
    }
    let args = Args::parse();
    let plan = args.plan()?;
    let output = &args.output;
    let outcome = run_plan(
        &plan,
        async |config: &RunConfig| -> anyhow::Result<Report> {
            let progress = Progress::start(output.progress, config);
            let report = kiln_loadtest::run_live(config, progress.live()).await;
            progress.finish().await;
            if output.format == Format::Table
                && let Ok(report) = &report
            {
                println!("{report}");
            }
            report
        },
    )
    .await?;
    let reports = &outcome.runs;
    match output.format {
        Format::Table => print!("{}", outcome.slo_summary()),
        Format::Json => println!("{}", outcome.to_json()),
        Format::Ghz => println!("{}", json_of(&ghz::reports(reports))),
    }
    if let Some(path) = &args.json {
        write_file(path, &outcome.to_json())?;
    }
    output.write_files(reports)?;
    let failures: Vec<_> = match &args.assertions {
        Some(a) => reports.iter().flat_map(|r| a.check(r)).collect(),
        None => Vec::new(),
    };
    for failure in &failures {
        // Keep stdout machine-readable when it carries JSON.
        match output.format {
            Format::Table => println!("{failure}"),
            _ => eprintln!("{failure}"),
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
