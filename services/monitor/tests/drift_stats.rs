//! Drift statistics against SciPy / Evidently / statsmodels values computed on the same fixed data
//! (`tests/fixtures/drift/cases.json`, written by `tests/fixtures/drift/generate.py`).
//!
//! Every statistic must agree within 1e-6 (absolute), exact and asymptotic KS p-values included.
//! Each test prints one line with the largest difference seen per statistic.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kiln_monitor::drift::{self, KsMethod, rule, stats};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/drift/cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read cases.json");
    serde_json::from_str(&text).expect("parse cases.json")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => panic!("bad number {other}"),
        },
        other => panic!("not a number: {other}"),
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Max absolute difference per statistic, printed once per test.
#[derive(Default)]
struct Diffs(Mutex<BTreeMap<&'static str, f64>>);

impl Diffs {
    fn check(&self, stat: &'static str, case: &str, got: f64, want: f64, tol: f64) {
        let diff = if got == want || (got.is_nan() && want.is_nan()) {
            0.0
        } else {
            (got - want).abs()
        };
        assert!(
            diff <= tol,
            "{case}: {stat} = {got:e}, reference {want:e} (|diff| {diff:e} > {tol:e})"
        );
        let mut m = self.0.lock().unwrap();
        let e = m.entry(stat).or_insert(0.0);
        *e = e.max(diff);
    }

    fn summary(&self, what: &str) {
        let m = self.0.lock().unwrap();
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.1e}")).collect();
        println!("{what} max |diff|: {}", parts.join(" "));
    }
}

fn cases(kind: &str) -> Vec<Value> {
    fixture()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind)
        .cloned()
        .collect()
}

#[test]
fn ks_matches_scipy_ks_2samp() {
    let d = Diffs::default();
    for c in cases("numeric") {
        let name = c["name"].as_str().unwrap();
        let (r, cur) = (floats(&c["reference"]), floats(&c["current"]));
        let got = drift::ks_2samp(&r, &cur).unwrap();
        d.check(
            "ks_statistic",
            name,
            got.statistic,
            num(&c["ks_statistic"]),
            TOL,
        );
        assert_eq!(
            num(&c["evidently_ks"]),
            num(&c["ks_p_value"]),
            "{name}: Evidently's ks is scipy's"
        );
        if c["ks_exact"].as_bool().unwrap() {
            assert_eq!(got.method, KsMethod::Exact, "{name}");
            d.check("ks_p_exact", name, got.p_value, num(&c["ks_p_value"]), TOL);
        } else {
            assert_eq!(got.method, KsMethod::Asymptotic, "{name}");
            d.check(
                "ks_p_asymptotic",
                name,
                got.p_value,
                num(&c["ks_p_value"]),
                TOL,
            );
        }
    }
    d.summary("ks");
}

#[test]
fn distances_and_psi_match_scipy_and_evidently() {
    let d = Diffs::default();
    for c in cases("numeric") {
        let name = c["name"].as_str().unwrap();
        let (r, cur) = (floats(&c["reference"]), floats(&c["current"]));
        d.check(
            "wasserstein",
            name,
            stats::wasserstein(&r, &cur).unwrap(),
            num(&c["wasserstein"]),
            TOL,
        );
        let wn = stats::wasserstein_normed(&r, &cur).unwrap();
        d.check(
            "wasserstein_norm",
            name,
            wn,
            num(&c["evidently_wasserstein_norm"]),
            TOL,
        );
        let js = stats::jensen_shannon(&r, &cur).unwrap();
        d.check(
            "jensenshannon",
            name,
            js,
            num(&c["evidently_jensenshannon"]),
            TOL,
        );
        d.check(
            "psi",
            name,
            stats::psi(&r, &cur).unwrap(),
            num(&c["evidently_psi"]),
            TOL,
        );
        d.check(
            "psi_deciles",
            name,
            stats::psi_deciles(&r, &cur).unwrap(),
            num(&c["psi_deciles"]),
            TOL,
        );
    }
    d.summary("numeric distances");
}

#[test]
fn weighted_forms_equal_raw_forms() {
    for c in cases("numeric").iter().take(4) {
        let (r, cur) = (floats(&c["reference"]), floats(&c["current"]));
        let rc = stats::value_counts(&r).unwrap();
        let cc = stats::value_counts(&cur).unwrap();
        assert_eq!(
            drift::ks_2samp_counts(&rc, &cc).unwrap(),
            drift::ks_2samp(&r, &cur).unwrap()
        );
        let w = |s: &[(f64, u64)]| s.iter().map(|&(v, k)| (v, k as f64)).collect::<Vec<_>>();
        let a = stats::wasserstein_weighted(&w(&rc), &w(&cc)).unwrap();
        assert!((a - stats::wasserstein(&r, &cur).unwrap()).abs() < 1e-12);
    }
}

#[test]
fn categorical_tests_match_evidently() {
    let d = Diffs::default();
    for c in cases("categorical") {
        let name = c["name"].as_str().unwrap();
        let (r, cur) = (counts(&c["reference"]), counts(&c["current"]));
        if let Some(want) = c.get("evidently_chisquare") {
            d.check(
                "chisquare_p",
                name,
                stats::chi_square(&r, &cur).unwrap().p_value,
                num(want),
                TOL,
            );
        }
        if let Some(want) = c.get("evidently_z") {
            d.check(
                "z_p",
                name,
                stats::z_test(&r, &cur).unwrap(),
                num(want),
                TOL,
            );
        }
        let js = stats::jensen_shannon_counts(&r, &cur).unwrap();
        d.check(
            "jensenshannon",
            name,
            js,
            num(&c["evidently_jensenshannon"]),
            TOL,
        );
        d.check(
            "psi",
            name,
            stats::psi_counts(&r, &cur).unwrap(),
            num(&c["evidently_psi"]),
            TOL,
        );
    }
    d.summary("categorical");
}

#[test]
fn default_rule_matches_evidently() {
    let d = Diffs::default();
    let mut verdicts = Vec::new();
    for c in fixture()["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let got = if c["kind"] == "numeric" {
            rule::numeric_feature_drift(&floats(&c["reference"]), &floats(&c["current"])).unwrap()
        } else {
            rule::categorical_feature_drift(&counts(&c["reference"]), &counts(&c["current"]))
                .unwrap()
        };
        assert_eq!(
            got.test.name(),
            c["default_test"].as_str().unwrap(),
            "{name}: test choice"
        );
        d.check(
            "default_score",
            name,
            got.score,
            num(&c["default_score"]),
            TOL,
        );
        assert_eq!(
            got.threshold,
            num(&c["default_threshold"]),
            "{name}: threshold"
        );
        assert_eq!(
            got.drifted,
            c["default_drifted"].as_bool().unwrap(),
            "{name}: drifted"
        );
        verdicts.push(got);
    }
    let want = &fixture()["dataset_drift"];
    let got = rule::dataset_drift(&verdicts, 0.5);
    assert_eq!(got.share, num(&want["share"]));
    assert_eq!(got.drifted, want["dataset_drift"].as_bool().unwrap());
    d.summary("default rule");
}

#[test]
fn corrections_match_statsmodels() {
    let fx = fixture();
    let c = &fx["corrections"];
    let (p, alpha) = (floats(&c["p_values"]), num(&c["alpha"]));
    let d = Diffs::default();
    for (method, got) in [
        ("bonferroni", drift::bonferroni(&p, alpha)),
        ("fdr_bh", drift::benjamini_hochberg(&p, alpha)),
    ] {
        let want = &c[method];
        let adj = floats(&want["p_adjusted"]);
        let reject: Vec<bool> = want["reject"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect();
        for (g, w) in got.p_adjusted.iter().zip(&adj) {
            d.check(
                if method == "fdr_bh" {
                    "fdr_bh"
                } else {
                    "bonferroni"
                },
                method,
                *g,
                *w,
                TOL,
            );
        }
        assert_eq!(got.p_adjusted.len(), adj.len());
        assert_eq!(got.reject, reject, "{method}: reject decisions");
    }
    d.summary("corrections");
}

#[test]
fn kstwo_and_smirnov_match_scipy() {
    let d = Diffs::default();
    for p in fixture()["kstwo"].as_array().unwrap() {
        let (n, x) = (p["n"].as_u64().unwrap(), num(&p["x"]));
        let case = format!("n={n} x={x}");
        let got = drift::kstwo::kstwo_sf(n, x);
        d.check("kstwo_sf", &case, got, num(&p["kstwo_sf"]), TOL);
        d.check(
            "smirnov",
            &case,
            drift::kstwo::smirnov_sf(n, x),
            num(&p["smirnov"]),
            TOL,
        );
    }
    d.summary("kstwo");
}
