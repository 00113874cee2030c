//! What the leader does about alerts, once per judged window (see the [module doc](super)):
//! roll back a canary breaching the SLO, run the retrain hook on persistent drift, deploy the
//! version the hook registers as a canary, promote it once it has been good long enough.
//!
//! Retrains are remembered per model in this instance only: a leader change forgets a retrain
//! in flight (its version, once registered, can still be deployed and promoted by hand).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kiln_coord::codec::{self, DeploymentRecord, ModelVersionRecord};
use kiln_coord::keys;
use kiln_proto::kiln::v1::admin_server::Admin;
use kiln_proto::kiln::v1::{DeployRequest, PromoteRequest, RollbackRequest};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tonic::Request;

use super::alerts::{AlertBook, AlertKind};
use super::{Deps, VersionHealth, WatchConfig};
use crate::telemetry::report::now_ms;

/// Bytes of a retrain command's output kept for the log.
const OUTPUT_TAIL: usize = 2048;

#[derive(Debug)]
struct Retrain {
    started: Instant,
    /// Versions registered before the hook ran.
    known: HashSet<String>,
    task: Option<JoinHandle<String>>,
    /// The retrained version deployed as a canary, and when.
    canary: Option<(String, Instant)>,
    done: bool,
}

/// The leader's action state.
#[derive(Debug)]
pub(crate) struct Actions {
    command: Option<String>,
    timeout: Duration,
    cooldown: Duration,
    canary_weight: u32,
    canary_windows: u32,
    retrains: HashMap<String, Retrain>,
}

impl Actions {
    pub(crate) fn new(c: &WatchConfig) -> Self {
        Self {
            command: c.retrain_command.clone().filter(|c| !c.trim().is_empty()),
            timeout: c.retrain_timeout,
            cooldown: c.retrain_cooldown,
            canary_weight: c.canary_weight.clamp(1, 100),
            canary_windows: c.canary_windows.max(1),
            retrains: HashMap::new(),
        }
    }

    pub(crate) async fn act(
        &mut self,
        deps: &Deps,
        deployments: &[DeploymentRecord],
        health: &[VersionHealth],
        book: &mut AlertBook,
    ) {
        for d in deployments {
            let of_model: Vec<&VersionHealth> =
                health.iter().filter(|h| h.model == d.model).collect();
            let Some(serving) = of_model.iter().find(|h| h.serving) else {
                continue;
            };
            if rollback_canaries(deps, d, serving, &of_model, book).await {
                if let Some(r) = self.retrains.get_mut(&d.model) {
                    r.done = true;
                }
                continue;
            }
            self.follow_retrain(deps, d, &of_model, book).await;
            if book.is_firing(AlertKind::DataDrift, &d.model, &serving.version) {
                self.maybe_retrain(deps, &d.model, &serving.version, book)
                    .await;
            }
        }
    }

    /// Forgets every retrain and kills the hooks still running (leadership was lost).
    pub(crate) fn step_down(&mut self) {
        for (model, r) in self.retrains.drain() {
            if let Some(task) = r.task
                && !task.is_finished()
            {
                tracing::info!(%model, "no longer the leader: stopping the retrain hook");
                task.abort(); // the hook's process is killed with its future
            }
        }
    }

    /// Runs the hook for `model` unless one ran within the cool-down or the last one is not
    /// over (its hook runs, or its canary waits): one retrained canary at a time.
    async fn maybe_retrain(
        &mut self,
        deps: &Deps,
        model: &str,
        serving: &str,
        book: &mut AlertBook,
    ) {
        let Some(command) = self.command.clone() else {
            return;
        };
        if self
            .retrains
            .get(model)
            .is_some_and(|r| !r.done || r.started.elapsed() < self.cooldown)
        {
            return;
        }
        let known = registered(deps, model).await;
        let next = next_version(&known);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&command)
            .env("KILN_MODEL", model)
            .env("KILN_VERSION", serving)
            .env("KILN_NEXT_VERSION", &next)
            .env("KILN_ADMIN", &deps.admin_url)
            .kill_on_drop(true);
        let timeout = self.timeout;
        let (m, v) = (model.to_string(), serving.to_string());
        let task = tokio::spawn(async move { run_hook(cmd, timeout, &m, &v).await });
        book.action(
            model,
            serving,
            format!("persistent drift: retrain hook started (next version {next})"),
            now_ms(),
        );
        self.retrains.insert(
            model.to_string(),
            Retrain {
                started: Instant::now(),
                known: known.into_iter().collect(),
                task: Some(task),
                canary: None,
                done: false,
            },
        );
    }

    /// Deploys the retrained version as a canary, then promotes it when it has been good, or
    /// rolls it back when it has not been within a cool-down.
    async fn follow_retrain(
        &mut self,
        deps: &Deps,
        d: &DeploymentRecord,
        health: &[&VersionHealth],
        book: &mut AlertBook,
    ) {
        let Some(r) = self.retrains.get_mut(&d.model) else {
            return;
        };
        if r.done {
            return;
        }
        if let Some(t) = &r.task
            && t.is_finished()
        {
            let out = r.task.take().expect("checked").await.unwrap_or_default();
            book.action(&d.model, "", out, now_ms());
        }
        match r.canary.clone() {
            None => {
                if r.started.elapsed() > self.cooldown {
                    r.done = true;
                    return;
                }
                let new = registered(deps, &d.model)
                    .await
                    .into_iter()
                    .find(|v| !r.known.contains(v) && !d.versions.iter().any(|x| &x.version == v));
                let Some(version) = new else { return };
                let req = DeployRequest {
                    model: d.model.clone(),
                    version: version.clone(),
                    replicas: d
                        .versions
                        .iter()
                        .map(|v| v.replicas)
                        .max()
                        .unwrap_or(1)
                        .max(1),
                    traffic_weight: self.canary_weight,
                    ..Default::default()
                };
                match deps.admin.deploy(Request::new(req)).await {
                    Ok(_) => {
                        book.action(
                            &d.model,
                            &version,
                            format!(
                                "retrained version deployed as a canary ({} % weight)",
                                self.canary_weight
                            ),
                            now_ms(),
                        );
                        r.canary = Some((version, Instant::now()));
                    }
                    Err(e) => {
                        tracing::warn!(model = %d.model, %version, error = %e, "canary deploy failed")
                    }
                }
            }
            Some((canary, since)) => {
                let Some(h) = health.iter().find(|h| h.version == canary) else {
                    // Rolled back or removed by hand: this retrain is over.
                    r.done = true;
                    return;
                };
                if h.serving {
                    r.done = true;
                    return;
                }
                if h.consecutive_good < self.canary_windows && since.elapsed() > self.cooldown {
                    r.done = expire_canary(deps, d, &canary, health, book).await;
                    return;
                }
                if h.consecutive_good >= self.canary_windows {
                    let req = PromoteRequest {
                        model: d.model.clone(),
                        version: canary.clone(),
                    };
                    match deps.admin.promote(Request::new(req)).await {
                        Ok(_) => {
                            book.action(
                                &d.model,
                                &canary,
                                format!(
                                    "canary promoted after {} windows within the SLO without drift",
                                    h.consecutive_good
                                ),
                                now_ms(),
                            );
                            r.done = true;
                        }
                        Err(e) => {
                            tracing::warn!(model = %d.model, %canary, error = %e, "promote failed")
                        }
                    }
                }
            }
        }
    }
}

/// Rolls back a retrained canary that was not good for long enough within a cool-down (it
/// drifts too, or gets too little traffic to judge), so that the next retrain does not add a
/// canary beside it; true when done.
async fn expire_canary(
    deps: &Deps,
    d: &DeploymentRecord,
    canary: &str,
    health: &[&VersionHealth],
    book: &mut AlertBook,
) -> bool {
    let Some(serving) = health.iter().find(|h| h.serving) else {
        return false;
    };
    let why = format!(
        "retrained canary not promoted within the cool-down: rolled back to {}",
        serving.version
    );
    roll_back(deps, &d.model, &serving.version, canary, why, book).await
}

/// Rolls back every canary of `d` (less traffic than `serving`) whose window breached the
/// SLO; true when one was.
async fn rollback_canaries(
    deps: &Deps,
    d: &DeploymentRecord,
    serving: &VersionHealth,
    health: &[&VersionHealth],
    book: &mut AlertBook,
) -> bool {
    let Some(bad) = health
        .iter()
        .find(|h| !h.serving && h.traffic_weight > 0 && h.slo.breached)
    else {
        return false;
    };
    let why = format!(
        "canary rolled back to {}: p99 {:.2} ms, error rate {:.2} % over {} requests",
        serving.version,
        bad.slo.p99_ms,
        bad.slo.error_rate * 100.0,
        bad.slo.requests
    );
    roll_back(deps, &d.model, &serving.version, &bad.version, why, book).await
}

/// Switches `model` back to `to_version` and records `why` as an action on `canary`; true when
/// done (a failure is logged).
async fn roll_back(
    deps: &Deps,
    model: &str,
    to_version: &str,
    canary: &str,
    why: String,
    book: &mut AlertBook,
) -> bool {
    let req = RollbackRequest {
        model: model.to_owned(),
        to_version: to_version.to_owned(),
    };
    match deps.admin.rollback(Request::new(req)).await {
        Ok(_) => {
            book.action(model, canary, why, now_ms());
            true
        }
        Err(e) => {
            tracing::warn!(%model, %canary, error = %e, "canary rollback failed");
            false
        }
    }
}

/// Registered versions of `model`.
async fn registered(deps: &Deps, model: &str) -> Vec<String> {
    let prefix = format!("{}{model}/", keys::MODELS);
    codec::list::<ModelVersionRecord>(deps.coord.as_ref(), &prefix)
        .await
        .map(|v| v.into_iter().map(|r| r.version).collect())
        .unwrap_or_default()
}

/// One more than the largest numeric version, else `1`.
pub fn next_version(known: &[String]) -> String {
    let max = known.iter().filter_map(|v| v.parse::<u64>().ok()).max();
    max.map_or(1, |m| m + 1).to_string()
}

/// Runs the hook; returns a line for the log (exit status and the output's tail).
async fn run_hook(mut cmd: Command, timeout: Duration, model: &str, version: &str) -> String {
    tracing::info!(%model, %version, "running the retrain hook");
    match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => format!(
            "retrain hook timed out after {} s (killed)",
            timeout.as_secs()
        ),
        Ok(Err(e)) => format!("retrain hook could not start: {e}"),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let tail: String = {
                let t = text.trim_end();
                let start = t.len().saturating_sub(OUTPUT_TAIL);
                let start = (start..=t.len())
                    .find(|&i| t.is_char_boundary(i))
                    .unwrap_or(t.len());
                t[start..].to_string()
            };
            tracing::info!(%model, status = %out.status, output = %tail, "retrain hook finished");
            let last = tail.lines().last().unwrap_or("");
            format!("retrain hook exited ({}): {last}", out.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` is gone (or a zombie waiting to be reaped).
    fn gone(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn stepping_down_kills_a_running_hook() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo $$ > {}; exec sleep 30", pidfile.display()))
            .kill_on_drop(true);
        let task = tokio::spawn(run_hook(cmd, Duration::from_secs(60), "m", "1"));
        let mut actions = Actions::new(&WatchConfig::default());
        actions.retrains.insert(
            "m".into(),
            Retrain {
                started: Instant::now(),
                known: HashSet::new(),
                task: Some(task),
                canary: None,
                done: false,
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Ok(pid) = std::fs::read_to_string(&pidfile)
                && !pid.trim().is_empty()
            {
                break pid.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "the hook never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!gone(&pid));
        actions.step_down();
        assert!(actions.retrains.is_empty());
        while !gone(&pid) {
            assert!(Instant::now() < deadline, "hook {pid} still running");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn next_version_follows_the_largest_number() {
        assert_eq!(next_version(&[]), "1");
        assert_eq!(next_version(&["1".into(), "7".into(), "x".into()]), "8");
    }
}
