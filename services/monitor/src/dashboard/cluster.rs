//! The cluster overview page (`/`): deployments with their traffic split and each version's
//! last-window traffic and health, workers with their load, replicas, alerts.
//!
//! Reads the coordination store through the Admin listings (the same view `kiln status` shows),
//! the watch loop's snapshot, and per version the counts of its windows ([`ProfileStore::series`]:
//! no sketch is merged for this page).

use kiln_coord::codec::{DeploymentRecord, ReplicaRecord, ReplicaState, WorkerRecord};
use kiln_proto::kiln::v1::{ListReplicasRequest, WorkerLoad};

use super::Dashboard;
use super::html::{badge, bytes, esc, ms, page, pct, per_sec, section, table, version_href};
use crate::error::Result;
use crate::telemetry::store::WindowStats;
use crate::watch::{Snapshot, VersionHealth};

/// Everything the overview shows.
#[derive(Debug, Default)]
pub struct Overview {
    /// Live workers (cordoned ones read as draining).
    pub workers: Vec<WorkerRecord>,
    /// Their loads, same order.
    pub loads: Vec<WorkerLoad>,
    /// Every deployment.
    pub deployments: Vec<DeploymentRecord>,
    /// Every replica.
    pub replicas: Vec<ReplicaRecord>,
    /// Last complete window of each deployed version, by (model, version).
    pub last_window: Vec<((String, String), WindowStats)>,
    /// Window length, ms.
    pub window_ms: u64,
    /// The watch loop's view.
    pub snapshot: std::sync::Arc<Snapshot>,
}

/// Reads what the overview shows.
pub async fn gather(d: &Dashboard, now_ms: u64) -> Result<Overview> {
    let (workers, loads) = crate::admin::workers::list(d.coord.as_ref()).await?;
    let deployments = crate::admin::listing::deployments(d.coord.as_ref(), "").await?;
    let replicas =
        crate::admin::listing::replicas(d.coord.as_ref(), &ListReplicasRequest::default()).await?;
    let window_ms = d.profiles.window_ms();
    let mut last_window = Vec::new();
    for dep in &deployments {
        for v in &dep.versions {
            let series = d.profiles.series(&dep.model, &v.version);
            // The newest window that has closed: the open one is still filling.
            if let Some(w) = series
                .iter()
                .rev()
                .find(|w| w.start_ms + window_ms <= now_ms)
            {
                last_window.push(((dep.model.clone(), v.version.clone()), *w));
            }
        }
    }
    Ok(Overview {
        workers,
        loads,
        deployments,
        replicas,
        last_window,
        window_ms,
        snapshot: d.watch.snapshot(),
    })
}

/// The overview page.
pub fn render(o: &Overview, now_ms: u64) -> String {
    let ready = o
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Ready as i32)
        .count();
    let draining = o.workers.iter().filter(|w| w.draining).count();
    let versions: usize = o.deployments.iter().map(|d| d.versions.len()).sum();
    let firing = o.snapshot.firing.len();
    let mut body = format!(
        "<div class=\"cards\">{}{}{}{}</div>\n",
        card(
            "Workers",
            &o.workers.len().to_string(),
            &format!("{draining} draining")
        ),
        card(
            "Deployments",
            &o.deployments.len().to_string(),
            &format!("{versions} versions")
        ),
        card(
            "Replicas ready",
            &format!("{ready}/{}", o.replicas.len()),
            "reported by workers"
        ),
        card(
            "Alerts firing",
            &firing.to_string(),
            if firing == 0 {
                "all quiet"
            } else {
                "see below"
            }
        ),
    );
    body.push_str(&deployments(o));
    body.push_str(&workers(o));
    body.push_str(&replicas(o));
    body.push_str(&super::alerts::render(&o.snapshot, None, now_ms));
    page("Cluster", "", &body)
}

fn card(title: &str, value: &str, note: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"card-title\">{}</div><div class=\"card-value\">{}</div>\
         <div class=\"card-note\">{}</div></div>",
        esc(title),
        esc(value),
        esc(note)
    )
}

fn health<'a>(o: &'a Overview, model: &str, version: &str) -> Option<&'a VersionHealth> {
    o.snapshot
        .versions
        .iter()
        .find(|h| h.model == model && h.version == version)
}

/// Drift and SLO badges of a version's last judged window.
pub fn health_badges(h: Option<&VersionHealth>) -> (String, String) {
    let Some(h) = h else {
        return (badge("muted", "not judged"), badge("muted", "not judged"));
    };
    let drift = if !h.drift.reason.is_empty() {
        format!(
            "<span title=\"{}\">{}</span>",
            esc(&h.drift.reason),
            badge("muted", "not judged")
        )
    } else if h.drift.drifted {
        badge(
            "bad",
            &format!(
                "drift {}/{} · {} windows",
                h.drift.drifted_features,
                h.drift.features.len(),
                h.consecutive_drifted
            ),
        )
    } else {
        badge(
            "ok",
            &format!(
                "no drift ({}/{})",
                h.drift.drifted_features,
                h.drift.features.len()
            ),
        )
    };
    let slo = match (h.slo.judged, h.slo.breached) {
        (false, _) => badge("muted", &format!("not judged ({} req)", h.slo.requests)),
        (true, true) => badge("bad", "breached"),
        (true, false) => badge("ok", "met"),
    };
    (drift, slo)
}

const SPLIT_COLOURS: [&str; 6] = [
    "#2f6fdb", "#e8833a", "#3aa676", "#9b59b6", "#c0392b", "#7f8c8d",
];

fn deployments(o: &Overview) -> String {
    let mut inner = String::new();
    if o.deployments.is_empty() {
        inner.push_str("<p class=\"empty\">Nothing is deployed (see `kiln deploy`).</p>\n");
    }
    for dep in &o.deployments {
        let total: u64 = dep
            .versions
            .iter()
            .map(|v| u64::from(v.traffic_weight))
            .sum();
        let mut split = String::from("<div class=\"split\">");
        let mut rows = Vec::new();
        for (i, v) in dep.versions.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                f64::from(v.traffic_weight) / total as f64
            };
            let colour = SPLIT_COLOURS[i % SPLIT_COLOURS.len()];
            if share > 0.0 {
                split.push_str(&format!(
                    "<div class=\"split-part\" style=\"width:{:.2}%;background:{colour}\" \
                     title=\"{}: {}\">{} {}</div>",
                    share * 100.0,
                    esc(&v.version),
                    pct(share),
                    esc(&v.version),
                    pct(share)
                ));
            }
            let of_version: Vec<&ReplicaRecord> = o
                .replicas
                .iter()
                .filter(|r| r.model == dep.model && r.version == v.version)
                .collect();
            let ready = of_version
                .iter()
                .filter(|r| r.state == ReplicaState::Ready as i32)
                .count();
            let stats = o
                .last_window
                .iter()
                .find(|((m, ver), _)| *m == dep.model && *ver == v.version)
                .map(|(_, w)| *w);
            let role = if v.retiring {
                badge("muted", "retiring")
            } else if dep
                .versions
                .iter()
                .any(|x| x.traffic_weight > v.traffic_weight)
            {
                badge(
                    "warn",
                    if v.traffic_weight == 0 {
                        "idle"
                    } else {
                        "canary"
                    },
                )
            } else {
                badge("ok", "serving")
            };
            let (drift, slo) = health_badges(health(o, &dep.model, &v.version));
            let cell = |f: &dyn Fn(&WindowStats) -> String| stats.as_ref().map_or("–".into(), f);
            rows.push(vec![
                format!(
                    "<span class=\"swatch\" style=\"background:{colour}\"></span>\
                     <a class=\"version-link\" href=\"{}\">{}</a>",
                    version_href(&dep.model, &v.version),
                    esc(&v.version)
                ),
                role,
                pct(share),
                format!("{ready}/{}", v.replicas),
                cell(&|w| per_sec(w.throughput(o.window_ms))),
                cell(&|w| ms(w.p50_ms)),
                cell(&|w| ms(w.p99_ms)),
                cell(&|w| {
                    if w.requests == 0 {
                        "–".into()
                    } else {
                        pct(w.errors as f64 / w.requests as f64)
                    }
                }),
                slo,
                drift,
            ]);
        }
        split.push_str("</div>\n");
        inner.push_str(&format!(
            "<div class=\"deployment\"><h3>{}</h3>\n{split}{}</div>\n",
            esc(&dep.model),
            table(
                "versions",
                &[
                    "version",
                    "role",
                    "traffic",
                    "replicas ready",
                    "throughput",
                    "p50",
                    "p99",
                    "errors",
                    "SLO",
                    "drift",
                ],
                &rows,
                "No version."
            )
        ));
    }
    inner.push_str(&format!(
        "<p class=\"muted\">Throughput and latency: the last closed {} s window.</p>\n",
        o.window_ms / 1000
    ));
    section("deployments", "Deployments and traffic split", &inner)
}

fn workers(o: &Overview) -> String {
    let rows: Vec<Vec<String>> = o
        .workers
        .iter()
        .map(|w| {
            let load = o.loads.iter().find(|l| l.worker_id == w.id);
            vec![
                format!("<span class=\"worker-id\">{}</span>", esc(&w.id)),
                esc(&w.address),
                esc(&w.backend),
                esc(&w.device),
                format!(
                    "{}/{}",
                    load.map_or(0, |l| l.ready_replicas),
                    load.map_or(0, |l| l.replicas)
                ),
                format!(
                    "{} of {}",
                    bytes(load.map_or(0, |l| l.memory_bytes)),
                    bytes(w.capacity_bytes)
                ),
                if w.draining {
                    badge("warn", "draining")
                } else {
                    badge("ok", "active")
                },
            ]
        })
        .collect();
    section(
        "workers",
        "Workers",
        &table(
            "workers",
            &[
                "worker",
                "address",
                "backend",
                "device",
                "replicas ready",
                "memory",
                "status",
            ],
            &rows,
            "No worker is registered.",
        ),
    )
}

/// A replica state's label and badge kind.
/// The address, state, memory and detail cells of a replica row (both replica tables).
pub fn replica_cells(r: &ReplicaRecord) -> [String; 4] {
    let memory = if r.memory_bytes == 0 {
        "–".into()
    } else {
        bytes(r.memory_bytes)
    };
    [
        esc(&r.address),
        state_badge(r.state),
        memory,
        esc(&r.reason),
    ]
}

pub fn state_badge(state: i32) -> String {
    match ReplicaState::try_from(state).unwrap_or(ReplicaState::Unspecified) {
        ReplicaState::Ready => badge("ok", "READY"),
        ReplicaState::Loading => badge("warn", "LOADING"),
        ReplicaState::Failed => badge("bad", "FAILED"),
        ReplicaState::Unspecified => badge("muted", "UNKNOWN"),
    }
}

fn replicas(o: &Overview) -> String {
    let mut sorted: Vec<&ReplicaRecord> = o.replicas.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.model, &a.version, &a.worker_id).cmp(&(&b.model, &b.version, &b.worker_id))
    });
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|r| {
            vec![
                format!(
                    "<a href=\"{}\">{}/{}</a>",
                    version_href(&r.model, &r.version),
                    esc(&r.model),
                    esc(&r.version)
                ),
                format!(
                    "<span class=\"replica-worker\">{}</span>",
                    esc(&r.worker_id)
                ),
            ]
            .into_iter()
            .chain(replica_cells(r))
            .collect()
        })
        .collect();
    section(
        "replicas",
        "Replicas",
        &table(
            "replicas",
            &["version", "worker", "address", "state", "memory", "detail"],
            &rows,
            "No replica is reported.",
        ),
    )
}
