//! The output flags (flattened into [`crate::cli::Args`]) and writing what they ask for.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::progress::ProgressMode;
use crate::report::Report;

/// What goes to stdout (with `json` and `ghz` the tables are left out and assertion failures
/// go to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// The human summary table.
    #[default]
    Table,
    /// The kiln JSON report (schema kiln-loadtest/v1).
    Json,
    /// ghz's JSON report.
    Ghz,
}

/// Output flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// What to print on stdout: the summary `table`, the kiln `json` report, or `ghz`'s JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write ghz's JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub ghz_json: Option<PathBuf>,
    /// Write perf_analyzer's CSV (`-f`, verbose columns) to this file, one row per run.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write a self-contained HTML report (summary, configuration, charts) to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the OK latency of every second as an HdrHistogram interval log to this file
    /// (combine logs of several generators with `kiln-loadtest merge A B ...`).
    #[arg(long, value_name = "FILE")]
    pub hist_log: Option<PathBuf>,
    /// Live progress on stderr: `auto` (a bar on a terminal, a line every 5 s otherwise),
    /// `bar`, `lines` or `off`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// `kiln-loadtest merge LOG...`: combines HdrHistogram interval logs written with
/// `--hist-log` (by several generators at once, or several runs) and prints the combined OK
/// throughput and latency.
#[derive(Debug, Clone, Parser)]
#[command(name = "kiln-loadtest merge")]
pub struct MergeArgs {
    /// Interval logs to combine.
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,
    /// Also write the combined result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl MergeArgs {
    /// Reads and merges the logs, prints the summary, writes `--json`.
    pub fn run(&self) -> anyhow::Result<()> {
        let logs = self
            .logs
            .iter()
            .map(|path| {
                let text =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                Ok((path.display().to_string(), text))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let merged = crate::output::hlog::merge(&logs)?;
        print!("{merged}");
        if let Some(path) = &self.json {
            write_file(path, &json_of(std::slice::from_ref(&merged)))?;
        }
        Ok(())
    }
}

/// Several reports as one JSON document: the object itself for one, an array for several.
pub fn json_of<T: serde::Serialize>(items: &[T]) -> String {
    match items {
        [one] => serde_json::to_string_pretty(one),
        many => serde_json::to_string_pretty(many),
    }
    .expect("reports serialize")
}

/// Writes `text` to `path`, naming the file in the error.
pub fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl OutputArgs {
    /// Writes every file the flags name.
    pub fn write_files(&self, reports: &[Report]) -> anyhow::Result<()> {
        if let Some(path) = &self.ghz_json {
            write_file(path, &json_of(&crate::output::ghz::reports(reports)))?;
        }
        if let Some(path) = &self.csv {
            write_file(path, &crate::output::csv::perf_analyzer_csv(reports))?;
        }
        if let Some(path) = &self.html {
            write_file(path, &crate::output::html::page(reports))?;
        }
        if let Some(path) = &self.hist_log {
            let log = crate::output::hlog::interval_log(reports)?;
            std::fs::write(path, log).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Args;
    use crate::output::tests::report as sample;

    #[test]
    fn flags_parse_and_every_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let args = Args::try_parse_from([
            "kiln-loadtest",
            "--model",
            "m",
            "--format",
            "ghz",
            "--progress",
            "off",
            "--ghz-json",
            &path("g.json"),
            "--csv",
            &path("r.csv"),
            "--html",
            &path("r.html"),
            "--hist-log",
            &path("r.hlog"),
        ])
        .unwrap();
        assert_eq!(args.output.format, Format::Ghz);
        assert_eq!(args.output.progress, ProgressMode::Off);
        let plain = Args::try_parse_from(["kiln-loadtest", "--model", "m"]).unwrap();
        assert_eq!(plain.output.format, Format::Table);
        assert_eq!(plain.output.progress, ProgressMode::Auto);
        assert!(Args::try_parse_from(["x", "--model", "m", "--format", "yaml"]).is_err());

        let reports = [sample(2), sample(1)];
        args.output.write_files(&reports).unwrap();
        let ghz: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path("g.json")).unwrap()).unwrap();
        assert_eq!(
            ghz.as_array().map(Vec::len),
            Some(2),
            "one ghz report per run"
        );
        let csv = std::fs::read_to_string(path("r.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(
            std::fs::read_to_string(path("r.html"))
                .unwrap()
                .contains("<svg")
        );

        let merge =
            MergeArgs::try_parse_from(["merge", &path("r.hlog"), "--json", &path("m.json")])
                .unwrap();
        merge.run().unwrap();
        let merged: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path("m.json")).unwrap()).unwrap();
        assert_eq!(merged["count"], 300, "both runs' OK answers");
        assert!(MergeArgs::try_parse_from(["merge"]).is_err(), "needs a log");
        let missing = MergeArgs::try_parse_from(["merge", &path("nope.hlog")]).unwrap();
        assert!(missing.run().is_err());
    }

    #[test]
    fn one_report_is_an_object_and_several_an_array() {
        let one = json_of(&[1]);
        assert_eq!(one, "1");
        assert!(json_of(&[1, 2]).starts_with('['));
    }
}
