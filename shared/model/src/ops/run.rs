//! Running a parsed [`Op`] on its input values.

use burn::tensor::Device;

use super::elementwise::Pointwise;
use super::{Op, conv, elementwise, index, layout, logic, math, nn, pad, reduce, shape};
use crate::value::{Int, Value, axis};

impl Op {
    /// Runs the op on its inputs (`None` for absent optional inputs).
    pub fn run(&self, inputs: &[Option<&Value>], device: &Device) -> Result<Vec<Value>, String> {
        let arg = |i: usize| -> Result<&Value, String> {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| format!("missing input {i}"))
        };
        if let Op::Split {
            axis: ax,
            split,
            outputs,
        } = self
        {
            let x = arg(0)?;
            let list = match (split, inputs.get(1).copied().flatten()) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(v)) => Some(v.int()?.data.clone()),
                (None, None) => None,
            };
            let dim = x.shape()[axis(*ax, x.shape().len())?];
            let sizes = nn::split_sizes(dim, list.as_deref(), *outputs)?;
            return nn::split(x, *ax, &sizes, device);
        }
        if let Op::Ml(op) = self {
            return op.run(inputs, device);
        }
        let out = match self {
            Op::Binary(op) => math::binary(*op, arg(0)?, arg(1)?)?,
            Op::Unary(op) => Value::Float(math::unary(*op, arg(0)?.float()?)),
            Op::MatMul => Value::Float(math::matmul(arg(0)?.float()?, arg(1)?.float()?)?),
            Op::Gemm { scale, trans } => {
                let c = match inputs.get(2).copied().flatten() {
                    Some(c) => Some(c.float()?),
                    None => None,
                };
                Value::Float(math::gemm(
                    arg(0)?.float()?,
                    arg(1)?.float()?,
                    c,
                    *scale,
                    *trans,
                )?)
            }
            Op::Softmax {
                axis: ax,
                log,
                legacy,
            } => {
                let x = arg(0)?.float()?;
                let rank = x.shape.len();
                if *legacy {
                    let flat = x.reshape(shape::flatten_shape(&x.shape, *ax)?)?;
                    let y = math::softmax(&flat, 1, *log);
                    Value::Float(y.reshape(x.shape.clone())?)
                } else {
                    Value::Float(math::softmax(x, axis(*ax, rank)?, *log))
                }
            }
            Op::Flatten { axis: ax } => {
                let x = arg(0)?;
                shape::reshape(x, shape::flatten_shape(x.shape(), *ax)?)?
            }
            Op::Reshape { allowzero } => {
                let x = arg(0)?;
                let target = shape::reshape_target(x.shape(), &arg(1)?.int()?.data, *allowzero)?;
                shape::reshape(x, target)?
            }
            Op::Identity => arg(0)?.clone(),
            Op::ArgMax { axis: ax, keepdims } => {
                let x = arg(0)?.float()?;
                Value::Int(shape::argmax(x, axis(*ax, x.shape.len())?, *keepdims)?)
            }
            Op::Cast(to) => shape::cast(arg(0)?, *to, device)?,
            Op::ArrayFeatureExtractor => {
                shape::array_feature_extractor(arg(0)?, arg(1)?.int()?, device)?
            }
            Op::Pointwise(op) => match (op, arg(0)?) {
                (Pointwise::Neg | Pointwise::Abs, Value::Int(i)) => Value::Int(Int {
                    shape: i.shape.clone(),
                    data: i
                        .data
                        .iter()
                        .map(|&x| {
                            if *op == Pointwise::Neg {
                                x.wrapping_neg()
                            } else {
                                x.wrapping_abs()
                            }
                        })
                        .collect(),
                }),
                (_, x) => Value::Float(elementwise::pointwise(*op, x.float()?)),
            },
            Op::Pow => {
                // An integer exponent (ONNX T2) is converted; the base must be float.
                let e = shape::cast(arg(1)?, shape::CastTo::Float, device)?;
                Value::Float(elementwise::pow(arg(0)?.float()?, e.float()?)?)
            }
            Op::Clip { attrs } => {
                let x = arg(0)?.float()?;
                let (lo, hi) = match attrs {
                    Some((lo, hi)) => (Some(*lo), Some(*hi)),
                    None => {
                        let bound = |i: usize, what: &str| -> Result<Option<f32>, String> {
                            match inputs.get(i).copied().flatten() {
                                Some(v) => elementwise::scalar(v.float()?, what).map(Some),
                                None => Ok(None),
                            }
                        };
                        (bound(1, "Clip min")?, bound(2, "Clip max")?)
                    }
                };
                Value::Float(elementwise::clip(x, lo, hi))
            }
            Op::Transpose { perm } => layout::transpose(arg(0)?, perm.as_deref())?,
            Op::Squeeze { axes } => {
                let x = arg(0)?;
                let list = match (axes, inputs.get(1).copied().flatten()) {
                    (Some(a), _) => Some(a.clone()),
                    (None, Some(v)) => Some(v.int()?.data.clone()),
                    (None, None) => None,
                };
                shape::reshape(x, layout::squeeze_shape(x.shape(), list.as_deref())?)?
            }
            Op::Unsqueeze { axes } => {
                let x = arg(0)?;
                let list = match axes {
                    Some(a) => a.clone(),
                    None => arg(1)?.int()?.data.clone(),
                };
                shape::reshape(x, layout::unsqueeze_shape(x.shape(), &list)?)?
            }
            Op::Concat { axis: ax } => {
                let vals = (0..inputs.len()).map(arg).collect::<Result<Vec<_>, _>>()?;
                layout::concat(&vals, *ax)?
            }
            Op::Gather { axis: ax } => layout::gather(arg(0)?, arg(1)?.int()?, *ax, device)?,
            Op::Slice { attrs } => {
                let x = arg(0)?;
                let opt = |i: usize| -> Result<Option<Vec<i64>>, String> {
                    match inputs.get(i).copied().flatten() {
                        Some(v) => Ok(Some(v.int()?.data.clone())),
                        None => Ok(None),
                    }
                };
                match attrs {
                    Some(sa) => {
                        index::slice(x, &sa.starts, &sa.ends, sa.axes.as_deref(), None, device)?
                    }
                    None => index::slice(
                        x,
                        &arg(1)?.int()?.data,
                        &arg(2)?.int()?.data,
                        opt(3)?.as_deref(),
                        opt(4)?.as_deref(),
                        device,
                    )?,
                }
            }
            Op::Expand => index::expand(arg(0)?, &arg(1)?.int()?.data, device)?,
            Op::Compare(op) => Value::Bool(logic::compare(*op, arg(0)?, arg(1)?)?),
            Op::Not => Value::Bool(logic::not(arg(0)?.bool()?)),
            Op::Where => logic::where_(arg(0)?.bool()?, arg(1)?, arg(2)?, device)?,
            Op::Reduce {
                op,
                axes,
                keepdims,
                noop,
            } => {
                let list = match (axes, inputs.get(1).copied().flatten()) {
                    (Some(a), _) => Some(a.clone()),
                    (None, Some(v)) => Some(v.int()?.data.clone()),
                    (None, None) => None,
                };
                reduce::reduce(*op, arg(0)?, list.as_deref(), *keepdims, *noop)?
            }
            Op::Range => reduce::range(arg(0)?, arg(1)?, arg(2)?, device)?,
            Op::ConstantOfShape(fill) => {
                reduce::constant_of_shape(arg(0)?.int()?, fill.as_deref(), device)?
            }
            Op::LayerNorm { axis: ax, eps } => {
                let bias = match inputs.get(2).copied().flatten() {
                    Some(b) => Some(b.float()?),
                    None => None,
                };
                Value::Float(nn::layer_norm(
                    arg(0)?.float()?,
                    arg(1)?.float()?,
                    bias,
                    *ax,
                    *eps,
                )?)
            }
            Op::BatchNorm { eps } => {
                let p = |i: usize| -> Result<&crate::value::Float, String> { arg(i)?.float() };
                Value::Float(nn::batch_norm(
                    arg(0)?.float()?,
                    [p(1)?, p(2)?, p(3)?, p(4)?],
                    *eps,
                    device,
                )?)
            }
            Op::GlobalAveragePool => Value::Float(nn::global_average_pool(arg(0)?.float()?)?),
            Op::Split { .. } => unreachable!("handled above"),
            Op::Conv(win) => {
                let b = inputs
                    .get(2)
                    .copied()
                    .flatten()
                    .map(Value::float)
                    .transpose()?;
                Value::Float(conv::conv(arg(0)?.float()?, arg(1)?.float()?, b, win)?)
            }
            Op::ConvTranspose {
                win,
                output_padding,
            } => {
                let b = inputs
                    .get(2)
                    .copied()
                    .flatten()
                    .map(Value::float)
                    .transpose()?;
                Value::Float(conv::conv_transpose(
                    arg(0)?.float()?,
                    arg(1)?.float()?,
                    b,
                    win,
                    output_padding,
                )?)
            }
            Op::Pool {
                win,
                max,
                count_include_pad,
            } => Value::Float(conv::pool(arg(0)?.float()?, win, *max, *count_include_pad)?),
            Op::Pad { mode, attrs } => {
                let x = arg(0)?;
                let opt = |i: usize| inputs.get(i).copied().flatten();
                let (pads, axes, value) = match attrs {
                    Some((p, v)) => (
                        p.clone(),
                        None,
                        Some(crate::value::Value::Float(crate::value::Float::from_host(
                            vec![*v],
                            vec![],
                            device,
                        )?)),
                    ),
                    None => (
                        arg(1)?.int()?.data.clone(),
                        opt(3)
                            .map(|v| v.int().map(|i| i.data.clone()))
                            .transpose()?,
                        opt(2).cloned(),
                    ),
                };
                let pairs = pad::pad_pairs(x.shape().len(), &pads, axes.as_deref())?;
                pad::pad(x, &pairs, *mode, value.as_ref(), device)?
            }
            Op::Ml(_) => unreachable!("handled above"),
            Op::Shape { start, end } => Value::Int(layout::shape_of(arg(0)?, *start, *end)),
        };
        Ok(vec![out])
    }
}
