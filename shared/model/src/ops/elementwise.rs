//! Element-wise float ops beyond the basic arithmetic in `math`: Exp, Log, Sqrt, Neg, Abs, Erf,
//! parameterized activations (LeakyRelu, Elu, HardSigmoid, Gelu), Clip and Pow.

use burn::tensor::activation;

use crate::value::{Float, broadcast_shape, map_ranked, zip_ranked};

/// Element-wise float functions, with their attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointwise {
    /// `Exp`
    Exp,
    /// `Log`
    Log,
    /// `Sqrt`
    Sqrt,
    /// `Neg`
    Neg,
    /// `Abs`
    Abs,
    /// `Erf`
    Erf,
    /// `LeakyRelu` with `alpha`.
    LeakyRelu(f32),
    /// `Elu` with `alpha`.
    Elu(f32),
    /// `HardSigmoid` with `alpha`, `beta`.
    HardSigmoid(f32, f32),
    /// `Gelu` (opset 20); `true` for `approximate="tanh"`.
    Gelu(bool),
}

/// Runs a pointwise function.
pub fn pointwise(op: Pointwise, a: &Float) -> Float {
    let t = a.t.clone();
    let t = match op {
        Pointwise::Exp => map_ranked!(t, x => x.exp()),
        Pointwise::Log => map_ranked!(t, x => x.log()),
        Pointwise::Sqrt => map_ranked!(t, x => x.sqrt()),
        Pointwise::Neg => map_ranked!(t, x => x.neg()),
        Pointwise::Abs => map_ranked!(t, x => x.abs()),
        Pointwise::Erf => map_ranked!(t, x => x.erf()),
        Pointwise::LeakyRelu(alpha) => {
            map_ranked!(t, x => activation::leaky_relu(x, f64::from(alpha)))
        }
        Pointwise::Elu(alpha) => {
            // ONNX: x for x >= 0, alpha * (exp(x) - 1) otherwise.
            map_ranked!(t, x => {
                let neg = x.clone().clamp_max(0.0).exp().sub_scalar(1.0).mul_scalar(alpha);
                x.clamp_min(0.0).add(neg)
            })
        }
        Pointwise::HardSigmoid(alpha, beta) => map_ranked!(t, x => x
            .mul_scalar(alpha)
            .add_scalar(beta)
            .clamp(0.0, 1.0)),
        Pointwise::Gelu(false) => map_ranked!(t, x => activation::gelu(x)),
        Pointwise::Gelu(true) => map_ranked!(t, x => activation::gelu_approximate(x)),
    };
    Float {
        t,
        shape: a.shape.clone(),
    }
}

/// `Clip` with optional bounds (absent ones leave that side open).
pub fn clip(a: &Float, min: Option<f32>, max: Option<f32>) -> Float {
    let mut t = a.t.clone();
    if let Some(lo) = min {
        t = map_ranked!(t, x => x.clamp_min(lo));
    }
    if let Some(hi) = max {
        // onnxruntime applies min then max, so max wins when min > max.
        t = map_ranked!(t, x => x.clamp_max(hi));
    }
    Float {
        t,
        shape: a.shape.clone(),
    }
}

/// The single element of a scalar (or one-element) bound, as `Clip`'s min/max inputs are.
pub fn scalar(f: &Float, what: &str) -> Result<f32, String> {
    if f.len() != 1 {
        return Err(format!("{what} must be a scalar, got shape {:?}", f.shape));
    }
    Ok(f.to_host()?[0])
}

/// `Pow` for float base and float exponent, broadcasting numpy-style.
pub fn pow(a: &Float, b: &Float) -> Result<Float, String> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let rank = shape.len().max(1);
    let (x, y) = (a.at_rank(rank)?, b.at_rank(rank)?);
    // burn's powf needs equal shapes on some backends: expand both to the output first.
    let dims = {
        let mut d = vec![1; rank - shape.len()];
        d.extend_from_slice(&shape);
        d
    };
    let t = zip_ranked!(x, y, p, q => {
        let target = dims_array(&dims);
        p.expand(target).powf(q.expand(target))
    });
    Ok(Float { t, shape })
}

/// A slice as a fixed-size array (the length is the caller's rank).
pub fn dims_array<const D: usize>(v: &[usize]) -> [usize; D] {
    let mut out = [0; D];
    out.copy_from_slice(v);
    out
}
