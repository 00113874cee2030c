//! Layout and indexing ops: Transpose, Squeeze, Unsqueeze, Concat, Gather, Shape.
//!
//! Float data stays on the device (burn permute / cat / select); int data is host-side, like all
//! [`Int`] values.

use burn::tensor::{Device, Tensor};

use super::elementwise::dims_array;
use crate::value::{Float, Host, Int, Ranked, Value, axis, map_ranked};

/// Row-major strides of a shape.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Normalizes a list of axes against `rank`, rejecting duplicates.
pub fn axes(list: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let a = axis(a, rank)?;
        if out.contains(&a) {
            return Err(format!("axis {a} repeated in {list:?}"));
        }
        out.push(a);
    }
    Ok(out)
}

/// `Transpose`: `perm` (default: reversed dims).
pub fn transpose(v: &Value, perm: Option<&[i64]>) -> Result<Value, String> {
    let shape = v.shape().to_vec();
    let rank = shape.len();
    let perm = match perm {
        Some(p) if p.len() == rank => axes(p, rank)?,
        Some(p) => return Err(format!("Transpose perm {p:?} for rank {rank}")),
        None => (0..rank).rev().collect(),
    };
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    Ok(match v {
        Value::Float(f) => {
            if rank <= 1 {
                return Ok(v.clone());
            }
            let t = map_ranked!(f.t.clone(), x => x.permute(dims_array(&perm)));
            Value::Float(Float {
                t,
                shape: out_shape,
            })
        }
        Value::Int(i) => Value::Int(transpose_host(i, &perm, out_shape)),
        Value::Bool(b) => Value::Bool(transpose_host(b, &perm, out_shape)),
        Value::Str(s) => Value::Str(transpose_host(s, &perm, out_shape)),
    })
}

fn transpose_host<T: Clone>(h: &Host<T>, perm: &[usize], out_shape: Vec<usize>) -> Host<T> {
    let st = strides(&h.shape);
    let ost = strides(&out_shape);
    let data = (0..h.data.len())
        .map(|o| {
            let mut src = 0;
            for (d, &p) in perm.iter().enumerate() {
                src += (o / ost[d]) % out_shape[d] * st[p];
            }
            h.data[src].clone()
        })
        .collect();
    Host {
        shape: out_shape,
        data,
    }
}

/// `Squeeze`: drops the listed size-1 axes, or every size-1 axis when `axes` is `None`.
pub fn squeeze_shape(shape: &[usize], list: Option<&[i64]>) -> Result<Vec<usize>, String> {
    match list {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(list) => {
            let ax = axes(list, shape.len())?;
            if let Some(&a) = ax.iter().find(|&&a| shape[a] != 1) {
                return Err(format!(
                    "Squeeze axis {a} has size {} in {shape:?}",
                    shape[a]
                ));
            }
            Ok(shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !ax.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
    }
}

/// `Unsqueeze`: inserts size-1 axes at the listed positions of the output.
pub fn unsqueeze_shape(shape: &[usize], list: &[i64]) -> Result<Vec<usize>, String> {
    let rank = shape.len() + list.len();
    let ax = axes(list, rank)?;
    let mut rest = shape.iter();
    Ok((0..rank)
        .map(|i| {
            if ax.contains(&i) {
                1
            } else {
                *rest.next().expect("counts match")
            }
        })
        .collect())
}

/// Concatenates float tensors of one rank along `axis` (normalized).
fn cat_floats(parts: &[&Float], axis: usize, shape: Vec<usize>) -> Result<Float, String> {
    macro_rules! cat_at {
        ($var:ident) => {
            Ranked::$var(Tensor::cat(
                parts
                    .iter()
                    .map(|p| match &p.t {
                        Ranked::$var(t) => t.clone(),
                        _ => unreachable!("ranks checked"),
                    })
                    .collect(),
                axis,
            ))
        };
    }
    let t = match &parts[0].t {
        Ranked::R1(_) => cat_at!(R1),
        Ranked::R2(_) => cat_at!(R2),
        Ranked::R3(_) => cat_at!(R3),
        Ranked::R4(_) => cat_at!(R4),
        Ranked::R5(_) => cat_at!(R5),
        Ranked::R6(_) => cat_at!(R6),
    };
    Ok(Float { t, shape })
}

/// `Concat` along `axis` of values of one kind and rank.
pub fn concat(values: &[&Value], ax: i64) -> Result<Value, String> {
    let first = values.first().ok_or("Concat needs at least one input")?;
    let rank = first.shape().len();
    if rank == 0 {
        return Err("Concat inputs must have rank >= 1".into());
    }
    let a = axis(ax, rank)?;
    let mut shape = first.shape().to_vec();
    shape[a] = 0;
    for v in values {
        let s = v.shape();
        let same = s.len() == rank && (0..rank).all(|i| i == a || s[i] == first.shape()[i]);
        if !same || v.kind() != first.kind() {
            return Err(format!(
                "Concat inputs {:?} ({}) and {s:?} ({}) differ off axis {a}",
                first.shape(),
                first.kind(),
                v.kind()
            ));
        }
        shape[a] += s[a];
    }
    Ok(match first {
        Value::Float(_) => {
            let parts: Vec<&Float> = values
                .iter()
                .map(|v| v.float())
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|f| f.len() > 0)
                .collect();
            if parts.is_empty() {
                return Ok(Value::Float(first.float()?.clone()));
            }
            Value::Float(cat_floats(&parts, a, shape)?)
        }
        Value::Int(_) => {
            let parts = values
                .iter()
                .map(|v| v.int())
                .collect::<Result<Vec<_>, _>>()?;
            Value::Int(concat_host(&parts, a, shape))
        }
        Value::Bool(_) => {
            let parts = values
                .iter()
                .map(|v| v.bool())
                .collect::<Result<Vec<_>, _>>()?;
            Value::Bool(concat_host(&parts, a, shape))
        }
        Value::Str(_) => {
            let parts = values
                .iter()
                .map(|v| v.str())
                .collect::<Result<Vec<_>, _>>()?;
            Value::Str(concat_host(&parts, a, shape))
        }
    })
}

fn concat_host<T: Clone>(parts: &[&Host<T>], a: usize, shape: Vec<usize>) -> Host<T> {
    let outer: usize = shape[..a].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for p in parts {
            let block: usize = p.shape[a..].iter().product();
            data.extend_from_slice(&p.data[o * block..(o + 1) * block]);
        }
    }
    Host { shape, data }
}

/// `Gather` along `axis`: out shape `data[..axis] + indices.shape + data[axis+1..]`. Negative
/// indices count from the end.
pub fn gather(data: &Value, indices: &Int, ax: i64, device: &Device) -> Result<Value, String> {
    let shape = data.shape().to_vec();
    if shape.is_empty() {
        return Err("Gather data must have rank >= 1".into());
    }
    let a = axis(ax, shape.len())?;
    let dim = shape[a] as i64;
    let idx: Vec<i64> = indices
        .data
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&j) {
                Ok(j)
            } else {
                Err(format!("Gather index {i} out of range for axis size {dim}"))
            }
        })
        .collect::<Result<_, _>>()?;
    let idx: Vec<usize> = idx.into_iter().map(|i| i as usize).collect();
    let picked = super::index::pick(data, a, &idx, device)?;
    let mut out_shape = shape[..a].to_vec();
    out_shape.extend_from_slice(&indices.shape);
    out_shape.extend_from_slice(&shape[a + 1..]);
    super::shape::reshape(&picked, out_shape)
}

/// `Shape` with the opset-15 `start`/`end` window (clamped, negatives from the end).
pub fn shape_of(v: &Value, start: i64, end: Option<i64>) -> Int {
    let s = v.shape();
    let r = s.len() as i64;
    let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
    let (lo, hi) = (clamp(start), clamp(end.unwrap_or(r)));
    Int::vector(s[lo..hi.max(lo)].iter().map(|&d| d as i64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeeze_and_unsqueeze_shapes() {
        assert_eq!(squeeze_shape(&[1, 3, 1, 4], None).unwrap(), vec![3, 4]);
        assert_eq!(
            squeeze_shape(&[1, 3, 1, 4], Some(&[-2])).unwrap(),
            vec![1, 3, 4]
        );
        assert!(squeeze_shape(&[1, 3], Some(&[1])).is_err());
        assert_eq!(
            unsqueeze_shape(&[3, 4], &[0, -1]).unwrap(),
            vec![1, 3, 4, 1]
        );
        assert_eq!(unsqueeze_shape(&[], &[0]).unwrap(), vec![1]);
        assert!(unsqueeze_shape(&[3], &[0, 0]).is_err());
    }
}
