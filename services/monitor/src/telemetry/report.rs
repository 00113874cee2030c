//! `DriftReport`: live traffic of a model version against its reference profile.
//!
//! The live profile is the merge of the version's windows within the look-back (default
//! [`DEFAULT_LOOKBACK_SECS`]). The reference profile comes from the version record's
//! `reference_profile_uri` (a `reference.profile.pb`, or a raw CSV/NPY profiled on load) and is
//! cached per URI. Each input feature gets Evidently's default rule through
//! [`crate::drift::sketch`] (KS p-values are approximate by the sketches' rank error, see there),
//! PSI on reference deciles as an extra score, and the p-value tests (KS, chi-square, z) a
//! Benjamini–Hochberg correction (reported; the verdict stays Evidently's uncorrected rule).
//! Nothing is judged with fewer than [`MIN_SAMPLES`] live rows: the report then says
//! `drifted = false` and why. Dataset drift: at least [`DRIFT_SHARE`] of the judged features
//! drifted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_proto::kiln::v1::{DriftReportResponse, FeatureDrift};
use kiln_telemetry::profile::ModelProfile;

use super::store::{Merged, ProfileStore};
use crate::drift::{benjamini_hochberg, dataset_drift, sketch};
use crate::error::{Error, Result};

/// Look-back of a report whose request says 0, seconds.
pub const DEFAULT_LOOKBACK_SECS: u64 = 60;
/// Fewest live rows a report judges.
pub const MIN_SAMPLES: u64 = 200;
/// Evidently's dataset-drift share.
pub const DRIFT_SHARE: f64 = 0.5;
/// False discovery rate of the Benjamini–Hochberg correction.
pub const FDR: f64 = 0.05;
/// Most reference profiles cached.
const MAX_CACHED: usize = 64;

/// Reference profiles by URI (bounded; cleared when full).
#[derive(Debug, Default)]
pub struct ReferenceCache {
    profiles: Mutex<HashMap<String, Arc<ModelProfile>>>,
}

impl ReferenceCache {
    /// The reference profile a version record names (`reference_profile_uri`; empty: none).
    /// Blocking (a first load reads and decodes the file).
    pub fn of_uri(&self, uri: &str) -> Result<Option<Arc<ModelProfile>>> {
        match uri {
            "" => Ok(None),
            uri => self.get(uri).map(Some),
        }
    }

    /// The reference profile at `uri` (a path or `file://` URL), loaded once. Blocking.
    pub fn get(&self, uri: &str) -> Result<Arc<ModelProfile>> {
        if let Some(p) = self.profiles.lock().expect("reference cache").get(uri) {
            return Ok(p.clone());
        }
        let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        let profile = Arc::new(crate::reference::load(&path).map_err(|e| match e {
            Error::NotFound(m) => Error::FailedPrecondition(format!("reference profile: {m}")),
            e => e,
        })?);
        let mut map = self.profiles.lock().expect("reference cache");
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(uri.to_string(), profile.clone());
        Ok(profile)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Builds the report of `model`/`version` over the last `window_secs` (0: the default) against
/// `reference`. Blocking (sketch work).
pub fn build(
    store: &ProfileStore,
    model: &str,
    version: &str,
    window_secs: u64,
    reference: Option<&ModelProfile>,
) -> Result<DriftReportResponse> {
    let secs = if window_secs == 0 {
        DEFAULT_LOOKBACK_SECS
    } else {
        window_secs
    };
    let now = now_ms();
    let since = now.saturating_sub(secs.saturating_mul(1000));
    build_range(store, model, version, since, u64::MAX, reference)
}

/// Builds the report of `model`/`version` over the windows starting in `[since_ms, until_ms)`
/// (the watch loop judges one closed window at a time this way). Blocking (sketch work).
pub fn build_range(
    store: &ProfileStore,
    model: &str,
    version: &str,
    since_ms: u64,
    until_ms: u64,
    reference: Option<&ModelProfile>,
) -> Result<DriftReportResponse> {
    let now = now_ms();
    let since = since_ms;
    let secs = now.saturating_sub(since) / 1000;
    let mut out = DriftReportResponse {
        model: model.to_string(),
        version: version.to_string(),
        window_start_unix_ms: store.align(since),
        window_end_unix_ms: now,
        outlier_rate: -1.0,
        outlier_reason: "no live traffic in the look-back".into(),
        ..Default::default()
    };
    if let Some(r) = reference {
        out.reference_count = r.row_count;
        if r.request_count > 0 {
            out.reference_latency_p50_ms = r.latency().value_at_quantile(0.5) as f64 / 1000.0;
            out.reference_latency_p99_ms = r.latency().value_at_quantile(0.99) as f64 / 1000.0;
        }
    }
    let Some(Merged {
        profile: live,
        start_ms,
        end_ms,
        ..
    }) = store.merged_range(model, version, since, until_ms)?
    else {
        out.reason = format!("no live traffic profile of {model}/{version} in the last {secs} s");
        return Ok(out);
    };
    out.window_start_unix_ms = start_ms;
    out.window_end_unix_ms = end_ms.min(now).max(start_ms);
    out.request_count = live.request_count;
    out.error_count = live.error_count;
    out.sample_count = live.row_count;
    outlier_rate(&mut out, &live, reference);
    if !live.latency().is_empty() {
        out.latency_p50_ms = live.latency().value_at_quantile(0.5) as f64 / 1000.0;
        out.latency_p99_ms = live.latency().value_at_quantile(0.99) as f64 / 1000.0;
    }
    let Some(reference) = reference else {
        out.reason = format!("{model}/{version} has no reference profile (run `kiln profile`)");
        return Ok(out);
    };
    if live.row_count < MIN_SAMPLES {
        out.reason = format!(
            "{} live samples in the look-back, fewer than the {MIN_SAMPLES} a verdict needs",
            live.row_count
        );
        return Ok(out);
    }
    if reference.features().len() != live.features().len() {
        out.reason = format!(
            "the reference profile has {} features, live traffic {}",
            reference.features().len(),
            live.features().len()
        );
        return Ok(out);
    }
    judge(&mut out, reference, &live);
    Ok(out)
}

/// Judges `live` against `reference` as [`build`] does once it has both profiles (the same
/// [`MIN_SAMPLES`] and feature-count checks, then the per-feature rule, Benjamini–Hochberg and
/// dataset drift), without a store or look-back: for offline replays such as
/// `examples/drift_windows.rs`. Window times and latencies are left 0.
pub fn judge_profiles(reference: &ModelProfile, live: &ModelProfile) -> DriftReportResponse {
    let mut out = DriftReportResponse {
        model: live.model.clone(),
        version: live.version.clone(),
        request_count: live.request_count,
        error_count: live.error_count,
        sample_count: live.row_count,
        reference_count: reference.row_count,
        ..Default::default()
    };
    if live.row_count < MIN_SAMPLES {
        out.reason = format!(
            "{} live samples, fewer than the {MIN_SAMPLES} a verdict needs",
            live.row_count
        );
    } else if reference.features().len() != live.features().len() {
        out.reason = format!(
            "the reference profile has {} features, live traffic {}",
            reference.features().len(),
            live.features().len()
        );
    } else {
        judge(&mut out, reference, live);
    }
    out
}

/// The live outlier rate (rows the workers scored against the reference's outlier model), or
/// -1 and why nothing was scored.
fn outlier_rate(
    out: &mut DriftReportResponse,
    live: &ModelProfile,
    reference: Option<&ModelProfile>,
) {
    out.scored_rows = live.scored_rows();
    out.outlier_count = live.outlier_count();
    if let Some(rate) = live.outlier_rate() {
        out.outlier_rate = rate;
        out.outlier_reason.clear();
        return;
    }
    out.outlier_rate = -1.0;
    out.outlier_reason = match reference.map(|r| r.outlier_model().is_some()) {
        Some(true) => "no live row was scored (workers score rows once they load a package whose reference.profile.pb has an outlier model)".into(),
        Some(false) => "the reference profile has no outlier model (re-run `kiln profile`)".into(),
        None => "no reference profile (run `kiln profile`)".into(),
    };
}

fn judge(out: &mut DriftReportResponse, reference: &ModelProfile, live: &ModelProfile) {
    let mut verdicts = Vec::new();
    let mut p_values = Vec::new();
    for (i, (r, c)) in reference.features().iter().zip(live.features()).enumerate() {
        let mut f = FeatureDrift {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            name: c.name().to_string(),
            sample_count: c.count(),
            reference_count: r.count(),
            p_value_adjusted: -1.0,
            ..Default::default()
        };
        if c.count() >= MIN_SAMPLES
            && let Ok(d) = sketch::feature_drift(r, c)
        {
            f.test = d.verdict.test.name().to_string();
            f.score = d.verdict.score;
            f.threshold = d.verdict.threshold;
            f.drifted = d.verdict.drifted;
            f.psi = d.psi;
            if let Some(p) = d.p_value {
                p_values.push((out.features.len(), p));
            }
            verdicts.push(d.verdict);
        }
        out.features.push(f);
    }
    let ps: Vec<f64> = p_values.iter().map(|&(_, p)| p).collect();
    let corrected = benjamini_hochberg(&ps, FDR);
    for ((idx, _), (adj, rejected)) in p_values
        .iter()
        .zip(corrected.p_adjusted.iter().zip(&corrected.reject))
    {
        out.features[*idx].p_value_adjusted = *adj;
        if *rejected {
            out.drifted_features_adjusted += 1;
        }
    }
    let ds = dataset_drift(&verdicts, DRIFT_SHARE);
    out.drifted_features = u32::try_from(ds.drifted_features).unwrap_or(u32::MAX);
    out.drift_share = ds.share;
    out.drifted = ds.drifted;
    if verdicts.is_empty() {
        out.reason = "no feature had enough non-missing live samples to judge".into();
    }
}
