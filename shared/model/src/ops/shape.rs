//! Shape and type ops: Reshape, Flatten, Cast, ArgMax, ArrayFeatureExtractor.

use crate::value::{Bool, Float, Host, Int, Value, with_ranked};

/// ONNX `Reshape` target: 0 copies the input dim (unless `allowzero`), one -1 is inferred.
pub fn reshape_target(
    input: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            -1 => return Err("Reshape target has more than one -1".into()),
            0 if !allowzero => {
                out.push(*input.get(i).ok_or_else(|| {
                    format!("Reshape: 0 at {i} but input has rank {}", input.len())
                })?)
            }
            d if d >= 0 => out.push(d as usize),
            d => return Err(format!("Reshape: invalid dim {d}")),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(out)
}

/// Reshapes a value of either kind.
pub fn reshape(v: &Value, shape: Vec<usize>) -> Result<Value, String> {
    Ok(match v {
        Value::Float(f) => Value::Float(f.reshape(shape)?),
        Value::Int(i) => Value::Int(reshape_host(i, shape)?),
        Value::Bool(b) => Value::Bool(reshape_host(b, shape)?),
        Value::Str(s) => Value::Str(reshape_host(s, shape)?),
    })
}

fn reshape_host<T: Clone>(h: &Host<T>, shape: Vec<usize>) -> Result<Host<T>, String> {
    if shape.iter().product::<usize>() != h.data.len() {
        return Err(format!("cannot reshape {:?} to {shape:?}", h.shape));
    }
    Ok(Host {
        shape,
        data: h.data.clone(),
    })
}

/// ONNX `Flatten`: `[prod(d[..axis]), prod(d[axis..])]`.
pub fn flatten_shape(shape: &[usize], axis: i64) -> Result<Vec<usize>, String> {
    let r = shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("Flatten axis {axis} out of range for rank {r}"));
    }
    let (head, tail) = shape.split_at(a as usize);
    Ok(vec![head.iter().product(), tail.iter().product()])
}

/// Target of `Cast`, from TensorProto.DataType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastTo {
    /// FLOAT (1)
    Float,
    /// INT32 (6) or INT64 (7): host integers.
    Int,
    /// BOOL (9): host booleans.
    Bool,
}

impl CastTo {
    /// Parses the `to` attribute.
    pub fn from_onnx(to: i64) -> Option<Self> {
        match to {
            1 => Some(CastTo::Float),
            6 | 7 => Some(CastTo::Int),
            9 => Some(CastTo::Bool),
            _ => None,
        }
    }
}

/// Runs `Cast`. Float → int truncates toward zero, as onnxruntime does.
pub fn cast(v: &Value, to: CastTo, device: &burn::tensor::Device) -> Result<Value, String> {
    let bools = |data: Vec<bool>| {
        Value::Bool(Bool {
            shape: v.shape().to_vec(),
            data,
        })
    };
    Ok(match (v, to) {
        (Value::Float(_), CastTo::Float)
        | (Value::Int(_), CastTo::Int)
        | (Value::Bool(_), CastTo::Bool) => v.clone(),
        (Value::Str(_), _) => return Err("Cast from string is not supported".into()),
        (Value::Float(f), CastTo::Bool) => bools(f.to_host()?.iter().map(|x| *x != 0.0).collect()),
        (Value::Int(i), CastTo::Bool) => bools(i.data.iter().map(|x| *x != 0).collect()),
        (Value::Bool(b), CastTo::Int) => Value::Int(Int {
            shape: b.shape.clone(),
            data: b.data.iter().map(|&x| i64::from(x)).collect(),
        }),
        (Value::Bool(b), CastTo::Float) => Value::Float(Float::from_host(
            b.data.iter().map(|&x| f32::from(u8::from(x))).collect(),
            b.shape.clone(),
            device,
        )?),
        (Value::Float(f), CastTo::Int) => Value::Int(Int {
            shape: f.shape.clone(),
            data: f.to_host()?.into_iter().map(|x| x.trunc() as i64).collect(),
        }),
        (Value::Int(i), CastTo::Float) => Value::Float(Float::from_host(
            i.data.iter().map(|x| *x as f32).collect(),
            i.shape.clone(),
            device,
        )?),
    })
}

/// `ArgMax` over `axis` (normalized), first occurrence of the maximum.
pub fn argmax(f: &Float, axis: usize, keepdims: bool) -> Result<Int, String> {
    let data = with_ranked!(f.t.clone(), t => t.argmax(axis).into_data());
    let data = data
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| format!("cannot read ArgMax result: {e:?}"))?;
    let mut shape = f.shape.clone();
    if shape.is_empty() {
        shape.push(1);
    }
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(Int { shape, data })
}

/// `ai.onnx.ml.ArrayFeatureExtractor`: picks `indices` along the last axis of `x`. As in
/// onnxruntime, the output shape is `x.shape[..-1] + [n_indices]`, `[1, n]` for a 1-D `x`.
pub fn array_feature_extractor(
    x: &Value,
    indices: &Int,
    device: &burn::tensor::Device,
) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    let last = *shape
        .last()
        .ok_or("ArrayFeatureExtractor needs rank >= 1")?;
    let idx: Vec<usize> = indices
        .data
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < last)
                .ok_or_else(|| format!("index {i} out of range 0..{last}"))
        })
        .collect::<Result<_, _>>()?;
    let rows = shape[..shape.len() - 1].iter().product::<usize>();
    let mut out_shape = if shape.len() == 1 {
        vec![1]
    } else {
        shape[..shape.len() - 1].to_vec()
    };
    out_shape.push(idx.len());
    fn pick<T: Clone>(data: &[T], rows: usize, last: usize, idx: &[usize]) -> Vec<T> {
        (0..rows.max(1))
            .flat_map(|r| idx.iter().map(move |&i| data[r * last + i].clone()))
            .collect()
    }
    Ok(match x {
        Value::Int(i) => Value::Int(Int {
            data: pick(&i.data, rows, last, &idx),
            shape: out_shape,
        }),
        Value::Float(f) => {
            let data = pick(&f.to_host()?, rows, last, &idx);
            Value::Float(Float::from_host(data, out_shape, device)?)
        }
        Value::Str(s) => Value::Str(crate::value::Str {
            data: pick(&s.data, rows, last, &idx),
            shape: out_shape,
        }),
        Value::Bool(_) => return Err("ArrayFeatureExtractor on bool data".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_follow_onnx() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[6], &[-1], false).unwrap(), vec![6]);
        assert_eq!(reshape_target(&[2, 3], &[3, 2], false).unwrap(), vec![3, 2]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
    }

    #[test]
    fn flatten_shapes() {
        assert_eq!(flatten_shape(&[2, 3, 4], 1).unwrap(), vec![2, 12]);
        assert_eq!(flatten_shape(&[2, 3, 4], 0).unwrap(), vec![1, 24]);
        assert_eq!(flatten_shape(&[2, 3, 4], -1).unwrap(), vec![6, 4]);
    }

    #[test]
    fn array_feature_extractor_matches_onnxruntime_shapes() {
        let dev = burn::tensor::Device::flex();
        let classes = Value::Int(Int::vector(vec![10, 11, 12]));
        let idx = Int {
            shape: vec![2, 1],
            data: vec![2, 0],
        };
        let out = array_feature_extractor(&classes, &idx, &dev).unwrap();
        let out = out.int().unwrap();
        assert_eq!(out.shape, vec![1, 2]);
        assert_eq!(out.data, vec![12, 10]);
        let bad = Int::vector(vec![3]);
        assert!(array_feature_extractor(&classes, &bad, &dev).is_err());
    }
}
