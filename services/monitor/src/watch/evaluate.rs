//! One pass per closed window: judge every deployed version, update alerts, publish the
//! snapshot, then (leader only) notify and act.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kiln_coord::codec::{self, DeploymentRecord, ModelVersionRecord};
use kiln_coord::keys;
use kiln_proto::kiln::v1::DriftReportResponse;
use tokio::sync::watch;

use super::actions::Actions;
use super::alerts::{AlertBook, AlertKind, Transition};
use super::webhook::Webhook;
use super::{Deps, SloStatus, Snapshot, VersionHealth, Watch, WatchConfig};
use crate::error::{Error, Result};
use crate::telemetry::report::{self, now_ms};

/// Run counters of one version across windows.
#[derive(Debug, Default, Clone, Copy)]
struct Runs {
    drifted: u32,
    good: u32,
}

struct Loop {
    config: WatchConfig,
    deps: Deps,
    watch: Arc<Watch>,
    book: AlertBook,
    runs: HashMap<(String, String), Runs>,
    webhook: Option<Webhook>,
    actions: Actions,
}

pub(super) async fn run(
    config: WatchConfig,
    deps: Deps,
    watch: Arc<Watch>,
    mut stop: watch::Receiver<bool>,
) {
    let window_ms = deps.profiles.window_ms();
    let settle_ms = u64::try_from(config.settle.as_millis()).unwrap_or(u64::MAX);
    let mut l = Loop {
        webhook: config.webhook_url.clone().map(Webhook::spawn),
        actions: Actions::new(&config),
        config,
        deps,
        watch,
        book: AlertBook::default(),
        runs: HashMap::new(),
    };
    let mut last = None;
    loop {
        let now = now_ms();
        // The newest window W with W + window + settle ≤ now.
        let target = l
            .deps
            .profiles
            .align(now.saturating_sub(settle_ms))
            .saturating_sub(window_ms);
        if last.is_none_or(|l| target > l) {
            if let Err(e) = l.pass(target, window_ms).await {
                tracing::warn!(error = %e, "watch pass failed");
            }
            last = Some(target);
        }
        let next = target + 2 * window_ms + settle_ms;
        let wait = Duration::from_millis(next.saturating_sub(now_ms()).max(10));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

impl Loop {
    async fn pass(&mut self, window: u64, window_ms: u64) -> Result<()> {
        let coord = self.deps.coord.clone();
        let deployments: Vec<DeploymentRecord> =
            codec::list(coord.as_ref(), keys::DEPLOYMENTS).await?;
        let now = now_ms();
        let mut versions = Vec::new();
        let mut transitions = Vec::new();
        for d in &deployments {
            let top = d
                .versions
                .iter()
                .filter(|v| !v.retiring)
                .map(|v| v.traffic_weight)
                .max()
                .unwrap_or(0);
            for v in d.versions.iter().filter(|v| !v.retiring) {
                let drift = self.judge(&d.model, &v.version, window, window_ms).await;
                let mut h = VersionHealth {
                    model: d.model.clone(),
                    version: v.version.clone(),
                    traffic_weight: v.traffic_weight,
                    serving: v.traffic_weight == top && top > 0,
                    window_start_unix_ms: window,
                    slo: self.slo(&drift),
                    drift,
                    ..Default::default()
                };
                transitions.extend(self.update(&mut h, now));
                versions.push(h);
            }
        }
        let live: std::collections::HashSet<(String, String)> = versions
            .iter()
            .map(|h| (h.model.clone(), h.version.clone()))
            .collect();
        self.runs.retain(|k, _| live.contains(k));
        transitions.extend(
            self.book
                .retain(|m, v| live.contains(&(m.to_string(), v.to_string())), now),
        );
        let leader = *self.deps.leader.borrow();
        if leader {
            if let Some(w) = &self.webhook
                && !transitions.is_empty()
            {
                w.send(transitions);
            }
            self.actions
                .act(&self.deps, &deployments, &versions, &mut self.book)
                .await;
        } else {
            // A former leader's retrains are the new leader's to start again: stop its hooks.
            self.actions.step_down();
        }
        self.watch.publish(Snapshot {
            evaluated_unix_ms: now,
            window_ms,
            versions,
            firing: self.book.firing(),
            events: self.book.events(),
        });
        Ok(())
    }

    /// The drift report of one closed window (its `reason` says why nothing was judged).
    async fn judge(
        &self,
        model: &str,
        version: &str,
        window: u64,
        window_ms: u64,
    ) -> DriftReportResponse {
        let (profiles, references) = (self.deps.profiles.clone(), self.deps.references.clone());
        let coord = self.deps.coord.clone();
        let key = keys::model_version(model, version);
        let record: Option<ModelVersionRecord> =
            codec::get(coord.as_ref(), &key).await.ok().flatten();
        let (m, v) = (model.to_string(), version.to_string());
        let built = tokio::task::spawn_blocking(move || {
            let uri = record.map(|r| r.reference_profile_uri).unwrap_or_default();
            let reference = references.of_uri(&uri)?;
            report::build_range(
                &profiles,
                &m,
                &v,
                window,
                window + window_ms,
                reference.as_deref(),
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("drift judgement panicked: {e}")))
        .and_then(|r| r);
        built.unwrap_or_else(|e| DriftReportResponse {
            model: model.into(),
            version: version.into(),
            reason: e.to_string(),
            ..Default::default()
        })
    }

    fn slo(&self, r: &DriftReportResponse) -> SloStatus {
        let c = &self.config;
        let requests = r.request_count;
        let error_rate = if requests == 0 {
            0.0
        } else {
            r.error_count as f64 / requests as f64
        };
        let judged = requests >= c.slo_min_requests.max(1);
        let over_p99 = c.slo_p99_ms > 0.0 && r.latency_p99_ms > c.slo_p99_ms;
        let over_errors = c.slo_max_error_rate < 1.0 && error_rate > c.slo_max_error_rate;
        SloStatus {
            requests,
            errors: r.error_count,
            p99_ms: r.latency_p99_ms,
            p50_ms: r.latency_p50_ms,
            error_rate,
            judged,
            breached: judged && (over_p99 || over_errors),
        }
    }

    /// Updates the run counters and the alerts of `h`; returns the alert transitions.
    fn update(&mut self, h: &mut VersionHealth, now: u64) -> Vec<Transition> {
        let runs = self
            .runs
            .entry((h.model.clone(), h.version.clone()))
            .or_default();
        let drift_judged = h.drift.reason.is_empty() && !h.drift.features.is_empty();
        if drift_judged {
            runs.drifted = if h.drift.drifted { runs.drifted + 1 } else { 0 };
        }
        // A good window met a judged SLO without drift. One too thin to judge the SLO (under
        // slo_min_requests) proves nothing: it neither counts nor breaks a run, unless it drifted.
        let drifted = drift_judged && h.drift.drifted;
        if h.slo.breached || drifted {
            runs.good = 0;
        } else if h.slo.judged {
            runs.good += 1;
        }
        h.consecutive_drifted = runs.drifted;
        h.consecutive_good = runs.good;
        let k = self.config.drift_alert_windows.max(1);
        let mut out = Vec::new();
        let drift_holds = if drift_judged {
            runs.drifted >= k
        } else {
            self.book
                .is_firing(AlertKind::DataDrift, &h.model, &h.version)
        };
        let (drifted, total, share) = (
            h.drift.drifted_features,
            h.drift.features.len(),
            h.drift.drift_share,
        );
        let summary = || {
            format!(
                "dataset drift in {k} consecutive windows: {drifted} of {total} features drifted ({:.0} %)",
                share * 100.0
            )
        };
        out.extend(self.book.set(
            AlertKind::DataDrift,
            &h.model,
            &h.version,
            drift_holds,
            summary,
            now,
        ));
        let slo_holds = if h.slo.judged {
            h.slo.breached
        } else {
            self.book
                .is_firing(AlertKind::SloBreach, &h.model, &h.version)
        };
        let s = h.slo.clone();
        let (p99, max_err) = (self.config.slo_p99_ms, self.config.slo_max_error_rate);
        let summary = || {
            format!(
                "SLO breached: p99 {:.2} ms (target {p99} ms), error rate {:.2} % (max {:.2} %) over {} requests",
                s.p99_ms,
                s.error_rate * 100.0,
                max_err * 100.0,
                s.requests
            )
        };
        out.extend(self.book.set(
            AlertKind::SloBreach,
            &h.model,
            &h.version,
            slo_holds,
            summary,
            now,
        ));
        out
    }
}
