//! Minimal hand-written SVG line charts for the HTML report: linear axes with "nice" ticks (or
//! given x ticks), one polyline per series, a legend. Self-contained: no scripts, no fonts to
//! fetch.

use std::fmt::Write as _;

/// Chart width and height in SVG units.
pub const SIZE: (f64, f64) = (760.0, 300.0);
const MARGIN: (f64, f64, f64, f64) = (70.0, 20.0, 30.0, 45.0); // left, right, top, bottom

/// Colors of the series, in order.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points in data units; gaps are simply skipped.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label under the x axis.
    pub x_label: &'a str,
    /// The lines.
    pub series: Vec<Series>,
    /// Fixed x ticks (value, label); `None`: nice ticks of the data range.
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// How y tick values are written.
    pub y_format: &'a dyn Fn(f64) -> String,
}

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About `n` round tick values covering `[lo, hi]` (steps of 1, 2 or 5 × 10^k).
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Whole-number ticks for `[lo, hi]` (seconds): [`nice_ticks`] with steps of at least 1.
pub fn integer_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let ticks: Vec<f64> = nice_ticks(lo, hi.max(lo + 1.0), 8)
        .into_iter()
        .filter(|x| x.fract() == 0.0)
        .collect();
    ticks.into_iter().map(|x| (x, format!("{x}"))).collect()
}

fn bounds(chart: &Chart) -> (f64, f64, f64) {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (mut x_lo, mut x_hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if let Some(ticks) = &chart.x_ticks {
        for (x, _) in ticks {
            x_lo = x_lo.min(*x);
            x_hi = x_hi.max(*x);
        }
    }
    if x_lo > x_hi {
        (x_lo, x_hi) = (0.0, 1.0);
    }
    let y_max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let y_hi = nice_ticks(0.0, y_max.max(1e-9) * 1.05, 5)
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(y_max * 1.05)
        .max(1e-9);
    (x_lo, x_hi.max(x_lo + 1e-9), y_hi)
}

/// The chart as an `<svg>` element.
pub fn line_chart(chart: &Chart) -> String {
    let (w, h) = SIZE;
    let (ml, mr, mt, mb) = MARGIN;
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let (x_lo, x_hi, y_hi) = bounds(chart);
    let sx = |x: f64| ml + (x - x_lo) / (x_hi - x_lo) * pw;
    let sy = |y: f64| mt + ph - y / y_hi * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{ml}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        escape(chart.title)
    );
    for y in nice_ticks(0.0, y_hi, 5) {
        let py = sy(y);
        let _ = write!(
            s,
            r##"<line x1="{ml}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 5.0,
            py + 4.0,
            escape(&(chart.y_format)(y))
        );
    }
    let x_ticks = chart.x_ticks.clone().unwrap_or_else(|| {
        nice_ticks(x_lo, x_hi, 8)
            .into_iter()
            .map(|x| (x, format!("{x}")))
            .collect()
    });
    for (x, label) in x_ticks {
        let px = sx(x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{mt}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            mt + ph,
            mt + ph + 15.0,
            escape(&label)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        ml + pw / 2.0,
        h - 8.0,
        escape(chart.x_label)
    );
    for (i, series) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = series
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let lx = ml + pw - 150.0 * (chart.series.len() - i) as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="8" width="10" height="10" fill="{color}"/><text x="{:.1}" y="17">{}</text>"#,
            lx + 14.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 0.9, 3), [0.0, 0.5]);
        assert_eq!(nice_ticks(3.0, 7.0, 4), [3.0, 4.0, 5.0, 6.0, 7.0]);
        assert!(!nice_ticks(0.0, 0.0, 5).is_empty());
        let seconds: Vec<f64> = integer_ticks(0.0, 2.0).into_iter().map(|t| t.0).collect();
        assert_eq!(seconds, [0.0, 1.0, 2.0]);
        assert_eq!(integer_ticks(0.0, 0.0)[1].1, "1");
    }

    #[test]
    fn chart_draws_every_series_with_escaped_text() {
        let chart = Chart {
            title: "p50 & p99 <latency>",
            x_label: "second",
            series: vec![
                Series {
                    name: "p50".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)],
                },
                Series {
                    name: "p99".into(),
                    points: vec![(0.0, 3.0), (2.0, 4.0)],
                },
            ],
            x_ticks: None,
            y_format: &|y| format!("{y}ms"),
        };
        let svg = line_chart(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("p50 &amp; p99 &lt;latency&gt;"));
        assert!(!svg.contains("<latency>"));
        assert!(svg.contains(">4ms<"), "{svg}");
        let empty = Chart {
            series: vec![],
            ..chart
        };
        assert!(line_chart(&empty).ends_with("</svg>"));
    }
}
