//! Arithmetic and activations: element-wise ops with numpy broadcasting, MatMul, Gemm.

use burn::tensor::activation;

use crate::value::{Float, Int, Value, broadcast_shape, map_ranked, zip_ranked};

/// Element-wise binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `Add`
    Add,
    /// `Sub`
    Sub,
    /// `Mul`
    Mul,
    /// `Div`
    Div,
}

/// Element-wise unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `Relu`
    Relu,
    /// `Sigmoid`
    Sigmoid,
    /// `Tanh`
    Tanh,
}

/// Runs a binary op on two values of one kind, broadcasting numpy-style.
pub fn binary(op: Binary, a: &Value, b: &Value) -> Result<Value, String> {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => binary_float(op, x, y).map(Value::Float),
        (Value::Int(x), Value::Int(y)) => binary_int(op, x, y).map(Value::Int),
        _ => Err(format!(
            "{op:?} needs operands of one type, got {} and {}",
            a.kind(),
            b.kind()
        )),
    }
}

fn binary_float(op: Binary, a: &Float, b: &Float) -> Result<Float, String> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let rank = shape.len().max(1);
    let (x, y) = (a.at_rank(rank)?, b.at_rank(rank)?);
    let t = match op {
        Binary::Add => zip_ranked!(x, y, p, q => p.add(q)),
        Binary::Sub => zip_ranked!(x, y, p, q => p.sub(q)),
        Binary::Mul => zip_ranked!(x, y, p, q => p.mul(q)),
        Binary::Div => zip_ranked!(x, y, p, q => p.div(q)),
    };
    Ok(Float { t, shape })
}

/// Index of `out_index` (in the broadcast shape `out`) inside an operand of shape `s`.
pub(crate) fn broadcast_index(out: &[usize], s: &[usize], mut out_index: usize) -> usize {
    let off = out.len() - s.len();
    let (mut idx, mut stride) = (0, 1);
    for i in (0..out.len()).rev() {
        let coord = out_index % out[i];
        out_index /= out[i];
        if i >= off {
            let d = s[i - off];
            if d != 1 {
                idx += coord * stride;
            }
            stride *= d;
        }
    }
    idx
}

fn binary_int(op: Binary, a: &Int, b: &Int) -> Result<Int, String> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let x = a.data[broadcast_index(&shape, &a.shape, i)];
            let y = b.data[broadcast_index(&shape, &b.shape, i)];
            match op {
                Binary::Add => Ok(x.wrapping_add(y)),
                Binary::Sub => Ok(x.wrapping_sub(y)),
                Binary::Mul => Ok(x.wrapping_mul(y)),
                Binary::Div if y == 0 => Err("integer division by zero".to_string()),
                Binary::Div => Ok(x.wrapping_div(y)),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Int { shape, data })
}

/// Runs an activation.
pub fn unary(op: Unary, a: &Float) -> Float {
    let t = a.t.clone();
    let t = match op {
        Unary::Relu => map_ranked!(t, x => activation::relu(x)),
        Unary::Sigmoid => map_ranked!(t, x => activation::sigmoid(x)),
        Unary::Tanh => map_ranked!(t, x => x.tanh()),
    };
    Float {
        t,
        shape: a.shape.clone(),
    }
}

/// `Softmax` / `LogSoftmax` over `axis` (already normalized).
pub fn softmax(a: &Float, axis: usize, log: bool) -> Float {
    let t = a.t.clone();
    let t = if log {
        map_ranked!(t, x => activation::log_softmax(x, axis))
    } else {
        map_ranked!(t, x => activation::softmax(x, axis))
    };
    Float {
        t,
        shape: a.shape.clone(),
    }
}

/// numpy `matmul`: batch dims broadcast, 1-D operands promoted and their dim removed again.
pub fn matmul(a: &Float, b: &Float) -> Result<Float, String> {
    let (mut sa, mut sb) = (a.shape.clone(), b.shape.clone());
    let (vec_a, vec_b) = (sa.len() == 1, sb.len() == 1);
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul operands must have rank >= 1".into());
    }
    if vec_a {
        sa.insert(0, 1);
    }
    if vec_b {
        sb.push(1);
    }
    let (k1, k2) = (sa[sa.len() - 1], sb[sb.len() - 2]);
    if k1 != k2 {
        return Err(format!(
            "MatMul inner dims differ: {:?} x {:?}",
            a.shape, b.shape
        ));
    }
    let batch = broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let rank = batch.len() + 2;
    let (x, y) = (a.reshape(sa.clone())?, b.reshape(sb.clone())?);
    let t = zip_ranked!(x.at_rank(rank)?, y.at_rank(rank)?, p, q => p.matmul(q));
    let mut shape = batch;
    shape.push(sa[sa.len() - 2]);
    shape.push(sb[sb.len() - 1]);
    let mut out = Float { t, shape };
    if vec_a || vec_b {
        let mut s = out.shape.clone();
        if vec_b {
            s.pop();
        }
        if vec_a {
            s.remove(s.len() - if vec_b { 1 } else { 2 });
        }
        out = out.reshape(s)?;
    }
    Ok(out)
}

/// `Gemm`: `alpha * A' B' + beta * C`, with A', B' optionally transposed.
pub fn gemm(
    a: &Float,
    b: &Float,
    c: Option<&Float>,
    (alpha, beta): (f32, f32),
    (trans_a, trans_b): (bool, bool),
) -> Result<Float, String> {
    let transpose = |f: &Float, yes: bool| -> Result<Float, String> {
        if f.shape.len() != 2 {
            return Err(format!("Gemm operands must be 2-D, got {:?}", f.shape));
        }
        Ok(if yes {
            Float::from_ranked(map_ranked!(f.t.clone(), x => x.transpose()))
        } else {
            f.clone()
        })
    };
    let mut y = matmul(&transpose(a, trans_a)?, &transpose(b, trans_b)?)?;
    if alpha != 1.0 {
        y.t = map_ranked!(y.t, x => x.mul_scalar(alpha));
    }
    if let Some(c) = c {
        let mut c = c.clone();
        if beta != 1.0 {
            c.t = map_ranked!(c.t, x => x.mul_scalar(beta));
        }
        y = binary_float(Binary::Add, &y, &c)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_broadcasting_matches_numpy() {
        let a = Int {
            shape: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let b = Int::vector(vec![10, 20, 30]);
        let c = binary_int(Binary::Add, &a, &b).unwrap();
        assert_eq!(c.data, vec![11, 22, 33, 14, 25, 36]);
        let col = Int {
            shape: vec![2, 1],
            data: vec![100, 200],
        };
        let d = binary_int(Binary::Mul, &a, &col).unwrap();
        assert_eq!(d.data, vec![100, 200, 300, 800, 1000, 1200]);
        assert!(binary_int(Binary::Div, &a, &Int::vector(vec![0])).is_err());
    }
}
