//! Reference profiles: the [`ModelProfile`] of a model's training data, the baseline that
//! `DriftReport` compares live traffic with.
//!
//! - [`schema_for`] is the profile shape of a package: one numeric feature per element of each
//!   FP32 input, flattened in manifest order (`input[0]`, `input[1]`, ..., or `input` for a
//!   single-element input), and one output sketch per output (labels for integer/string
//!   outputs, scores for float ones): the shape a worker profiles live traffic with.
//! - [`profile_from_csv`] (a header of feature names, one row per item; empty cells and `nan`
//!   are missing values) and [`profile_from_npy`] (a 2-D little-endian `float32`/`float64`
//!   array in C order) build the reference profile of a data file.
//! - Both also fit the reference's Mahalanobis outlier model ([`outlier`]: streaming mean and
//!   covariance of the input features, then a regularised pseudo-inverse and a chi-square
//!   threshold), stored in the profile; workers score live rows against it.
//! - [`write_reference`] writes it beside the package as [`REFERENCE_PROFILE_FILE`]
//!   (`kiln.v1.ModelProfile`, prost-encoded); [`load`] reads a `.pb` back, or builds the profile
//!   from a raw `.csv`/`.npy` reference in a package directory.

pub mod outlier;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_model::Manifest;
use kiln_proto::kiln::v1 as pb;
use kiln_telemetry::profile::{
    CoMoments, ModelProfile, ProfileSchema, REFERENCE_K, SketchConfig, TensorSig,
};
use prost::Message;

use crate::error::{Error, Result};

/// File name of a package's reference profile.
pub const REFERENCE_PROFILE_FILE: &str = kiln_telemetry::profile::REFERENCE_PROFILE_FILE;

/// The profile shape of a package (see the module doc). The same layout as the worker's
/// profiler (`services/worker/src/telemetry/profiler.rs`): FP32 inputs with static dims only
/// (up to [`kiln_telemetry::profile::MAX_FEATURES`] features),
/// a single-element input keeps its plain name, INT64/INT32/BYTES outputs are labels, FP32/FP64
/// outputs scores, other outputs are not profiled.
pub fn schema_for(manifest: &Manifest) -> Result<ProfileSchema> {
    fn sig(t: &kiln_model::TensorSpec) -> TensorSig<'_> {
        TensorSig {
            name: &t.name,
            datatype: &t.datatype,
            dims: &t.dims,
        }
    }
    let inputs: Vec<TensorSig<'_>> = manifest.inputs.iter().map(sig).collect();
    let outputs: Vec<TensorSig<'_>> = manifest.outputs.iter().map(sig).collect();
    Ok(kiln_telemetry::profile::layout(&inputs, &outputs, SketchConfig::default()).schema)
}

/// An empty reference profile of the package: the live layout with [`REFERENCE_K`] sketches
/// (exact up to 8192 rows), so the reference side adds (almost) no error to drift tests.
fn empty(manifest: &Manifest) -> Result<ModelProfile> {
    let mut schema = schema_for(manifest)?;
    schema.config.kll_k = REFERENCE_K;
    ModelProfile::new(&manifest.name, &manifest.version, &schema)
        .map_err(|e| Error::Internal(format!("profile: {e}")))
}

/// Fits the outlier model of the rows in `acc` and attaches it to `p` (none when it cannot be
/// fitted: fewer than 2 complete rows, or every feature constant).
fn attach_outlier(p: &mut ModelProfile, acc: &CoMoments) {
    p.set_outlier_model(outlier::fit(acc).map(Arc::new));
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("{} does not exist", path.display()))
        }
        _ => Error::Internal(format!("reading {}: {e}", path.display())),
    })
}

/// The reference profile of a CSV file (header of feature names, then one row per item).
pub fn profile_from_csv(manifest: &Manifest, path: &Path) -> Result<ModelProfile> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidArgument(format!("{} is not UTF-8", path.display())))?;
    let mut p = empty(manifest)?;
    let width = p.features().len();
    let bad = |line: usize, what: String| {
        Error::InvalidArgument(format!("{} line {line}: {what}", path.display()))
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| {
        bad(
            1,
            "empty file (a header of feature names is expected)".into(),
        )
    })?;
    let columns = header.split(',').count();
    if columns != width {
        return Err(bad(
            1,
            format!("header has {columns} columns, the package has {width} input features"),
        ));
    }
    let mut row = vec![0.0f64; width];
    let mut acc = CoMoments::new(width);
    for (i, line) in lines {
        let mut n = 0;
        for (slot, cell) in row.iter_mut().zip(line.split(',')) {
            let cell = cell.trim();
            *slot = if cell.is_empty() {
                f64::NAN
            } else {
                cell.parse::<f64>()
                    .map_err(|_| bad(i + 1, format!("{cell:?} is not a number")))?
            };
            n += 1;
        }
        if n != width || line.split(',').count() != width {
            return Err(bad(i + 1, format!("expected {width} values")));
        }
        p.observe_row(&row).map_err(|e| bad(i + 1, e.to_string()))?;
        acc.add(&row).map_err(|e| bad(i + 1, e.to_string()))?;
    }
    attach_outlier(&mut p, &acc);
    Ok(p)
}

/// A 2-D array read from an `.npy` file: `rows × cols` values, row-major, as `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyMatrix {
    /// Rows (items).
    pub rows: usize,
    /// Columns (features).
    pub cols: usize,
    /// `rows × cols` values, row-major.
    pub values: Vec<f32>,
}

/// Reads an NPY file: a 2-D `<f4`/`<f8` array in C order, one row per item (a 1-D array is one
/// feature). Anything else is INVALID_ARGUMENT with the reason.
pub fn read_npy(path: &Path) -> Result<NpyMatrix> {
    let bytes = read(path)?;
    let bad = |what: &str| Error::InvalidArgument(format!("{}: {what}", path.display()));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an NPY file"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
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
        return Err(bad(
            "only little-endian float32 (<f4) or float64 (<f8) arrays",
        ));
    };
    if header.contains("'fortran_order': True") {
        return Err(bad(
            "Fortran-order arrays are not supported (save with C order)",
        ));
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .ok_or_else(|| bad("no shape in the header"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let (rows, cols) = match shape[..] {
        [r] => (r, 1),
        [r, c] => (r, c),
        _ => return Err(bad("expected a 1-D or 2-D array")),
    };
    if cols == 0 || rows.checked_mul(cols).and_then(|n| n.checked_mul(width)) != Some(data.len()) {
        return Err(bad("data size does not match the shape"));
    }
    let values: Vec<f32> = if width == 4 {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Ok(NpyMatrix { rows, cols, values })
}

/// The reference profile of an NPY file (see [`read_npy`]).
pub fn profile_from_npy(manifest: &Manifest, path: &Path) -> Result<ModelProfile> {
    let NpyMatrix { rows, cols, values } = read_npy(path)?;
    let bad = |what: &str| Error::InvalidArgument(format!("{}: {what}", path.display()));
    let mut p = empty(manifest)?;
    p.observe_batch(rows, cols, &values)
        .map_err(|e| bad(&e.to_string()))?;
    let mut acc = CoMoments::new(cols);
    acc.add_batch(rows, &values)
        .map_err(|e| bad(&e.to_string()))?;
    attach_outlier(&mut p, &acc);
    Ok(p)
}

/// The reference profile of `input` (`.npy`, else CSV) for the package in `dir`.
pub fn build(dir: &Path, input: &Path) -> Result<ModelProfile> {
    let manifest = Manifest::read(dir)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.display())))?;
    if input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        profile_from_npy(&manifest, input)
    } else {
        profile_from_csv(&manifest, input)
    }
}

/// Writes `profile` as `dir/`[`REFERENCE_PROFILE_FILE`]; returns the path.
pub fn write_reference(dir: &Path, profile: &ModelProfile) -> Result<PathBuf> {
    let path = dir.join(REFERENCE_PROFILE_FILE);
    let bytes = pb::ModelProfile::from(profile).encode_to_vec();
    std::fs::write(&path, bytes)
        .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// Reads a reference profile: a prost-encoded `kiln.v1.ModelProfile`, or a raw `.csv`/`.npy`
/// reference of the package directory it lies in (profiled on the fly). Blocking.
pub fn load(path: &Path) -> Result<ModelProfile> {
    let raw = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("npy"));
    if raw {
        let dir = path.parent().unwrap_or(Path::new("."));
        return build(dir, path);
    }
    let bytes = read(path)?;
    let msg = pb::ModelProfile::decode(&bytes[..]).map_err(|e| {
        Error::InvalidArgument(format!("{} is not a ModelProfile: {e}", path.display()))
    })?;
    ModelProfile::try_from(&msg)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}
