//! Normalization and splitting: LayerNormalization, BatchNormalization (inference),
//! GlobalAveragePool, Split.

use burn::tensor::{Device, Tensor, module};

use super::math::{Binary, binary};
use crate::value::{Float, Ranked, Value, axis, map_ranked};

/// A float viewed as a burn rank-2 tensor `[rows, cols]`.
fn as_2d(f: &Float, rows: usize, cols: usize) -> Result<Tensor<2>, String> {
    match f.reshape(vec![rows, cols])?.t {
        Ranked::R2(t) => Ok(t),
        _ => unreachable!("reshaped to rank 2"),
    }
}

/// `LayerNormalization` over dims `axis..`: `(x - mean) / sqrt(var + eps) * scale + bias`.
pub fn layer_norm(
    x: &Float,
    scale: &Float,
    bias: Option<&Float>,
    ax: i64,
    eps: f32,
) -> Result<Float, String> {
    let rank = x.shape.len();
    let a = axis(ax, rank)?;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a..].iter().product();
    let param = |p: &Float, what: &str| -> Result<Tensor<1>, String> {
        if p.len() != inner {
            return Err(format!(
                "LayerNormalization {what} {:?} does not match normalized dims {:?}",
                p.shape,
                &x.shape[a..]
            ));
        }
        Ok(p.flat())
    };
    let gamma = param(scale, "scale")?;
    let beta = bias.map(|b| param(b, "bias")).transpose()?;
    let y = module::layer_norm(as_2d(x, outer, inner)?, gamma, beta, f64::from(eps));
    Float::from_ranked(Ranked::R2(y)).reshape(x.shape.clone())
}

/// `BatchNormalization` in inference mode, folded on the host into `x * a + b` per channel.
pub fn batch_norm(
    x: &Float,
    [scale, bias, mean, var]: [&Float; 4],
    eps: f32,
    device: &Device,
) -> Result<Float, String> {
    if x.shape.len() < 2 {
        return Err(format!(
            "BatchNormalization input must be [N, C, ...], got {:?}",
            x.shape
        ));
    }
    let c = x.shape[1];
    let read = |p: &Float, what: &str| -> Result<Vec<f32>, String> {
        if p.len() != c {
            return Err(format!(
                "BatchNormalization {what} {:?} for {c} channels",
                p.shape
            ));
        }
        p.to_host()
    };
    let (s, b, m, v) = (
        read(scale, "scale")?,
        read(bias, "B")?,
        read(mean, "mean")?,
        read(var, "var")?,
    );
    let a: Vec<f32> = (0..c).map(|i| s[i] / (v[i] + eps).sqrt()).collect();
    let off: Vec<f32> = (0..c).map(|i| b[i] - m[i] * a[i]).collect();
    let mut pshape = vec![c];
    pshape.resize(x.shape.len() - 1, 1);
    let a = Value::Float(Float::from_host(a, pshape.clone(), device)?);
    let off = Value::Float(Float::from_host(off, pshape, device)?);
    let y = binary(Binary::Mul, &Value::Float(x.clone()), &a)?;
    match binary(Binary::Add, &y, &off)? {
        Value::Float(f) => Ok(f),
        _ => unreachable!("float in, float out"),
    }
}

/// `GlobalAveragePool`: the mean over every dim after `[N, C]`, kept as size 1.
pub fn global_average_pool(x: &Float) -> Result<Float, String> {
    let rank = x.shape.len();
    if rank < 3 {
        return Err(format!(
            "GlobalAveragePool input must be [N, C, ...], got {:?}",
            x.shape
        ));
    }
    let mut t = x.t.clone();
    for d in 2..rank {
        t = map_ranked!(t, y => y.mean_dim(d));
    }
    Ok(Float::from_ranked(t))
}

/// The sizes `Split` cuts `dim` into: explicit, or `n` near-equal parts (the last smaller).
pub fn split_sizes(dim: usize, split: Option<&[i64]>, n: usize) -> Result<Vec<usize>, String> {
    match split {
        Some(s) => {
            let sizes: Vec<usize> = s
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| format!("Split: negative size {x}")))
                .collect::<Result<_, _>>()?;
            if sizes.iter().sum::<usize>() != dim || sizes.len() != n {
                return Err(format!("Split sizes {s:?} for dim {dim} into {n} outputs"));
            }
            Ok(sizes)
        }
        None => {
            if n == 0 {
                return Err("Split with no outputs".into());
            }
            let chunk = dim.div_ceil(n);
            Ok((0..n)
                .map(|k| chunk.min(dim.saturating_sub(k * chunk)))
                .collect())
        }
    }
}

/// `Split` along `axis` into parts of `sizes`.
pub fn split(v: &Value, ax: i64, sizes: &[usize], device: &Device) -> Result<Vec<Value>, String> {
    let a = axis(ax, v.shape().len())?;
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let idx: Vec<usize> = (start..start + n).collect();
            start += n;
            super::index::pick(v, a, &idx, device)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_match_onnx() {
        assert_eq!(split_sizes(6, None, 4).unwrap(), vec![2, 2, 2, 0]);
        assert_eq!(split_sizes(7, None, 3).unwrap(), vec![3, 3, 1]);
        assert_eq!(split_sizes(6, Some(&[1, 5]), 2).unwrap(), vec![1, 5]);
        assert!(split_sizes(6, Some(&[1, 4]), 2).is_err());
    }
}
