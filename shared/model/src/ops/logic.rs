//! Comparisons and selection: Equal, Less, Greater, Not, Where. Results are host [`Bool`]s
//! (see the value policy in `crate::value`).

use burn::tensor::{Device, Tensor, TensorData};

use super::elementwise::dims_array;
use super::index::broadcast_host;
use crate::value::{Bool, Float, Host, Value, broadcast_shape, zip_ranked};

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `Equal`
    Equal,
    /// `Less`
    Less,
    /// `Greater`
    Greater,
}

fn compare_host<T: Copy + PartialOrd>(
    op: Compare,
    a: &Host<T>,
    b: &Host<T>,
) -> Result<Bool, String> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let (x, y) = (
        broadcast_host(a, shape.clone()),
        broadcast_host(b, shape.clone()),
    );
    let data = x
        .data
        .iter()
        .zip(&y.data)
        .map(|(p, q)| match op {
            Compare::Equal => p == q,
            Compare::Less => p < q,
            Compare::Greater => p > q,
        })
        .collect();
    Ok(Host { shape, data })
}

/// Runs a comparison on two values of one kind, broadcasting numpy-style.
pub fn compare(op: Compare, a: &Value, b: &Value) -> Result<Bool, String> {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            let hx = Host {
                shape: x.shape.clone(),
                data: x.to_host()?,
            };
            let hy = Host {
                shape: y.shape.clone(),
                data: y.to_host()?,
            };
            compare_host(op, &hx, &hy)
        }
        (Value::Int(x), Value::Int(y)) => compare_host(op, x, y),
        (Value::Bool(x), Value::Bool(y)) if op == Compare::Equal => compare_host(op, x, y),
        _ => Err(format!(
            "{op:?} on {} and {} is not supported",
            a.kind(),
            b.kind()
        )),
    }
}

/// `Not`.
pub fn not(b: &Bool) -> Bool {
    Host {
        shape: b.shape.clone(),
        data: b.data.iter().map(|x| !x).collect(),
    }
}

/// `Where(cond, x, y)`: `x` where `cond`, else `y`, all three broadcast together.
pub fn where_(cond: &Bool, x: &Value, y: &Value, device: &Device) -> Result<Value, String> {
    let shape = broadcast_shape(&broadcast_shape(&cond.shape, x.shape())?, y.shape())?;
    let mask = broadcast_host(cond, shape.clone());
    Ok(match (x, y) {
        (Value::Float(a), Value::Float(b)) => {
            if shape.contains(&0) {
                return Ok(Value::Float(Float::from_host(vec![], shape, device)?));
            }
            let rank = shape.len().max(1);
            let dims = if shape.is_empty() {
                vec![1]
            } else {
                shape.clone()
            };
            let t = zip_ranked!(a.at_rank(rank)?, b.at_rank(rank)?, p, q => {
                let d = dims_array(&dims);
                let m = Tensor::from_data(TensorData::new(mask.data.clone(), d), device);
                q.expand(d).mask_where(m, p.expand(d))
            });
            Value::Float(Float { t, shape })
        }
        (Value::Int(a), Value::Int(b)) => Value::Int(select_host(&mask, a, b)),
        (Value::Bool(a), Value::Bool(b)) => Value::Bool(select_host(&mask, a, b)),
        _ => {
            return Err(format!(
                "Where needs x and y of one type, got {} and {}",
                x.kind(),
                y.kind()
            ));
        }
    })
}

fn select_host<T: Copy>(mask: &Bool, a: &Host<T>, b: &Host<T>) -> Host<T> {
    let (a, b) = (
        broadcast_host(a, mask.shape.clone()),
        broadcast_host(b, mask.shape.clone()),
    );
    let data = mask
        .data
        .iter()
        .zip(a.data.iter().zip(&b.data))
        .map(|(&m, (&p, &q))| if m { p } else { q })
        .collect();
    Host {
        shape: mask.shape.clone(),
        data,
    }
}
