//! `Pad`: constant, reflect, edge and wrap modes, negative pads (cropping) included.
//!
//! Each padded axis is resolved on the host into an explicit source-index list and then picked
//! with [`index::pick`](super::index::pick) (`select` on the device for floats), so reflect, edge,
//! wrap and cropping share one path. Constant mode crops first, then concatenates fill blocks.

use burn::tensor::Device;

use super::{index, layout};
use crate::value::{Float, Host, Int, Value, check_elements};

/// The `mode` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Fill with the constant value.
    Constant,
    /// Mirror without repeating the edge element.
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Wrap around (opset 19).
    Wrap,
}

impl PadMode {
    /// Parses the `mode` attribute.
    pub fn parse(mode: Option<&str>) -> Result<Self, String> {
        match mode.unwrap_or("constant") {
            "constant" => Ok(Self::Constant),
            "reflect" => Ok(Self::Reflect),
            "edge" => Ok(Self::Edge),
            "wrap" => Ok(Self::Wrap),
            other => Err(format!("Pad with mode={other:?}")),
        }
    }
}

/// Source index of output position `j` along an axis of size `dim` padded by `before`.
fn source(mode: PadMode, j: i64, before: i64, dim: i64) -> i64 {
    let s = j - before;
    match mode {
        PadMode::Edge => s.clamp(0, dim - 1),
        PadMode::Wrap => s.rem_euclid(dim),
        PadMode::Reflect if dim == 1 => 0,
        PadMode::Reflect => {
            let period = 2 * (dim - 1);
            let r = s.rem_euclid(period);
            if r < dim { r } else { period - r }
        }
        PadMode::Constant => s,
    }
}

/// Runs `Pad` with per-axis `(begin, end)` pads (negative crops) and the constant `value`.
pub fn pad(
    x: &Value,
    pads: &[(i64, i64)],
    mode: PadMode,
    value: Option<&Value>,
    device: &Device,
) -> Result<Value, String> {
    let rank = x.shape().len();
    if pads.len() != rank {
        return Err(format!("Pad: {} pad pairs for rank {rank}", pads.len()));
    }
    let mut out = x.clone();
    for (ax, &(b, e)) in pads.iter().enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        let dim = out.shape()[ax] as i64;
        let len = dim
            .checked_add(b)
            .and_then(|n| n.checked_add(e))
            .ok_or_else(|| format!("Pad: pads ({b}, {e}) overflow"))?;
        if len < 0 {
            return Err(format!("Pad: pads ({b}, {e}) crop more than dim {dim}"));
        }
        let mut padded = out.shape().to_vec();
        padded[ax] = usize::try_from(len).map_err(|_| format!("Pad: length {len}"))?;
        check_elements("Pad", &padded)?;
        if mode == PadMode::Constant {
            // Crop the negative sides, then concatenate fill blocks on the positive ones.
            let (lo, hi) = ((-b).max(0), dim - (-e).max(0));
            if lo > 0 || hi < dim {
                let idx: Vec<usize> = (lo..hi.max(lo)).map(|i| i as usize).collect();
                out = index::pick(&out, ax, &idx, device)?;
            }
            let mut parts = Vec::new();
            if b > 0 {
                parts.push(fill(&out, ax, b as usize, value, device)?);
            }
            let tail = (e > 0)
                .then(|| fill(&out, ax, e as usize, value, device))
                .transpose()?;
            parts.push(out);
            parts.extend(tail);
            let refs: Vec<&Value> = parts.iter().collect();
            out = layout::concat(&refs, ax as i64)?;
        } else {
            if dim == 0 && len > 0 {
                return Err(format!("Pad: {mode:?} mode on an empty axis"));
            }
            let idx: Vec<usize> = (0..len).map(|j| source(mode, j, b, dim) as usize).collect();
            out = index::pick(&out, ax, &idx, device)?;
        }
    }
    Ok(out)
}

/// A block shaped like `like` but `n` wide along `ax`, filled with the pad value.
fn fill(
    like: &Value,
    ax: usize,
    n: usize,
    value: Option<&Value>,
    device: &Device,
) -> Result<Value, String> {
    let mut shape = like.shape().to_vec();
    shape[ax] = n;
    let count: usize = shape.iter().product();
    Ok(match like {
        Value::Float(_) => {
            let c = match value {
                Some(Value::Float(f)) => f.to_host()?.first().copied().unwrap_or(0.0),
                Some(Value::Int(i)) => i.data.first().copied().unwrap_or(0) as f32,
                Some(other) => return Err(format!("Pad value of kind {}", other.kind())),
                None => 0.0,
            };
            Value::Float(Float::from_host(vec![c; count], shape, device)?)
        }
        Value::Int(_) => {
            let c = match value {
                Some(Value::Int(i)) => i.data.first().copied().unwrap_or(0),
                Some(Value::Float(f)) => f.to_host()?.first().copied().unwrap_or(0.0) as i64,
                Some(other) => return Err(format!("Pad value of kind {}", other.kind())),
                None => 0,
            };
            Value::Int(Int {
                shape,
                data: vec![c; count],
            })
        }
        Value::Bool(_) => Value::Bool(Host {
            shape,
            data: vec![
                matches!(value, Some(Value::Bool(b)) if b.data.first() == Some(&true));
                count
            ],
        }),
        Value::Str(_) => return Err("Pad on string data".into()),
    })
}

/// Pairs ONNX's `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]` per axis, for the listed `axes`
/// (all axes when `None`).
pub fn pad_pairs(
    rank: usize,
    pads: &[i64],
    axes: Option<&[i64]>,
) -> Result<Vec<(i64, i64)>, String> {
    let axes: Vec<usize> = match axes {
        Some(a) => layout::axes(a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "Pad: {} pads for {} axes (need 2 per axis)",
            pads.len(),
            axes.len()
        ));
    }
    let mut out = vec![(0, 0); rank];
    let k = axes.len();
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[i + k]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_numpy_pad_modes() {
        let idx = |mode| (0..7).map(|j| source(mode, j, 2, 3)).collect::<Vec<_>>();
        assert_eq!(idx(PadMode::Reflect), vec![2, 1, 0, 1, 2, 1, 0]);
        assert_eq!(idx(PadMode::Edge), vec![0, 0, 0, 1, 2, 2, 2]);
        assert_eq!(idx(PadMode::Wrap), vec![1, 2, 0, 1, 2, 0, 1]);
    }

    #[test]
    fn pairs_cover_listed_axes() {
        assert_eq!(
            pad_pairs(3, &[1, 2, 3, 4], Some(&[-1, 0])).unwrap(),
            vec![(2, 4), (0, 0), (1, 3)]
        );
        assert!(pad_pairs(2, &[1, 2, 3], None).is_err());
    }
}
