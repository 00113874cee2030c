//! The supported ONNX ops: parsed (with their attributes) at load time, run by the interpreter.
//!
//! [`Op::parse`] is the single list of what Kiln runs; anything else fails the load with
//! [`crate::ModelError::UnsupportedOp`], never the first request.

mod attrs;
mod conv;
mod elementwise;
mod index;
mod layout;
mod logic;
mod math;
mod ml;
mod nn;
mod pad;
mod reduce;
mod run;
mod shape;

pub use attrs::Attrs;
use elementwise::Pointwise;
use math::{Binary, Unary};
use shape::CastTo;

use crate::onnx::NodeProto;

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
    /// `Exp`, `Log`, `Sqrt`, `Neg`, `Abs`, `Erf`, `LeakyRelu`, `Elu`, `HardSigmoid`, `Gelu`.
    Pointwise(Pointwise),
    /// `Pow` (float base and exponent).
    Pow,
    /// `Clip`: bounds from attributes (opset < 11) or from optional inputs 1 and 2.
    Clip {
        /// `min`, `max` attributes (opset < 11); `None` reads the inputs.
        attrs: Option<(f32, f32)>,
    },
    /// `Transpose`.
    Transpose {
        /// The perm attribute; `None` reverses the dims.
        perm: Option<Vec<i64>>,
    },
    /// `Squeeze`: axes from the attribute (opset < 13) or the optional input 1.
    Squeeze {
        /// The axes attribute (opset < 13).
        axes: Option<Vec<i64>>,
    },
    /// `Unsqueeze`: axes from the attribute (opset < 13) or input 1.
    Unsqueeze {
        /// The axes attribute (opset < 13).
        axes: Option<Vec<i64>>,
    },
    /// `Concat`.
    Concat {
        /// The axis attribute.
        axis: i64,
    },
    /// `Gather`.
    Gather {
        /// The axis attribute.
        axis: i64,
    },
    /// `Slice`: opset >= 10 reads starts/ends/axes/steps from inputs; older opsets carry them
    /// as attributes.
    Slice {
        /// `starts`, `ends`, `axes` attributes (opset < 10).
        attrs: Option<index::SliceAttrs>,
    },
    /// `Expand`.
    Expand,
    /// `Equal`, `Less`, `Greater` (host booleans).
    Compare(logic::Compare),
    /// `Not`.
    Not,
    /// `Where`.
    Where,
    /// `ReduceMean`, `ReduceSum`, `ReduceMax`, `ReduceMin`.
    Reduce {
        /// Which reduction.
        op: reduce::Reduce,
        /// The axes attribute (before axes became an input: opset 13 for Sum, 18 for the rest).
        axes: Option<Vec<i64>>,
        /// The keepdims attribute.
        keepdims: bool,
        /// The noop_with_empty_axes attribute.
        noop: bool,
    },
    /// `Range`.
    Range,
    /// `ConstantOfShape` with its optional `value` tensor.
    ConstantOfShape(Option<Box<crate::onnx::TensorProto>>),
    /// `LayerNormalization` (only the Y output).
    LayerNorm {
        /// The axis attribute.
        axis: i64,
        /// The epsilon attribute.
        eps: f32,
    },
    /// `BatchNormalization` in inference mode (only the Y output).
    BatchNorm {
        /// The epsilon attribute.
        eps: f32,
    },
    /// `GlobalAveragePool`.
    GlobalAveragePool,
    /// `Split`: sizes from the attribute (opset < 13), input 1, or equal parts.
    Split {
        /// The axis attribute.
        axis: i64,
        /// The split attribute (opset < 13).
        split: Option<Vec<i64>>,
        /// How many outputs the node has.
        outputs: usize,
    },
    /// `Conv` (1-D, 2-D).
    Conv(conv::Window),
    /// `ConvTranspose` (2-D, symmetric pads).
    ConvTranspose {
        /// Window attributes.
        win: conv::Window,
        /// The output_padding attribute.
        output_padding: Vec<usize>,
    },
    /// `MaxPool` / `AveragePool` (2-D).
    Pool {
        /// Window attributes.
        win: conv::Window,
        /// MaxPool (else AveragePool).
        max: bool,
        /// AveragePool's count_include_pad.
        count_include_pad: bool,
    },
    /// `Pad`: pads (and optional constant value, axes) from inputs (opset >= 11) or attributes.
    Pad {
        /// The mode attribute.
        mode: pad::PadMode,
        /// `pads`, `value` attributes (opset < 11).
        attrs: Option<(Vec<i64>, f32)>,
    },
    /// `ai.onnx.ml` Scaler, Normalizer, Linear*, TreeEnsemble* (see [`ml`]).
    Ml(Box<ml::MlOp>),
    /// `Shape`.
    Shape {
        /// The start attribute (opset 15).
        start: i64,
        /// The end attribute (opset 15).
        end: Option<i64>,
    },
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
                "Exp" => Op::Pointwise(Pointwise::Exp),
                "Log" => Op::Pointwise(Pointwise::Log),
                "Sqrt" => Op::Pointwise(Pointwise::Sqrt),
                "Neg" => Op::Pointwise(Pointwise::Neg),
                "Abs" => Op::Pointwise(Pointwise::Abs),
                "Erf" => Op::Pointwise(Pointwise::Erf),
                "LeakyRelu" => Op::Pointwise(Pointwise::LeakyRelu(a.float("alpha", 0.01))),
                "Elu" => Op::Pointwise(Pointwise::Elu(a.float("alpha", 1.0))),
                "HardSigmoid" => Op::Pointwise(Pointwise::HardSigmoid(
                    a.float("alpha", 0.2),
                    a.float("beta", 0.5),
                )),
                "Gelu" if opset < 20 => return Err(format!("Gelu at opset {opset} (added in 20)")),
                "Gelu" => match a.string("approximate").as_deref() {
                    None | Some("none") => Op::Pointwise(Pointwise::Gelu(false)),
                    Some("tanh") => Op::Pointwise(Pointwise::Gelu(true)),
                    Some(other) => return Err(format!("Gelu with approximate={other:?}")),
                },
                "Pow" => Op::Pow,
                "Clip" if opset >= 11 && (a.has("min") || a.has("max")) => {
                    return Err(format!("Clip with min/max attributes at opset {opset}"));
                }
                "Clip" => Op::Clip {
                    attrs: (opset < 11)
                        .then(|| (a.float("min", f32::MIN), a.float("max", f32::MAX))),
                },
                "Transpose" => Op::Transpose {
                    perm: a.ints("perm"),
                },
                "Squeeze" | "Unsqueeze" => {
                    let axes = a.ints("axes");
                    if opset >= 13 && axes.is_some() {
                        return Err(format!("{op_type} with an axes attribute at opset {opset}"));
                    }
                    if op_type == "Unsqueeze" && opset < 13 && axes.is_none() {
                        return Err("Unsqueeze without axes".into());
                    }
                    if op_type == "Squeeze" {
                        Op::Squeeze { axes }
                    } else {
                        Op::Unsqueeze { axes }
                    }
                }
                "Concat" => Op::Concat {
                    axis: a
                        .has("axis")
                        .then(|| a.int("axis", 0))
                        .ok_or("Concat without axis")?,
                },
                "Gather" => Op::Gather {
                    axis: a.int("axis", 0),
                },
                "Slice" if opset < 10 => Op::Slice {
                    attrs: Some(index::SliceAttrs {
                        starts: a.ints("starts").ok_or("Slice without starts")?,
                        ends: a.ints("ends").ok_or("Slice without ends")?,
                        axes: a.ints("axes"),
                    }),
                },
                "Slice" if a.has("starts") || a.has("ends") => {
                    return Err(format!(
                        "Slice with starts/ends attributes at opset {opset}"
                    ));
                }
                "Slice" => Op::Slice { attrs: None },
                "Expand" => Op::Expand,
                "Equal" => Op::Compare(logic::Compare::Equal),
                "Less" => Op::Compare(logic::Compare::Less),
                "Greater" => Op::Compare(logic::Compare::Greater),
                "Not" => Op::Not,
                "Where" => Op::Where,
                "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
                    let (op, input_from) = match op_type {
                        "ReduceMean" => (reduce::Reduce::Mean, 18),
                        "ReduceSum" => (reduce::Reduce::Sum, 13),
                        "ReduceMax" => (reduce::Reduce::Max, 18),
                        _ => (reduce::Reduce::Min, 18),
                    };
                    let axes = a.ints("axes");
                    if opset >= input_from && axes.is_some() {
                        return Err(format!("{op_type} with an axes attribute at opset {opset}"));
                    }
                    Op::Reduce {
                        op,
                        axes,
                        keepdims: a.int("keepdims", 1) != 0,
                        noop: a.int("noop_with_empty_axes", 0) != 0,
                    }
                }
                "Range" => Op::Range,
                "ConstantOfShape" => {
                    let value = a.tensor("value");
                    if let Some(t) = value {
                        reduce::check_fill(t)?;
                    }
                    Op::ConstantOfShape(value.cloned().map(Box::new))
                }
                "LayerNormalization" => {
                    if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                        return Err("LayerNormalization with Mean/InvStdDev outputs".into());
                    }
                    Op::LayerNorm {
                        axis: a.int("axis", -1),
                        eps: a.float("epsilon", 1e-5),
                    }
                }
                "BatchNormalization" => {
                    if a.int("spatial", 1) == 0 {
                        return Err("BatchNormalization with spatial=0".into());
                    }
                    if a.int("training_mode", 0) != 0
                        || node.output.iter().skip(1).any(|o| !o.is_empty())
                    {
                        return Err("BatchNormalization in training mode".into());
                    }
                    Op::BatchNorm {
                        eps: a.float("epsilon", 1e-5),
                    }
                }
                "GlobalAveragePool" => Op::GlobalAveragePool,
                "Split" => {
                    let split = a.ints("split");
                    if opset >= 13 && split.is_some() {
                        return Err(format!("Split with a split attribute at opset {opset}"));
                    }
                    if let Some(n) = a.has("num_outputs").then(|| a.int("num_outputs", 0))
                        && n as usize != node.output.len()
                    {
                        return Err(format!(
                            "Split num_outputs={n} with {} outputs",
                            node.output.len()
                        ));
                    }
                    Op::Split {
                        axis: a.int("axis", 0),
                        split,
                        outputs: node.output.len(),
                    }
                }
                "Conv" => {
                    let win = conv::Window::parse(&a, op_type)?;
                    if let Some(k) = win.kernel.as_ref().filter(|k| !(1..=2).contains(&k.len())) {
                        return Err(format!("Conv with {}-D kernel", k.len()));
                    }
                    Op::Conv(win)
                }
                "ConvTranspose" => {
                    if a.has("output_shape") {
                        return Err("ConvTranspose with output_shape".into());
                    }
                    let output_padding = a
                        .ints("output_padding")
                        .unwrap_or_default()
                        .into_iter()
                        .map(|x| usize::try_from(x).map_err(|_| "negative output_padding"))
                        .collect::<Result<_, _>>()?;
                    let win = conv::Window::parse(&a, op_type)?;
                    if let Some(k) = win.kernel.as_ref().filter(|k| k.len() != 2) {
                        return Err(format!("ConvTranspose with {}-D kernel", k.len()));
                    }
                    if let Some(p) = &win.pads
                        && p[..p.len() / 2] != p[p.len() / 2..]
                    {
                        return Err("ConvTranspose with asymmetric pads".into());
                    }
                    Op::ConvTranspose {
                        win,
                        output_padding,
                    }
                }
                "MaxPool" | "AveragePool" => {
                    let max = op_type == "MaxPool";
                    if max && node.output.iter().skip(1).any(|o| !o.is_empty()) {
                        return Err("MaxPool with an Indices output".into());
                    }
                    let win = conv::Window::parse(&a, op_type)?;
                    match &win.kernel {
                        Some(k) if k.len() == 2 => {}
                        Some(k) => return Err(format!("{op_type} with {}-D kernel", k.len())),
                        None => return Err(format!("{op_type} without kernel_shape")),
                    }
                    if !max
                        && win
                            .dilations
                            .as_ref()
                            .is_some_and(|d| d.iter().any(|&x| x != 1))
                    {
                        return Err("AveragePool with dilations".into());
                    }
                    Op::Pool {
                        win,
                        max,
                        count_include_pad: a.int("count_include_pad", 0) != 0,
                    }
                }
                "Shape" => Op::Shape {
                    start: a.int("start", 0),
                    end: a.has("end").then(|| a.int("end", 0)),
                },
                "Pad" => Op::Pad {
                    mode: pad::PadMode::parse(a.string("mode").as_deref())?,
                    attrs: (opset < 11)
                        .then(|| a.ints("pads").map(|p| (p, a.float("value", 0.0))))
                        .flatten(),
                },
                "Constant" => return Ok(None),
                other => return Err(other.to_string()),
            },
            (ML_DOMAIN, "ArrayFeatureExtractor") => Op::ArrayFeatureExtractor,
            (ML_DOMAIN, other) => match ml::parse(node)? {
                Some(op) => Op::Ml(Box::new(op)),
                None => return Err(other.to_string()),
            },
            (_, other) => return Err(other.to_string()),
        };
        Ok(Some(op))
    }
}
