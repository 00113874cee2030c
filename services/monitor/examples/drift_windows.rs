//! Replays scripted traffic windows through the monitor's drift judge.
//!
//! ```text
//! cargo run --release -p kiln-monitor --example drift_windows -- REFERENCE.npy WINDOW.npy...
//! cargo run --release -p kiln-monitor --example drift_windows -- REFERENCE.npy WINDOW_DIR
//! ```
//!
//! Every `.npy` is a 2-D little-endian `float32`/`float64` array in C order (rows × features; a
//! 1-D array is one feature); a directory stands for its `.npy` files in name order. The
//! reference and each window are profiled as a worker profiles traffic (one [`ModelProfile`]
//! with the default sketch configuration, `observe_row` per row) and each window is judged
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

use kiln_monitor::telemetry::report::{FDR, judge_profiles};
use kiln_telemetry::profile::{DEFAULT_K, ModelProfile, ProfileSchema, REFERENCE_K};
use serde_json::json;

/// A 2-D array read from an `.npy` file: `rows × cols` values, row-major.
struct Array {
    rows: usize,
    cols: usize,
    values: Vec<f64>,
}

fn read_npy(path: &Path) -> anyhow::Result<Array> {
    let bytes = std::fs::read(path)?;
    let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an NPY file"));
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported NPY version")),
    };
    let header = bytes
        .get(start..start + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let data = &bytes[start + len..];
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        return Err(bad("only <f4 or <f8 arrays"));
    };
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .ok_or_else(|| bad("no shape"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<anyhow::Result<_>>()?;
    let (rows, cols) = match shape[..] {
        [r] => (r, 1),
        [r, c] => (r, c),
        _ => return Err(bad("expected a 1-D or 2-D array")),
    };
    if cols == 0 || rows * cols * width != data.len() {
        return Err(bad("data size does not match the shape"));
    }
    let values = if width == 4 {
        data.chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    };
    Ok(Array { rows, cols, values })
}

/// The profile a worker would push for these rows (`kll_k`: the live default), or the
/// reference profile `kiln profile` would build (`REFERENCE_K`).
fn profile(a: &Array, kll_k: u16) -> anyhow::Result<ModelProfile> {
    let mut schema = ProfileSchema::numeric("x", a.cols);
    schema.config.kll_k = kll_k;
    let mut p = ModelProfile::new("replay", "1", &schema)?;
    for row in a.values.chunks_exact(a.cols).take(a.rows) {
        p.observe_row(row)?;
    }
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
