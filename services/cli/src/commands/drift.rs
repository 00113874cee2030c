//! `kiln profile` (a package's reference profile, built locally) and `kiln drift` (the monitor's
//! drift report as a table or JSON).
//!
//! `kiln profile --package DIR [--input FILE]` profiles the training data with the package's
//! own profile shape ([`kiln_monitor::reference::schema_for`]: the flattened input features a
//! worker sketches) and writes `DIR/reference.profile.pb`; registering the package afterwards
//! points the version's `reference_profile_uri` at it.

use std::path::PathBuf;

use anyhow::Context;
use kiln_model::Manifest;
use kiln_monitor::reference;
use kiln_proto::kiln::v1::{DriftReportRequest, DriftReportResponse};

use crate::admin::Admin;
use crate::args::{DriftArgs, OutputFormat, ProfileArgs};
use crate::output::{emit, emit_json, table};

/// What `kiln profile` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The profile file.
    pub path: PathBuf,
    /// Rows profiled.
    pub rows: u64,
    /// Features per row.
    pub features: usize,
    /// The outlier model's degrees of freedom (effective rank) and d² threshold, if one was
    /// fitted.
    pub outlier: Option<(u32, f64)>,
}

/// Builds and writes the reference profile of `args.package` (blocking file work).
pub fn write_profile(args: &ProfileArgs) -> anyhow::Result<Written> {
    let dir = &args.package;
    let manifest = Manifest::read(dir)
        .with_context(|| format!("reading the package manifest in {}", dir.display()))?;
    let input = match &args.input {
        Some(p) => p.clone(),
        None => {
            let name = manifest.reference.as_ref().with_context(|| {
                format!(
                    "{}/kiln.toml names no `reference` file: pass --input FILE.csv|FILE.npy",
                    dir.display()
                )
            })?;
            dir.join(name)
        }
    };
    let profile =
        reference::build(dir, &input).with_context(|| format!("profiling {}", input.display()))?;
    let path = reference::write_reference(dir, &profile)?;
    Ok(Written {
        path,
        rows: profile.row_count,
        features: profile.features().len(),
        outlier: profile
            .outlier_model()
            .map(|m| (m.degrees_of_freedom(), m.fit().threshold)),
    })
}

/// `kiln profile`.
pub async fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    let w = tokio::task::spawn_blocking(move || write_profile(&args)).await??;
    let outlier = match w.outlier {
        Some((dof, threshold)) => {
            format!("; outlier model: {dof} degrees of freedom, d² threshold {threshold:.2}")
        }
        None => "; no outlier model (fewer than 2 complete rows or constant features)".into(),
    };
    emit(&format!(
        "wrote {} ({} rows × {} features{outlier})\n",
        w.path.display(),
        w.rows,
        w.features
    ))
}

/// `kiln drift`.
pub async fn drift(admin: &mut Admin, args: DriftArgs) -> anyhow::Result<()> {
    let report = admin
        .drift_report(DriftReportRequest {
            model: args.model.clone(),
            version: args.version.clone().unwrap_or_default(),
            window_secs: args.window,
        })
        .await
        .with_context(|| format!("getting the drift report of {}", args.model))?
        .into_inner();
    match args.output {
        OutputFormat::Json => emit_json(&report),
        OutputFormat::Table => emit(&drift_table(&report)),
    }
}

fn num(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e4) {
        format!("{x:.2e}")
    } else {
        format!("{x:.4}")
    }
}

/// The outlier part of the summary line: the rate and its counts, or why there is none.
fn outliers(r: &DriftReportResponse) -> String {
    if r.outlier_rate < 0.0 || r.scored_rows == 0 {
        let why = if r.outlier_reason.is_empty() {
            "no row scored"
        } else {
            r.outlier_reason.as_str()
        };
        return format!("outlier rate - ({why})");
    }
    format!(
        "outlier rate {:.2} % ({} of {} scored rows)",
        r.outlier_rate * 100.0,
        r.outlier_count,
        r.scored_rows
    )
}

/// The report for people: a summary, then one row per feature.
pub fn drift_table(r: &DriftReportResponse) -> String {
    let mut out = format!(
        "{}/{}: {} live samples vs {} reference, {} requests ({} errors), latency p50 {:.2} ms p99 {:.2} ms, {}\n",
        r.model,
        r.version,
        r.sample_count,
        r.reference_count,
        r.request_count,
        r.error_count,
        r.latency_p50_ms,
        r.latency_p99_ms,
        outliers(r)
    );
    if !r.reason.is_empty() {
        out.push_str(&format!("not judged: {}\n", r.reason));
    }
    if !r.features.is_empty() {
        out.push_str(&format!(
            "dataset drift: {} ({} of {} features drifted, share {:.0} %; {} after Benjamini-Hochberg)\n\n",
            if r.drifted { "YES" } else { "no" },
            r.drifted_features,
            r.features.len(),
            r.drift_share * 100.0,
            r.drifted_features_adjusted
        ));
        let rows: Vec<Vec<String>> = r
            .features
            .iter()
            .map(|f| {
                vec![
                    f.index.to_string(),
                    f.name.clone(),
                    if f.test.is_empty() {
                        "-".into()
                    } else {
                        f.test.clone()
                    },
                    num(f.score),
                    num(f.threshold),
                    if f.p_value_adjusted < 0.0 {
                        "-".into()
                    } else {
                        num(f.p_value_adjusted)
                    },
                    num(f.psi),
                    f.sample_count.to_string(),
                    if f.drifted { "DRIFT" } else { "" }.into(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "#",
                "FEATURE",
                "TEST",
                "SCORE",
                "THRESHOLD",
                "P_ADJ",
                "PSI",
                "SAMPLES",
                "",
            ],
            &rows,
        ));
    }
    out
}
