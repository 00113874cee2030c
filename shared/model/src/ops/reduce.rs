//! Reductions (ReduceMean/Sum/Max/Min) and generators (Range, ConstantOfShape).

use burn::tensor::Device;

use super::layout::axes as norm_axes;
use crate::onnx::TensorProto;
use crate::value::{Float, Host, Int, Value, check_elements, map_ranked};

/// Reduction operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// `ReduceMean`
    Mean,
    /// `ReduceSum`
    Sum,
    /// `ReduceMax`
    Max,
    /// `ReduceMin`
    Min,
}

/// Runs a reduction. `axes` `None` (or empty without `noop_with_empty_axes`) reduces every axis.
pub fn reduce(
    op: Reduce,
    v: &Value,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<Value, String> {
    let shape = v.shape().to_vec();
    let rank = shape.len();
    let axes = match axes {
        Some(a) if !a.is_empty() => norm_axes(a, rank)?,
        _ if noop_with_empty_axes => return Ok(v.clone()),
        _ => (0..rank).collect(),
    };
    let mut kept = shape.clone();
    for &a in &axes {
        if shape[a] == 0 {
            return Err(format!("{op:?} over an empty axis {a} of {shape:?}"));
        }
        kept[a] = 1;
    }
    let out_shape: Vec<usize> = if keepdims {
        kept.clone()
    } else {
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| shape[i])
            .collect()
    };
    match v {
        Value::Float(f) => {
            if rank == 0 {
                return Ok(v.clone());
            }
            let mut t = f.t.clone();
            for &a in &axes {
                t = match op {
                    Reduce::Mean => map_ranked!(t, x => x.mean_dim(a)),
                    Reduce::Sum => map_ranked!(t, x => x.sum_dim(a)),
                    Reduce::Max => map_ranked!(t, x => x.max_dim(a)),
                    Reduce::Min => map_ranked!(t, x => x.min_dim(a)),
                };
            }
            Ok(Value::Float(Float { t, shape: kept }.reshape(out_shape)?))
        }
        Value::Int(i) => {
            if op == Reduce::Mean {
                return Err("ReduceMean on integers is not supported".into());
            }
            let n: usize = kept.iter().product();
            let mut acc: Vec<Option<i64>> = vec![None; n];
            let (st, kst) = (strides(&shape), strides(&kept));
            for (k, &x) in i.data.iter().enumerate() {
                let mut o = 0;
                for d in 0..rank {
                    let c = (k / st[d]) % shape[d];
                    if !axes.contains(&d) {
                        o += c * kst[d];
                    }
                }
                acc[o] = Some(match (acc[o], op) {
                    (None, _) => x,
                    (Some(a), Reduce::Sum) => a.wrapping_add(x),
                    (Some(a), Reduce::Max) => a.max(x),
                    (Some(a), _) => a.min(x),
                });
            }
            Ok(Value::Int(Host {
                shape: out_shape,
                data: acc.into_iter().map(|x| x.unwrap_or(0)).collect(),
            }))
        }
        Value::Bool(_) | Value::Str(_) => Err(format!("{op:?} on {} data", v.kind())),
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `Range(start, limit, delta)` over scalars of one kind.
pub fn range(
    start: &Value,
    limit: &Value,
    delta: &Value,
    device: &Device,
) -> Result<Value, String> {
    let one = |v: &Value| -> Result<(), String> {
        if v.shape().iter().product::<usize>() != 1 {
            return Err(format!(
                "Range operands must be scalars, got {:?}",
                v.shape()
            ));
        }
        Ok(())
    };
    one(start)?;
    one(limit)?;
    one(delta)?;
    match (start, limit, delta) {
        (Value::Int(s), Value::Int(l), Value::Int(d)) => {
            let (s, l, d) = (s.data[0], l.data[0], d.data[0]);
            if d == 0 {
                return Err("Range delta must not be 0".into());
            }
            let span = l
                .checked_sub(s)
                .ok_or_else(|| format!("Range from {s} to {l} overflows"))?;
            let n = (span as f64 / d as f64).ceil().max(0.0) as usize;
            check_elements("Range", &[n])?;
            Ok(Value::Int(Int::vector(
                (0..n as i64).map(|k| s + k * d).collect(),
            )))
        }
        (Value::Float(s), Value::Float(l), Value::Float(d)) => {
            let (s, l, d) = (s.to_host()?[0], l.to_host()?[0], d.to_host()?[0]);
            if d == 0.0 {
                return Err("Range delta must not be 0".into());
            }
            let n = ((l - s) / d).ceil().max(0.0);
            if !n.is_finite() {
                return Err(format!("Range from {s} to {l} by {d} has no end"));
            }
            let n = check_elements("Range", &[n as usize])?;
            let data: Vec<f32> = (0..n).map(|k| s + k as f32 * d).collect();
            Ok(Value::Float(Float::from_host(data, vec![n], device)?))
        }
        _ => Err("Range operands must be all float or all int".into()),
    }
}

/// Checks a `ConstantOfShape` value attribute at load: one element of FLOAT, INT32/64 or BOOL.
pub fn check_fill(t: &TensorProto) -> Result<(), String> {
    match t.data_type() {
        1 | 6 | 7 | 9 => {
            let n: i64 = t.dims.iter().product();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("ConstantOfShape value with {n} elements"))
            }
        }
        other => Err(format!("ConstantOfShape value of data type {other}")),
    }
}

/// `ConstantOfShape`: `shape` filled with `fill` (float 0 when absent).
pub fn constant_of_shape(
    shape: &Int,
    fill: Option<&TensorProto>,
    device: &Device,
) -> Result<Value, String> {
    let dims: Vec<usize> = shape
        .data
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("ConstantOfShape: negative dim {d}")))
        .collect::<Result<_, _>>()?;
    let n = check_elements("ConstantOfShape", &dims)?;
    let fill = match fill {
        Some(t) => crate::graph::decode_tensor(t, device).map_err(|e| e.to_string())?,
        None => Value::Float(Float::from_host(vec![0.0], vec![], device)?),
    };
    Ok(match fill {
        Value::Float(f) => Value::Float(Float::from_host(vec![f.to_host()?[0]; n], dims, device)?),
        Value::Int(i) => Value::Int(Host {
            shape: dims,
            data: vec![i.data[0]; n],
        }),
        Value::Bool(b) => Value::Bool(Host {
            shape: dims,
            data: vec![b.data[0]; n],
        }),
        Value::Str(_) => return Err("ConstantOfShape with a string value".into()),
    })
}
