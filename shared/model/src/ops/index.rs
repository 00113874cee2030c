//! Slice and Expand.
//!
//! Slice resolves ONNX's clamping rules on the host into one explicit index list per axis, then
//! picks those indices with `select` on the device (floats) or on the host (ints), so negative
//! steps and empty results need no special cases in burn.

use burn::tensor::{Device, Int as IntKind, Tensor, TensorData};

use super::elementwise::dims_array;
use crate::value::{Float, Host, Value, broadcast_shape, map_ranked};

/// Opset-1 `Slice` attributes.
#[derive(Debug, Clone)]
pub struct SliceAttrs {
    /// `starts`
    pub starts: Vec<i64>,
    /// `ends`
    pub ends: Vec<i64>,
    /// `axes`
    pub axes: Option<Vec<i64>>,
}

/// The indices ONNX `Slice` takes along one axis of size `dim`.
pub fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Result<Vec<usize>, String> {
    if step == 0 {
        return Err("Slice step must not be 0".into());
    }
    let d = dim as i64;
    let norm = |x: i64| if x < 0 { x + d } else { x };
    let (s, e) = (norm(start), norm(end));
    let mut out = Vec::new();
    if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    Ok(out)
}

/// Picks `idx` along `axis` of a value (host ints, device floats).
pub fn pick(v: &Value, ax: usize, idx: &[usize], device: &Device) -> Result<Value, String> {
    let shape = v.shape().to_vec();
    let mut out_shape = shape.clone();
    out_shape[ax] = idx.len();
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    Ok(match v {
        Value::Int(i) => Value::Int(pick_host(i, (outer, inner), ax, idx, out_shape)),
        Value::Bool(b) => Value::Bool(pick_host(b, (outer, inner), ax, idx, out_shape)),
        Value::Str(s) => Value::Str(pick_host(s, (outer, inner), ax, idx, out_shape)),
        Value::Float(f) => {
            if out_shape.contains(&0) {
                return Ok(Value::Float(Float::from_host(vec![], out_shape, device)?));
            }
            let n = idx.len();
            let data: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
            let sel = Tensor::<1, IntKind>::from_data(TensorData::new(data, [n]), device);
            let t = map_ranked!(f.t.clone(), x => x.select(ax, sel.clone()));
            Value::Float(Float {
                t,
                shape: out_shape,
            })
        }
    })
}

fn pick_host<T: Clone>(
    h: &Host<T>,
    (outer, inner): (usize, usize),
    ax: usize,
    idx: &[usize],
    out_shape: Vec<usize>,
) -> Host<T> {
    let mut data = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for &j in idx {
            let start = (o * h.shape[ax] + j) * inner;
            data.extend_from_slice(&h.data[start..start + inner]);
        }
    }
    Host {
        shape: out_shape,
        data,
    }
}

/// ONNX `Slice` (opset 10+ inputs, or opset-1 attributes passed the same way).
pub fn slice(
    v: &Value,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
    device: &Device,
) -> Result<Value, String> {
    let rank = v.shape().len();
    if rank == 0 {
        return Err("Slice needs rank >= 1".into());
    }
    if starts.len() != ends.len() {
        return Err(format!(
            "Slice starts {starts:?} and ends {ends:?} differ in length"
        ));
    }
    let axes: Vec<usize> = match axes {
        Some(a) if a.len() == starts.len() => super::layout::axes(a, rank)?,
        Some(a) => return Err(format!("Slice axes {a:?} do not match starts {starts:?}")),
        None => (0..starts.len()).collect(),
    };
    if let Some(s) = steps.filter(|s| s.len() != starts.len()) {
        return Err(format!("Slice steps {s:?} do not match starts {starts:?}"));
    }
    let mut out = v.clone();
    for (k, &ax) in axes.iter().enumerate() {
        let dim = out.shape()[ax];
        let step = steps.map_or(1, |s| s[k]);
        let idx = slice_indices(dim, starts[k], ends[k], step)?;
        if step == 1 && idx.len() == dim {
            continue;
        }
        out = pick(&out, ax, &idx, device)?;
    }
    Ok(out)
}

/// Broadcasts a host tensor to `shape` (which its shape broadcasts to).
pub fn broadcast_host<T: Clone>(h: &Host<T>, shape: Vec<usize>) -> Host<T> {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|k| h.data[super::math::broadcast_index(&shape, &h.shape, k)].clone())
        .collect();
    Host { shape, data }
}

/// ONNX `Expand`: bidirectional broadcast of `v` against `target`.
pub fn expand(v: &Value, target: &[i64], device: &Device) -> Result<Value, String> {
    let target: Vec<usize> = target
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("Expand: negative dim {d}")))
        .collect::<Result<_, _>>()?;
    let shape = broadcast_shape(v.shape(), &target)?;
    Ok(match v {
        Value::Int(i) => Value::Int(broadcast_host(i, shape)),
        Value::Bool(b) => Value::Bool(broadcast_host(b, shape)),
        Value::Str(s) => Value::Str(broadcast_host(s, shape)),
        Value::Float(f) => {
            let rank = shape.len().max(1);
            if shape.contains(&0) {
                return Ok(Value::Float(Float::from_host(vec![], shape, device)?));
            }
            let dims = if shape.is_empty() {
                vec![1]
            } else {
                shape.clone()
            };
            let t = map_ranked!(f.at_rank(rank)?, x => x.expand(dims_array(&dims)));
            Value::Float(Float { t, shape })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_indices_follow_onnx_clamping() {
        assert_eq!(slice_indices(5, 1, 3, 1).unwrap(), vec![1, 2]);
        assert_eq!(slice_indices(5, -2, i64::MAX, 1).unwrap(), vec![3, 4]);
        assert_eq!(
            slice_indices(5, -1, i64::MIN, -1).unwrap(),
            vec![4, 3, 2, 1, 0]
        );
        assert_eq!(slice_indices(5, 10, 0, -2).unwrap(), vec![4, 2]);
        assert_eq!(slice_indices(5, 3, 1, 1).unwrap(), Vec::<usize>::new());
        assert!(slice_indices(5, 0, 1, 0).is_err());
    }
}
