//! HTML building blocks of the dashboard: escaping, the page frame, number and time formats.
//!
//! Guarantees: [`esc`] makes any string safe as element text or a quoted attribute value;
//! [`json_script`] makes JSON safe inside a `<script>` element (it cannot close the element or
//! open a comment). Every string that comes from the store or from users goes through one of
//! them.

use std::fmt::Write;

use serde::Serialize;

/// Seconds between automatic refreshes of a page.
pub const REFRESH_SECS: u32 = 10;

/// `s` escaped for HTML text and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` as JSON to embed in `<script type="application/json">`: `<`, `>` and `&` are
/// written as `\u` escapes, which JSON parsers read back unchanged.
pub fn json_script(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The link to a version's page (model and version are store key segments: letters, digits,
/// `-`, `_`, `.`; escaped anyway).
pub fn version_href(model: &str, version: &str) -> String {
    format!("/models/{}/{}", esc(model), esc(version))
}

/// A whole page: `title` (escaped here), `body` (already HTML), optional extra head elements.
pub fn page(title: &str, head: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Kiln</title>
<link rel="stylesheet" href="/assets/dashboard.css">
{head}</head>
<body><header><a class="brand" href="/">Kiln</a><span class="crumb">{title}</span>
<span class="refresh">refreshes every {REFRESH_SECS} s · <span id="now">{now}</span></span></header>
<main>
{body}</main></body></html>
"#,
        title = esc(title),
        now = esc(&utc(crate::telemetry::report::now_ms())),
    )
}

/// A `<section>` with a heading (escaped) and an id.
pub fn section(id: &str, heading: &str, inner: &str) -> String {
    format!(
        "<section id=\"{}\"><h2>{}</h2>\n{inner}</section>\n",
        esc(id),
        esc(heading)
    )
}

/// A table: headings (escaped) and rows of cells that are already HTML.
pub fn table(class: &str, headings: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>\n", esc(empty));
    }
    let mut out = format!("<table class=\"{}\"><thead><tr>", esc(class));
    for h in headings {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    out
}

/// A coloured label: `kind` is one of `ok`, `warn`, `bad`, `muted`.
pub fn badge(kind: &str, text: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", esc(kind), esc(text))
}

/// Milliseconds, 3 significant digits.
pub fn ms(v: f64) -> String {
    if v <= 0.0 {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// A rate per second.
pub fn per_sec(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}/s")
    } else {
        format!("{v:.0}/s")
    }
}

/// A share 0..1 as a percentage.
pub fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

/// Bytes in binary units.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A Unix-ms instant as `YYYY-MM-DD HH:MM:SS UTC` (empty for 0).
pub fn utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return String::new();
    }
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How long ago `unix_ms` was, from `now_ms` ("12 s ago").
pub fn ago(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms == 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(unix_ms) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("digits-1.2_b"), "digits-1.2_b");
    }

    #[test]
    fn json_cannot_close_its_script_element() {
        let s = json_script(&vec!["</script><!--", "a&b"]);
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: Vec<String> = serde_json::from_str(&s).unwrap();
        assert_eq!(back, vec!["</script><!--", "a&b"]);
    }

    #[test]
    fn formats_times_and_sizes() {
        assert_eq!(utc(0), "");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(ago(1_000, 31_000), "30 s ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(ms(0.0), "–");
        assert_eq!(ms(1.234), "1.23 ms");
        assert_eq!(pct(0.5), "50.0 %");
    }

    #[test]
    fn tables_escape_headings_and_say_when_empty() {
        assert_eq!(
            table("t", &["a"], &[], "no <rows>"),
            "<p class=\"empty\">no &lt;rows&gt;</p>\n"
        );
        let t = table("t", &["<h>"], &[vec!["<b>x</b>".into()]], "");
        assert!(t.contains("<th>&lt;h&gt;</th>") && t.contains("<td><b>x</b></td>"));
    }
}
