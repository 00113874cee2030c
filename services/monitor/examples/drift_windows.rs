//! Replays scripted traffic windows through the monitor's drift judge.
//!
//! ```text
//! cargo run --release -p kiln-monitor --example drift_windows -- REFERENCE.npy WINDOW.npy...
//! cargo run --release -p kiln-monitor --example drift_windows -- REFERENCE.npy WINDOW_DIR
//! ```
//!
//! Every `.npy` is a 2-D little-endian `float32`/`float64` array in C order (rows × features; a
//! 1-D array is one feature); a directory stands for its `.npy` files in name order. Each
//! window is profiled as a worker profiles traffic (one [`ModelProfile`] with the default
//! sketch configuration, KLL k = [`DEFAULT_K`]: exact up to 1024 rows), the reference as
//! `kiln profile` does (k = [`REFERENCE_K`]: exact up to 8192 rows), and each window is judged
//! against the reference by [`judge_profiles`], the code path of `DriftReport`. One JSON line
//! per window goes to stdout:
//!
//! ```text
//! {"window": 0, "file": "...", "rows": 500, "drifted": false, "drifted_features": 1,
//!  "drifted_features_adjusted": 0, "reason": "",
//!  "features": [{"index": 0, "test": "ks", "score": 0.31, "p_adjusted": 0.9,
//!                "drifted": false, "flagged": false}, ...]}
//! ```
//!
//! `drifted` per feature is Evidently's uncorrected verdict; `flagged` is Kiln's corrected
//! one: the Benjamini–Hochberg rejection for p-value tests (`p_adjusted` ≤ the report's FDR),
//! the verdict itself for distance tests (no p-value to correct).

use std::path::{Path, PathBuf};

use kiln_monitor::reference::{NpyMatrix, read_npy};
use kiln_monitor::telemetry::report::{FDR, judge_profiles};
use kiln_telemetry::profile::{DEFAULT_K, ModelProfile, ProfileSchema, REFERENCE_K};
use serde_json::json;

/// The profile a worker would push for these rows (`kll_k`: the live default), or the
/// reference profile `kiln profile` would build (`REFERENCE_K`).
fn profile(a: &NpyMatrix, kll_k: u16) -> anyhow::Result<ModelProfile> {
    let mut schema = ProfileSchema::numeric("x", a.cols);
    schema.config.kll_k = kll_k;
    let mut p = ModelProfile::new("replay", "1", &schema)?;
    p.observe_batch(a.rows, a.cols, &a.values)?;
    Ok(p)
}

fn windows(args: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        let path = PathBuf::from(a);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.retain(|f| f.extension().is_some_and(|e| e == "npy"));
            files.sort();
            out.extend(files);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((reference, rest)) = args.split_first() else {
        anyhow::bail!("usage: drift_windows REFERENCE.npy (WINDOW.npy | WINDOW_DIR)...");
    };
    let reference = profile(&read_npy(Path::new(reference))?, REFERENCE_K)?;
    for (i, path) in windows(rest)?.iter().enumerate() {
        let live = profile(&read_npy(path)?, DEFAULT_K)?;
        let r = judge_profiles(&reference, &live);
        let features: Vec<_> = r
            .features
            .iter()
            .map(|f| {
                let has_p = f.p_value_adjusted >= 0.0;
                json!({
                    "index": f.index,
                    "test": f.test,
                    "score": f.score,
                    "p_adjusted": has_p.then_some(f.p_value_adjusted),
                    "drifted": f.drifted,
                    "flagged": if has_p { f.p_value_adjusted <= FDR } else { f.drifted },
                })
            })
            .collect();
        let line = json!({
            "window": i,
            "file": path.display().to_string(),
            "rows": live.row_count,
            "drifted": r.drifted,
            "drifted_features": r.drifted_features,
            "drifted_features_adjusted": r.drifted_features_adjusted,
            "reason": r.reason,
            "features": features,
        });
        println!("{line}");
    }
    Ok(())
}
