//! The monitor's dashboard: server-rendered HTML for SREs on the monitor's HTTP port, beside
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Routes ([`router`]):
//! - `/`: the cluster overview ([`cluster`]): deployments with their traffic split and each
//!   version's last-window throughput, latency, errors, SLO and drift status; workers and their
//!   load; replicas; alerts.
//! - `/models/{model}/{version}`: one version ([`version`]): latency percentiles and throughput
//!   per telemetry window (uPlot charts), replicas, drift per feature with the reference and
//!   live distributions drawn ([`drift`]), the version's alerts.
//! - `/assets/*`: the vendored chart library (uPlot, MIT, `services/monitor/assets/`) and the
//!   page script and styles, compiled into the binary: the dashboard works offline.
//!
//! Guarantees: every interpolated string is escaped ([`html`]); pages refresh themselves every
//! [`html::REFRESH_SECS`]; a page holds the profile store's lock only for short reads (window
//! counts and percentiles; the drift part merges the look-back once, off the async workers) and
//! never writes anything.

pub mod alerts;
pub mod cluster;
pub mod drift;
pub mod html;
pub mod version;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kiln_coord::SharedCoordinator;

use crate::error::Error;
use crate::telemetry::report::now_ms;
use crate::telemetry::{ProfileStore, ReferenceCache};
use crate::watch::Watch;

/// What the dashboard reads.
#[derive(Clone)]
pub struct Dashboard {
    /// The coordination store (workers, deployments, replicas, version records).
    pub coord: SharedCoordinator,
    /// Live traffic profiles.
    pub profiles: Arc<ProfileStore>,
    /// Reference profiles (shared with DriftReport and the watch loop).
    pub references: Arc<ReferenceCache>,
    /// The watch loop's judgements and alerts.
    pub watch: Arc<Watch>,
}

/// The dashboard's routes, to mount with `HttpEndpoints::serve_with`.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/models/{model}/{version}", get(version_page))
        .route("/assets/uplot.min.js", get(|| asset(JS, UPLOT_JS)))
        .route("/assets/uplot.min.css", get(|| asset(CSS, UPLOT_CSS)))
        .route("/assets/dashboard.js", get(|| asset(JS, DASHBOARD_JS)))
        .route("/assets/dashboard.css", get(|| asset(CSS, DASHBOARD_CSS)))
        .with_state(Arc::new(dashboard))
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const UPLOT_JS: &[u8] = include_bytes!("../../assets/uplot.min.js");
const UPLOT_CSS: &[u8] = include_bytes!("../../assets/uplot.min.css");
const DASHBOARD_JS: &[u8] = include_bytes!("../../assets/dashboard.js");
const DASHBOARD_CSS: &[u8] = include_bytes!("../../assets/dashboard.css");

async fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn overview(State(d): State<Arc<Dashboard>>) -> Response {
    let now = now_ms();
    match cluster::gather(&d, now).await {
        Ok(view) => Html(cluster::render(&view, now)).into_response(),
        Err(e) => error_page(e),
    }
}

async fn version_page(
    State(d): State<Arc<Dashboard>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    match version::gather(&d, &model, &version).await {
        Ok(view) => Html(version::render(&view, now_ms())).into_response(),
        Err(e) => error_page(e),
    }
}

fn error_page(e: Error) -> Response {
    let status = match &e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::Coord(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = format!(
        "<p class=\"error\">{}</p><p><a href=\"/\">Back to the cluster</a></p>\n",
        html::esc(&e.to_string())
    );
    (status, Html(html::page(status.as_str(), "", &body))).into_response()
}

#[cfg(test)]
mod tests;
