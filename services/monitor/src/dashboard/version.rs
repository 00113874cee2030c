//! The page of one model version (`/models/{model}/{version}`): its place in the deployment,
//! latency percentiles and throughput per telemetry window (drawn by `dashboard.js` with uPlot
//! from JSON embedded in the page), its replicas, drift per feature and its alerts.
//!
//! The drift part is the `DriftReport` answer over the default look-back plus one merge of the
//! same windows for the drawn distributions; both run off the async workers.

use std::sync::Arc;

use kiln_coord::codec::{
    self, DeploymentRecord, DeploymentVersion, ModelVersionRecord, ReplicaRecord,
};
use kiln_proto::kiln::v1::{DriftReportResponse, ListReplicasRequest};
use serde::Serialize;

use super::Dashboard;
use super::cluster::{health_badges, replica_cells};
use super::drift::{self, Histogram};
use super::html::{badge, esc, json_script, ms, page, pct, per_sec, section, table};
use crate::error::{Error, Result};
use crate::telemetry::report::{self, DEFAULT_LOOKBACK_SECS};
use crate::telemetry::store::WindowStats;
use crate::watch::Snapshot;

/// Everything a version page shows.
#[derive(Debug)]
pub struct VersionView {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// The deployment and this version's entry in it, if deployed.
    pub deployment: Option<(DeploymentRecord, DeploymentVersion)>,
    /// Its replicas.
    pub replicas: Vec<ReplicaRecord>,
    /// Its telemetry windows, oldest first.
    pub series: Vec<WindowStats>,
    /// Window length, ms.
    pub window_ms: u64,
    /// The drift report over the look-back, or why there is none.
    pub report: std::result::Result<DriftReportResponse, String>,
    /// Drawn distributions by feature index.
    pub hists: Vec<(u32, Histogram)>,
    /// The watch loop's view.
    pub snapshot: Arc<Snapshot>,
}

/// Chart data embedded in the page (times in Unix seconds, as uPlot wants them).
#[derive(Debug, Serialize, PartialEq)]
pub struct ChartData {
    /// Window length, s.
    pub window_s: f64,
    /// Window starts, Unix s.
    pub t: Vec<f64>,
    /// Latency percentiles per window, ms.
    pub p50: Vec<f64>,
    /// 90th percentile, ms.
    pub p90: Vec<f64>,
    /// 99th percentile, ms.
    pub p99: Vec<f64>,
    /// Requests per second (the open window: over its elapsed part).
    pub rps: Vec<f64>,
    /// Errors per second.
    pub eps: Vec<f64>,
}

/// The chart data of `series` as of `now_ms`.
pub fn chart_data(series: &[WindowStats], window_ms: u64, now_ms: u64) -> ChartData {
    let mut d = ChartData {
        window_s: window_ms as f64 / 1000.0,
        t: vec![],
        p50: vec![],
        p90: vec![],
        p99: vec![],
        rps: vec![],
        eps: vec![],
    };
    for w in series {
        let elapsed = now_ms
            .saturating_sub(w.start_ms)
            .clamp(1000, window_ms.max(1000));
        d.t.push(w.start_ms as f64 / 1000.0);
        d.p50.push(w.p50_ms);
        d.p90.push(w.p90_ms);
        d.p99.push(w.p99_ms);
        d.rps.push(w.throughput(elapsed));
        d.eps.push(w.error_rate_per_sec(elapsed));
    }
    d
}

/// Reads what the page of `model`/`version` shows; NOT_FOUND when the version is neither
/// registered, deployed nor seen in traffic.
pub async fn gather(d: &Dashboard, model: &str, version: &str) -> Result<VersionView> {
    crate::admin::segment("model", model)?;
    crate::admin::segment("version", version)?;
    let coord = d.coord.as_ref();
    let record: Option<ModelVersionRecord> =
        codec::get(coord, &kiln_coord::keys::model_version(model, version)).await?;
    let deployment = crate::admin::listing::deployments(coord, model)
        .await?
        .into_iter()
        .find_map(|dep| {
            let v = dep.versions.iter().find(|v| v.version == version)?.clone();
            Some((dep, v))
        });
    let req = ListReplicasRequest {
        model: model.into(),
        version: version.into(),
        ..Default::default()
    };
    let replicas = crate::admin::listing::replicas(coord, &req).await?;
    let series = d.profiles.series(model, version);
    if record.is_none() && deployment.is_none() && series.is_empty() {
        return Err(Error::NotFound(format!(
            "model version {model}/{version} is not registered, deployed or seen in traffic"
        )));
    }
    let (profiles, references) = (d.profiles.clone(), d.references.clone());
    let (m, v) = (model.to_string(), version.to_string());
    let uri = record.map(|r| r.reference_profile_uri).unwrap_or_default();
    let (report, hists) = tokio::task::spawn_blocking(move || {
        let reference = match references.of_uri(&uri) {
            Ok(r) => r,
            Err(e) => return (Err(e.to_string()), vec![]),
        };
        let report = match report::build(&profiles, &m, &v, 0, reference.as_deref()) {
            Ok(r) => r,
            Err(e) => return (Err(e.to_string()), vec![]),
        };
        let since = report::now_ms().saturating_sub(DEFAULT_LOOKBACK_SECS * 1000);
        let hists = match (reference, profiles.merged(&m, &v, since)) {
            (Some(r), Ok(Some(live))) if report.reason.is_empty() => {
                drift::drawn(&report, &r, &live.profile)
            }
            _ => vec![],
        };
        (Ok(report), hists)
    })
    .await
    .map_err(|e| Error::Internal(format!("dashboard drift panicked: {e}")))?;
    Ok(VersionView {
        model: model.into(),
        version: version.into(),
        deployment,
        replicas,
        series,
        window_ms: d.profiles.window_ms(),
        report,
        hists,
        snapshot: d.watch.snapshot(),
    })
}

/// The version page.
pub fn render(v: &VersionView, now_ms: u64) -> String {
    let title = format!("{}/{}", v.model, v.version);
    let health = v
        .snapshot
        .versions
        .iter()
        .find(|h| h.model == v.model && h.version == v.version);
    let (drift_badge, slo_badge) = health_badges(health);
    let placement = match &v.deployment {
        None => badge("muted", "not deployed"),
        Some((dep, dv)) => {
            let total: u64 = dep
                .versions
                .iter()
                .map(|x| u64::from(x.traffic_weight))
                .sum();
            let share = if total == 0 {
                0.0
            } else {
                f64::from(dv.traffic_weight) / total as f64
            };
            format!(
                "{} of the traffic, {} replicas desired{}",
                esc(&pct(share)),
                dv.replicas,
                if dv.retiring {
                    format!(" {}", badge("muted", "retiring"))
                } else {
                    String::new()
                }
            )
        }
    };
    let last = v
        .series
        .iter()
        .rev()
        .find(|w| w.start_ms + v.window_ms <= now_ms)
        .copied()
        .unwrap_or_default();
    let mut body = format!(
        "<h1>{}</h1>\n<p class=\"placement\">{placement} · SLO {slo_badge} · drift {drift_badge}</p>\n\
         <div class=\"cards\">{}{}{}{}</div>\n",
        esc(&title),
        card("Throughput", &per_sec(last.throughput(v.window_ms))),
        card("p50 latency", &ms(last.p50_ms)),
        card("p99 latency", &ms(last.p99_ms)),
        card(
            "Errors",
            &if last.requests == 0 {
                "–".into()
            } else {
                pct(last.errors as f64 / last.requests as f64)
            }
        ),
    );
    let data = chart_data(&v.series, v.window_ms, now_ms);
    let charts = if data.t.is_empty() {
        "<p class=\"empty\">No traffic profile of this version in the kept windows.</p>\n"
            .to_string()
    } else {
        format!(
            "<script type=\"application/json\" id=\"series-data\">{}</script>\n\
             <h3>Latency percentiles (ms)</h3><div class=\"chart\" id=\"latency-chart\"></div>\n\
             <h3>Throughput (requests/s, errors/s)</h3><div class=\"chart\" id=\"throughput-chart\"></div>\n\
             <p class=\"muted\">One point per {} s window; the newest window is still open.</p>\n",
            json_script(&data),
            v.window_ms / 1000
        )
    };
    body.push_str(&section("traffic", "Traffic over time", &charts));
    body.push_str(&replicas(&v.replicas));
    body.push_str(&drift::render(
        v.report.as_ref().map_err(String::as_str),
        &v.hists,
        DEFAULT_LOOKBACK_SECS,
    ));
    body.push_str(&super::alerts::render(
        &v.snapshot,
        Some((&v.model, &v.version)),
        now_ms,
    ));
    let head = "<link rel=\"stylesheet\" href=\"/assets/uplot.min.css\">\n\
                <script src=\"/assets/uplot.min.js\"></script>\n\
                <script src=\"/assets/dashboard.js\" defer></script>\n";
    page(&title, head, &body)
}

fn card(title: &str, value: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"card-title\">{}</div><div class=\"card-value\">{}</div>\
         <div class=\"card-note\">last closed window</div></div>",
        esc(title),
        esc(value)
    )
}

fn replicas(replicas: &[ReplicaRecord]) -> String {
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|r| {
            std::iter::once(esc(&r.worker_id))
                .chain(replica_cells(r))
                .collect()
        })
        .collect();
    section(
        "replicas",
        "Replicas",
        &table(
            "replicas",
            &["worker", "address", "state", "memory", "detail"],
            &rows,
            "No replica of this version is reported.",
        ),
    )
}
