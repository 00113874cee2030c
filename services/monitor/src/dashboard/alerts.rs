//! The alerts section: alerts firing now and the recent log of transitions and actions, from
//! the watch loop's [`Snapshot`] (all versions on the overview, one version on its page).

use super::html::{ago, badge, esc, section, table, utc, version_href};
use crate::watch::Snapshot;

/// Log entries shown, newest first.
const EVENTS_SHOWN: usize = 30;

/// The alerts section; `only` restricts it to one (model, version).
pub fn render(snap: &Snapshot, only: Option<(&str, &str)>, now_ms: u64) -> String {
    let keep = |m: &str, v: &str| only.is_none_or(|(om, ov)| om == m && ov == v);
    let firing: Vec<Vec<String>> = snap
        .firing
        .iter()
        .filter(|a| keep(&a.model, &a.version))
        .map(|a| {
            let sev = if a.kind.severity() == "critical" {
                "bad"
            } else {
                "warn"
            };
            vec![
                badge(sev, a.kind.severity()),
                esc(a.kind.name()),
                version_link(&a.model, &a.version),
                esc(&a.summary),
                format!(
                    "<span title=\"{}\">{}</span>",
                    esc(&utc(a.starts_at_unix_ms)),
                    esc(&ago(a.starts_at_unix_ms, now_ms))
                ),
            ]
        })
        .collect();
    let events: Vec<Vec<String>> = snap
        .events
        .iter()
        .rev()
        .filter(|e| keep(&e.model, &e.version))
        .take(EVENTS_SHOWN)
        .map(|e| {
            let kind = match e.what {
                "firing" => "bad",
                "resolved" => "ok",
                _ => "muted",
            };
            vec![
                esc(&utc(e.at_unix_ms)),
                badge(kind, e.what),
                version_link(&e.model, &e.version),
                esc(&e.text),
            ]
        })
        .collect();
    let status = if snap.evaluated_unix_ms == 0 {
        "<p class=\"muted\">The watch loop has not judged a window yet.</p>\n".to_string()
    } else {
        format!(
            "<p class=\"muted\">Last judged {} ({}).</p>\n",
            esc(&ago(snap.evaluated_unix_ms, now_ms)),
            esc(&utc(snap.evaluated_unix_ms))
        )
    };
    let inner = format!(
        "{status}<h3>Firing ({})</h3>\n{}<h3>Recent events</h3>\n{}",
        firing.len(),
        table(
            "alerts firing",
            &["severity", "alert", "version", "summary", "since"],
            &firing,
            "No alert is firing."
        ),
        table(
            "alerts events",
            &["at", "what", "version", "detail"],
            &events,
            "No alert has fired yet."
        ),
    );
    section("alerts", "Alerts", &inner)
}

fn version_link(model: &str, version: &str) -> String {
    format!(
        "<a href=\"{}\">{}/{}</a>",
        version_href(model, version),
        esc(model),
        esc(version)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Alert, AlertEvent, AlertKind};

    #[test]
    fn lists_firing_alerts_escaped_and_filters_by_version() {
        let snap = Snapshot {
            evaluated_unix_ms: 1_000,
            firing: vec![Alert {
                kind: AlertKind::DataDrift,
                model: "m".into(),
                version: "1".into(),
                summary: "<b>drift</b>".into(),
                starts_at_unix_ms: 500,
            }],
            events: vec![AlertEvent {
                at_unix_ms: 500,
                what: "firing",
                model: "m".into(),
                version: "1".into(),
                text: "<b>drift</b>".into(),
            }],
            ..Default::default()
        };
        let all = render(&snap, None, 2_000);
        assert!(all.contains("KilnDataDrift") && all.contains("&lt;b&gt;drift"));
        assert!(!all.contains("<b>drift"));
        assert!(all.contains("href=\"/models/m/1\""));
        let other = render(&snap, Some(("m", "2")), 2_000);
        assert!(other.contains("No alert is firing.") && other.contains("Firing (0)"));
        let empty = render(&Snapshot::default(), None, 2_000);
        assert!(empty.contains("has not judged a window yet"));
    }
}
