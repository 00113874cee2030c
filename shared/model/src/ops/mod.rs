//! The supported ONNX ops: parsed (with their attributes) at load time, run by the interpreter.
//!
//! [`Op::parse`] is the single list of what Kiln runs; anything else fails the load with
//! [`crate::ModelError::UnsupportedOp`], never the first request.

mod attrs;
mod math;
mod shape;

use burn::tensor::Device;

pub use attrs::Attrs;
use math::{Binary, Unary};
use shape::CastTo;

use crate::onnx::NodeProto;
use crate::value::{Value, axis};

/// The ONNX domain of `ai.onnx.ml` ops.
pub const ML_DOMAIN: &str = "ai.onnx.ml";

/// One parsed op with its attributes.
#[derive(Debug, Clone)]
pub enum Op {
    /// `Add`, `Sub`, `Mul`, `Div`.
    Binary(Binary),
    /// `Relu`, `Sigmoid`, `Tanh`.
    Unary(Unary),
    /// `MatMul`.
    MatMul,
    /// `Gemm`.
    Gemm {
        /// `alpha`, `beta`.
        scale: (f32, f32),
        /// `transA`, `transB`.
        trans: (bool, bool),
    },
    /// `Softmax` / `LogSoftmax`.
    Softmax {
        /// The axis attribute.
        axis: i64,
        /// LogSoftmax.
        log: bool,
        /// Opset < 13 semantics: coerce to 2-D at `axis`.
        legacy: bool,
    },
    /// `Flatten`.
    Flatten {
        /// The axis attribute.
        axis: i64,
    },
    /// `Reshape`.
    Reshape {
        /// The allowzero attribute.
        allowzero: bool,
    },
    /// `Identity`, and `Dropout` at inference (its optional mask output is not supported).
    Identity,
    /// `ArgMax`.
    ArgMax {
        /// The axis attribute.
        axis: i64,
        /// The keepdims attribute.
        keepdims: bool,
    },
    /// `Cast`.
    Cast(CastTo),
    /// `ai.onnx.ml.ArrayFeatureExtractor`.
    ArrayFeatureExtractor,
}

impl Op {
    /// Parses a node of the given opset (default domain version). `Err` carries the reason the
    /// node is unsupported; `Ok(None)` for `Constant`, which the loader folds.
    pub fn parse(node: &NodeProto, opset: i64) -> Result<Option<Op>, String> {
        let a = Attrs::new(node);
        let domain = node.domain();
        let op = match (domain, node.op_type()) {
            ("" | "ai.onnx", op_type) => match op_type {
                "Add" => Op::Binary(Binary::Add),
                "Sub" => Op::Binary(Binary::Sub),
                "Mul" => Op::Binary(Binary::Mul),
                "Div" => Op::Binary(Binary::Div),
                "Relu" => Op::Unary(Unary::Relu),
                "Sigmoid" => Op::Unary(Unary::Sigmoid),
                "Tanh" => Op::Unary(Unary::Tanh),
                "MatMul" => Op::MatMul,
                "Gemm" => Op::Gemm {
                    scale: (a.float("alpha", 1.0), a.float("beta", 1.0)),
                    trans: (a.int("transA", 0) != 0, a.int("transB", 0) != 0),
                },
                "Softmax" | "LogSoftmax" => Op::Softmax {
                    axis: a.int("axis", if opset >= 13 { -1 } else { 1 }),
                    log: op_type == "LogSoftmax",
                    legacy: opset < 13,
                },
                "Flatten" => Op::Flatten {
                    axis: a.int("axis", 1),
                },
                "Reshape" => Op::Reshape {
                    allowzero: a.int("allowzero", 0) != 0,
                },
                "Identity" => Op::Identity,
                "Dropout" => {
                    if node.output.len() > 1 && !node.output[1].is_empty() {
                        return Err("Dropout with a mask output".into());
                    }
                    Op::Identity
                }
                "ArgMax" => {
                    if a.int("select_last_index", 0) != 0 {
                        return Err("ArgMax with select_last_index=1".into());
                    }
                    Op::ArgMax {
                        axis: a.int("axis", 0),
                        keepdims: a.int("keepdims", 1) != 0,
                    }
                }
                "Cast" => {
                    let to = a.int("to", 0);
                    Op::Cast(
                        CastTo::from_onnx(to).ok_or_else(|| format!("Cast to data type {to}"))?,
                    )
                }
                "Constant" => return Ok(None),
                other => return Err(other.to_string()),
            },
            (ML_DOMAIN, "ArrayFeatureExtractor") => Op::ArrayFeatureExtractor,
            (_, other) => return Err(other.to_string()),
        };
        Ok(Some(op))
    }

    /// Runs the op on its inputs (`None` for absent optional inputs).
    pub fn run(&self, inputs: &[Option<&Value>], device: &Device) -> Result<Vec<Value>, String> {
        let arg = |i: usize| -> Result<&Value, String> {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| format!("missing input {i}"))
        };
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
        };
        Ok(vec![out])
    }
}
