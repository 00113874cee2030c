//! The drift section of a version page: the verdict per feature (the `DriftReport` answer) and,
//! for the most drifted features, the reference and live distributions drawn on shared bins.
//!
//! Bins: integer-valued features with a small range (pixel intensities, counts) get one bin per
//! value; others [`BINS`] equal bins between the smaller of the two 1 % quantiles and the larger
//! of the two 99 % quantiles, the outer bins also holding the tails. A bin's share is the
//! difference of the sketch CDF at its edges, so both distributions sum to 1 and are read from
//! the same sketches the tests use. Features are ordered drifted first, then by PSI.

use std::cmp::Ordering;
use std::fmt::Write;

use kiln_proto::kiln::v1::{DriftReportResponse, FeatureDrift};
use kiln_telemetry::profile::{FeatureProfile, ModelProfile};

use super::html::{badge, esc, pct, section, table};

/// Equal-width bins of a continuous feature.
pub const BINS: usize = 20;
/// Widest integer range drawn with one bin per value.
const MAX_INTEGER_BINS: f64 = 40.0;
/// Features drawn (the rest are listed in the table).
pub const DRAWN: usize = 16;

/// Reference and live shares on shared bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Bin edges (`shares + 1` of them); the first and last bins extend to ±∞.
    pub edges: Vec<f64>,
    /// Share of reference values per bin (sums to 1).
    pub reference: Vec<f64>,
    /// Share of live values per bin (sums to 1).
    pub current: Vec<f64>,
}

/// The histogram of a numeric feature in both profiles (`None` when either is empty or
/// categorical).
pub fn histogram(reference: &FeatureProfile, current: &FeatureProfile) -> Option<Histogram> {
    let lo = reference.quantile(0.01)?.min(current.quantile(0.01)?);
    let hi = reference.quantile(0.99)?.max(current.quantile(0.99)?);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        let min = [reference.moments().min(), current.moments().min()];
        let max = [reference.moments().max(), current.moments().max()];
        (
            min.into_iter().flatten().fold(lo, f64::min),
            max.into_iter().flatten().fold(hi, f64::max),
        )
    };
    let integral = lo.fract() == 0.0 && hi.fract() == 0.0 && hi - lo <= MAX_INTEGER_BINS;
    let edges: Vec<f64> = if integral {
        // One bin per value v: (v - 0.5, v + 0.5].
        let n = (hi - lo) as usize + 1;
        (0..=n).map(|i| lo - 0.5 + i as f64).collect()
    } else {
        let w = (hi - lo) / BINS as f64;
        (0..=BINS).map(|i| lo + w * i as f64).collect()
    };
    let shares = |f: &FeatureProfile| -> Option<Vec<f64>> {
        let n = edges.len() - 1;
        let mut out = Vec::with_capacity(n);
        let mut below = 0.0;
        for (i, &e) in edges[1..].iter().enumerate() {
            let c = if i + 1 == n {
                1.0
            } else {
                f.cdf(e)?.clamp(0.0, 1.0)
            };
            out.push((c - below).max(0.0));
            below = c.max(below);
        }
        Some(out)
    };
    Some(Histogram {
        reference: shares(reference)?,
        current: shares(current)?,
        edges,
    })
}

/// Orders features for people: drifted first, then by PSI (highest first), then by index.
pub fn order(features: &[FeatureDrift]) -> Vec<&FeatureDrift> {
    let mut out: Vec<&FeatureDrift> = features.iter().collect();
    out.sort_by(|a, b| {
        b.drifted
            .cmp(&a.drifted)
            .then_with(|| b.psi.partial_cmp(&a.psi).unwrap_or(Ordering::Equal))
            .then_with(|| a.index.cmp(&b.index))
    });
    out
}

/// The histograms of the first [`DRAWN`] features in [`order`], by feature index.
pub fn drawn(
    report: &DriftReportResponse,
    reference: &ModelProfile,
    live: &ModelProfile,
) -> Vec<(u32, Histogram)> {
    order(&report.features)
        .into_iter()
        .take(DRAWN)
        .filter_map(|f| {
            let i = f.index as usize;
            let h = histogram(reference.features().get(i)?, live.features().get(i)?)?;
            Some((f.index, h))
        })
        .collect()
}

/// Two bar series on shared bins as an inline SVG (reference blue, live orange).
pub fn svg(h: &Histogram) -> String {
    const W: f64 = 280.0;
    const H: f64 = 90.0;
    const AXIS: f64 = 14.0;
    let n = h.reference.len().max(1);
    let top = h
        .reference
        .iter()
        .chain(&h.current)
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9);
    let slot = W / n as f64;
    let bar = (slot / 2.0 - 0.5).max(0.5);
    let mut out = format!(
        "<svg class=\"hist\" viewBox=\"0 0 {W} {}\" width=\"{W}\" height=\"{}\" \
         role=\"img\" aria-label=\"reference and live distribution\">",
        H + AXIS,
        H + AXIS
    );
    for (i, (r, c)) in h.reference.iter().zip(&h.current).enumerate() {
        let x = i as f64 * slot;
        for (j, (share, class)) in [(r, "ref"), (c, "cur")].into_iter().enumerate() {
            let bh = share / top * (H - 2.0);
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\"/>",
                x + j as f64 * (bar + 0.5),
                H - bh
            );
        }
    }
    let first = h.edges.first().copied().unwrap_or(0.0);
    let last = h.edges.last().copied().unwrap_or(0.0);
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" class=\"axis\"/>\
         <text x=\"0\" y=\"{}\" class=\"tick\">{}</text>\
         <text x=\"{W}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{}</text></svg>",
        H + AXIS - 2.0,
        esc(&tick(first)),
        H + AXIS - 2.0,
        esc(&tick(last)),
    );
    out
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 || (v.fract().abs() - 0.5).abs() < 1e-9 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn verdict(f: &FeatureDrift) -> String {
    if f.test.is_empty() {
        badge("muted", "not judged")
    } else if f.drifted {
        badge("bad", "drift")
    } else {
        badge("ok", "ok")
    }
}

fn score(f: &FeatureDrift) -> String {
    if f.test.is_empty() {
        "–".into()
    } else {
        format!(
            "{} {:.3e} (threshold {})",
            esc(&f.test),
            f.score,
            f.threshold
        )
    }
}

/// The drift section: `report` (or why there is none) and the drawn histograms.
pub fn render(
    report: Result<&DriftReportResponse, &str>,
    hists: &[(u32, Histogram)],
    lookback_secs: u64,
) -> String {
    let report = match report {
        Ok(r) => r,
        Err(why) => {
            return section(
                "drift",
                "Drift",
                &format!("<p class=\"empty\">{}</p>\n", esc(why)),
            );
        }
    };
    let mut inner = format!(
        "<p>Live traffic of the last {lookback_secs} s ({} rows) against the reference \
         profile ({} rows): ",
        report.sample_count, report.reference_count
    );
    if report.reason.is_empty() {
        let _ = writeln!(
            inner,
            "{} {} of {} features drifted (share {}; {} after Benjamini–Hochberg).</p>",
            if report.drifted {
                badge("bad", "dataset drift")
            } else {
                badge("ok", "no dataset drift")
            },
            report.drifted_features,
            report.features.len(),
            pct(report.drift_share),
            report.drifted_features_adjusted
        );
    } else {
        let _ = writeln!(inner, "{}</p>", esc(&report.reason));
    }
    let ordered = order(&report.features);
    if !hists.is_empty() {
        inner.push_str(
            "<p class=\"legend\"><span class=\"swatch ref\"></span>reference \
             <span class=\"swatch cur\"></span>live</p>\n<div class=\"hist-grid\">\n",
        );
        for f in &ordered {
            let Some((_, h)) = hists.iter().find(|(i, _)| *i == f.index) else {
                continue;
            };
            let _ = writeln!(
                inner,
                "<figure class=\"feature\" data-feature=\"{}\"><figcaption>{} {} \
                 <span class=\"muted\">PSI {:.3}</span></figcaption>{}</figure>",
                f.index,
                esc(&f.name),
                verdict(f),
                f.psi,
                svg(h)
            );
        }
        inner.push_str("</div>\n");
    }
    let rows: Vec<Vec<String>> = ordered
        .iter()
        .map(|f| {
            vec![
                esc(&f.name),
                verdict(f),
                score(f),
                format!("{:.3}", f.psi),
                if f.p_value_adjusted < 0.0 {
                    "–".into()
                } else {
                    format!("{:.3e}", f.p_value_adjusted)
                },
                format!("{} / {}", f.sample_count, f.reference_count),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            inner,
            "<details class=\"all-features\"{}><summary>All {} features</summary>{}</details>",
            if hists.is_empty() { " open" } else { "" },
            rows.len(),
            table(
                "features",
                &[
                    "feature",
                    "verdict",
                    "test, score",
                    "PSI",
                    "BH-adjusted p",
                    "live / reference rows"
                ],
                &rows,
                ""
            )
        );
    }
    section("drift", "Drift per feature", &inner)
}

#[cfg(test)]
mod tests {
    use kiln_telemetry::profile::ProfileSchema;

    use super::*;

    fn profile(values: impl Iterator<Item = f64>) -> ModelProfile {
        let mut p = ModelProfile::new("m", "1", &ProfileSchema::numeric("x", 1)).unwrap();
        for v in values {
            p.observe_row(&[v]).unwrap();
        }
        p
    }

    #[test]
    fn shares_of_both_sum_to_one_on_shared_bins() {
        let r = profile((0..1000u32).map(|i| f64::from(i) / 100.0));
        let c = profile((0..1000u32).map(|i| 5.0 + f64::from(i) / 100.0));
        let h = histogram(&r.features()[0], &c.features()[0]).unwrap();
        assert_eq!(h.edges.len(), BINS + 1);
        for s in [&h.reference, &h.current] {
            assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{s:?}");
        }
        // The live mass sits to the right of the reference's.
        let mean = |s: &[f64]| s.iter().enumerate().map(|(i, x)| i as f64 * x).sum::<f64>();
        assert!(mean(&h.current) > mean(&h.reference) + 5.0, "{h:?}");
        let svg = svg(&h);
        assert_eq!(svg.matches("<rect").count(), 2 * BINS);
    }

    #[test]
    fn integer_features_get_one_bin_per_value() {
        let r = profile((0..500u32).map(|i| f64::from(i % 17)));
        let c = profile((0..500).map(|_| 16.0));
        let h = histogram(&r.features()[0], &c.features()[0]).unwrap();
        assert_eq!(h.reference.len(), 17);
        assert!((h.current[16] - 1.0).abs() < 1e-9, "{h:?}");
        let constant = profile((0..10).map(|_| 0.0));
        let h = histogram(&constant.features()[0], &constant.features()[0]).unwrap();
        assert_eq!((h.reference.len(), h.reference[0]), (1, 1.0));
    }

    #[test]
    fn orders_drifted_then_by_psi_and_escapes_names() {
        let f = |index, drifted, psi| FeatureDrift {
            index,
            drifted,
            psi,
            name: format!("<x{index}>"),
            test: "ks".into(),
            ..Default::default()
        };
        let report = DriftReportResponse {
            features: vec![f(0, false, 0.9), f(1, true, 0.1), f(2, true, 0.5)],
            ..Default::default()
        };
        let idx: Vec<u32> = order(&report.features).iter().map(|f| f.index).collect();
        assert_eq!(idx, vec![2, 1, 0]);
        let html = render(Ok(&report), &[], 60);
        assert!(html.contains("&lt;x2&gt;") && !html.contains("<x2>"));
        assert!(html.find("&lt;x2&gt;") < html.find("&lt;x0&gt;"));
        assert!(render(Err("no <reference>"), &[], 60).contains("no &lt;reference&gt;"));
    }
}
