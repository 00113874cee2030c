//! Alert state: which alerts fire, their transitions, and a bounded log of transitions and
//! actions; plus the Alertmanager webhook payload of a batch of transitions.
//!
//! An alert is identified by (kind, model, version). [`AlertBook::set`] turns the judged
//! condition of a window into a transition: `Fired` when it starts, `Resolved` when it stops,
//! nothing while it holds. The log keeps the last [`MAX_EVENTS`] entries.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

/// Entries kept in the transition/action log.
pub const MAX_EVENTS: usize = 200;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AlertKind {
    /// Dataset drift in K consecutive windows.
    DataDrift,
    /// A window over the deployment's SLO (p99 latency or error rate).
    SloBreach,
}

impl AlertKind {
    /// The `alertname` label.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::DataDrift => "KilnDataDrift",
            AlertKind::SloBreach => "KilnSloBreach",
        }
    }

    /// The `severity` label.
    pub fn severity(self) -> &'static str {
        match self {
            AlertKind::DataDrift => "warning",
            AlertKind::SloBreach => "critical",
        }
    }
}

/// A firing alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// One line for people.
    pub summary: String,
    /// When it started firing, Unix ms.
    pub starts_at_unix_ms: u64,
}

/// A change of alert state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The alert started firing.
    Fired(Alert),
    /// The alert stopped firing at the given Unix ms.
    Resolved(Alert, u64),
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// When, Unix ms.
    pub at_unix_ms: u64,
    /// `firing`, `resolved` or `action`.
    pub what: &'static str,
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// For people: the alert summary or the action taken.
    pub text: String,
}

/// Firing alerts and the log.
#[derive(Debug, Default)]
pub struct AlertBook {
    firing: BTreeMap<(AlertKind, String, String), Alert>,
    events: VecDeque<AlertEvent>,
}

impl AlertBook {
    /// Records whether `kind` holds for `model`/`version` as of `now_ms`.
    pub fn set(
        &mut self,
        kind: AlertKind,
        model: &str,
        version: &str,
        holds: bool,
        summary: impl FnOnce() -> String,
        now_ms: u64,
    ) -> Option<Transition> {
        let key = (kind, model.to_string(), version.to_string());
        match (holds, self.firing.contains_key(&key)) {
            (true, false) => {
                let alert = Alert {
                    kind,
                    model: model.into(),
                    version: version.into(),
                    summary: summary(),
                    starts_at_unix_ms: now_ms,
                };
                self.log(now_ms, "firing", model, version, alert.summary.clone());
                self.firing.insert(key, alert.clone());
                Some(Transition::Fired(alert))
            }
            (false, true) => {
                let alert = self.firing.remove(&key)?;
                self.log(now_ms, "resolved", model, version, alert.summary.clone());
                Some(Transition::Resolved(alert, now_ms))
            }
            _ => None,
        }
    }

    /// Resolves every alert of a version `keep` rejects (a version no longer deployed).
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool, now_ms: u64) -> Vec<Transition> {
        let gone: Vec<_> = self
            .firing
            .keys()
            .filter(|(_, m, v)| !keep(m, v))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|(k, m, v)| self.set(k, &m, &v, false, String::new, now_ms))
            .collect()
    }

    /// Logs an action taken.
    pub fn action(&mut self, model: &str, version: &str, text: String, now_ms: u64) {
        self.log(now_ms, "action", model, version, text);
    }

    fn log(&mut self, at: u64, what: &'static str, model: &str, version: &str, text: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(AlertEvent {
            at_unix_ms: at,
            what,
            model: model.into(),
            version: version.into(),
            text,
        });
    }

    /// Whether `kind` fires for `model`/`version`.
    pub fn is_firing(&self, kind: AlertKind, model: &str, version: &str) -> bool {
        self.firing
            .contains_key(&(kind, model.to_string(), version.to_string()))
    }

    /// Firing alerts, by kind, model, version.
    pub fn firing(&self) -> Vec<Alert> {
        self.firing.values().cloned().collect()
    }

    /// The log, oldest first.
    pub fn events(&self) -> Vec<AlertEvent> {
        self.events.iter().cloned().collect()
    }
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// Alertmanager's "zero" time: an alert still firing has no end.
const NO_END: &str = "0001-01-01T00:00:00Z";

fn alert_json(alert: &Alert, ends_at: Option<u64>, external_url: &str) -> Value {
    let status = if ends_at.is_some() {
        "resolved"
    } else {
        "firing"
    };
    let fingerprint = format!(
        "{:016x}",
        alert
            .model
            .bytes()
            .chain([0])
            .chain(alert.version.bytes())
            .chain([0])
            .chain(alert.kind.name().bytes())
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    );
    json!({
        "status": status,
        "labels": {
            "alertname": alert.kind.name(),
            "severity": alert.kind.severity(),
            "model": alert.model,
            "version": alert.version,
        },
        "annotations": { "summary": alert.summary },
        "startsAt": rfc3339(alert.starts_at_unix_ms),
        "endsAt": ends_at.map_or_else(|| NO_END.to_string(), rfc3339),
        "generatorURL": external_url,
        "fingerprint": fingerprint,
    })
}

/// The Alertmanager webhook body (`version` 4) of `transitions`, grouped under receiver `kiln`.
pub fn alertmanager_payload(transitions: &[Transition], external_url: &str) -> Value {
    let alerts: Vec<Value> = transitions
        .iter()
        .map(|t| match t {
            Transition::Fired(a) => alert_json(a, None, external_url),
            Transition::Resolved(a, end) => alert_json(a, Some(*end), external_url),
        })
        .collect();
    let any_firing = transitions
        .iter()
        .any(|t| matches!(t, Transition::Fired(_)));
    json!({
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": if any_firing { "firing" } else { "resolved" },
        "receiver": "kiln",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_resolves_once_and_bounds_the_log() {
        let mut b = AlertBook::default();
        let s = || "drift".to_string();
        assert!(matches!(
            b.set(AlertKind::DataDrift, "m", "1", true, s, 1),
            Some(Transition::Fired(_))
        ));
        assert_eq!(b.set(AlertKind::DataDrift, "m", "1", true, s, 2), None);
        assert!(b.is_firing(AlertKind::DataDrift, "m", "1"));
        assert!(!b.is_firing(AlertKind::SloBreach, "m", "1"));
        let t = b.set(AlertKind::DataDrift, "m", "1", false, s, 3);
        assert!(matches!(t, Some(Transition::Resolved(ref a, 3)) if a.starts_at_unix_ms == 1));
        assert_eq!(b.set(AlertKind::DataDrift, "m", "1", false, s, 4), None);
        for i in 0..MAX_EVENTS as u64 {
            b.action("m", "1", format!("a{i}"), i);
        }
        assert_eq!(b.events().len(), MAX_EVENTS);
        assert_eq!(
            b.events().last().unwrap().text,
            format!("a{}", MAX_EVENTS - 1)
        );
    }

    #[test]
    fn retain_resolves_alerts_of_removed_versions() {
        let mut b = AlertBook::default();
        b.set(AlertKind::SloBreach, "m", "1", true, String::new, 1);
        b.set(AlertKind::SloBreach, "m", "2", true, String::new, 1);
        let t = b.retain(|_, v| v == "2", 5);
        assert_eq!(t.len(), 1);
        assert_eq!(b.firing().len(), 1);
        assert_eq!(b.firing()[0].version, "2");
    }

    #[test]
    fn payload_has_alertmanagers_shape() {
        let a = Alert {
            kind: AlertKind::SloBreach,
            model: "digits".into(),
            version: "2".into(),
            summary: "p99 12 ms > 5 ms".into(),
            starts_at_unix_ms: 1_700_000_000_000,
        };
        let p = alertmanager_payload(
            &[
                Transition::Fired(a.clone()),
                Transition::Resolved(a, 1_700_000_060_000),
            ],
            "http://m",
        );
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        let alerts = p["alerts"].as_array().unwrap();
        assert_eq!(alerts[0]["labels"]["alertname"], "KilnSloBreach");
        assert_eq!(alerts[0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(alerts[0]["endsAt"], NO_END);
        assert_eq!(alerts[1]["status"], "resolved");
        assert_eq!(alerts[1]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(alerts[0]["fingerprint"], alerts[1]["fingerprint"]);
    }
}
