//! `ai.onnx.ml` ops that scikit-learn exports produce (through skl2onnx): Scaler, Normalizer,
//! LinearClassifier, LinearRegressor, TreeEnsembleClassifier, TreeEnsembleRegressor.
//!
//! These ops are evaluated on the host: the input is downloaded once, computed row by row with
//! onnxruntime's exact rules (including its binary-classifier special cases and float32
//! accumulation order), and the scores are uploaded as one float tensor. Classifier labels are
//! host [`Int`] or [`Str`] values, as the model's `classlabels_*` attribute says.
//!
//! `ZipMap` (a sequence of maps) is refused at load: it is not a tensor.

mod linear;
mod tree;

use burn::tensor::Device;

use super::Attrs;
use crate::onnx::NodeProto;
use crate::value::{Float, Int, Str, Value};

pub use linear::{LinearClassifier, LinearRegressor};
pub use tree::TreeEnsemble;

/// Why `ZipMap` cannot load, with the fix.
pub const ZIPMAP_REFUSAL: &str = "ZipMap (its output is a sequence of maps, not a tensor; export the \
     classifier with skl2onnx option {\"zipmap\": False}, e.g. \
     to_onnx(model, X, options={id(model): {\"zipmap\": False}}))";

/// A parsed `ai.onnx.ml` op.
#[derive(Debug, Clone)]
pub enum MlOp {
    /// `Scaler`: `(x - offset) * scale`.
    Scaler {
        /// The offset attribute (1 or C values).
        offset: Vec<f32>,
        /// The scale attribute (1 or C values).
        scale: Vec<f32>,
    },
    /// `Normalizer`.
    Normalizer(Norm),
    /// `LinearClassifier`.
    LinearClassifier(LinearClassifier),
    /// `LinearRegressor`.
    LinearRegressor(LinearRegressor),
    /// `TreeEnsembleClassifier` / `TreeEnsembleRegressor`.
    Tree(Box<TreeEnsemble>),
}

/// The `norm` attribute of `Normalizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Divide by the row maximum.
    Max,
    /// Divide by the sum of absolute values.
    L1,
    /// Divide by the Euclidean norm.
    L2,
}

/// The `post_transform` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    /// Raw scores.
    None,
    /// `1 / (1 + exp(-x))`.
    Logistic,
    /// Softmax over the row.
    Softmax,
    /// Softmax that leaves zero scores at (nearly) zero.
    SoftmaxZero,
    /// Inverse normal CDF.
    Probit,
}

impl PostTransform {
    fn parse(a: &Attrs) -> Result<Self, String> {
        Ok(
            match a.string("post_transform").as_deref().unwrap_or("NONE") {
                "NONE" => Self::None,
                "LOGISTIC" => Self::Logistic,
                "SOFTMAX" => Self::Softmax,
                "SOFTMAX_ZERO" => Self::SoftmaxZero,
                "PROBIT" => Self::Probit,
                other => return Err(format!("post_transform={other:?}")),
            },
        )
    }

    /// Applies the transform to one row of two or more scores (onnxruntime's `write_scores`).
    fn apply_row(self, row: &mut [f32]) {
        match self {
            Self::None => {}
            Self::Logistic => row.iter_mut().for_each(|x| *x = logistic(*x)),
            Self::Probit => row.iter_mut().for_each(|x| *x = probit(*x)),
            Self::Softmax => softmax(row),
            Self::SoftmaxZero => softmax_zero(row),
        }
    }
}

/// onnxruntime's numerically stable logistic.
fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// onnxruntime's probit: `sqrt(2) * erfinv(2x - 1)` with its closed-form erfinv approximation.
fn probit(x: f32) -> f32 {
    let y = 2.0 * x - 1.0;
    let sgn = if y < 0.0 { -1.0f32 } else { 1.0 };
    let t = (1.0 - y) * (1.0 + y);
    let log = t.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    std::f32::consts::SQRT_2 * sgn * v3.sqrt()
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(-f32::MAX, f32::max);
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    row.iter_mut().for_each(|x| *x /= sum);
}

fn softmax_zero(row: &mut [f32]) {
    let max = row.iter().copied().fold(-f32::MAX, f32::max);
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0;
    for x in row.iter_mut() {
        if *x > 1e-7 || *x < -1e-7 {
            *x = (*x - max).exp();
            sum += *x;
        } else {
            *x *= exp_neg_max;
        }
    }
    row.iter_mut().for_each(|x| *x /= sum);
}

/// Class labels of a classifier.
#[derive(Debug, Clone)]
pub enum Labels {
    /// `classlabels_ints` / `classlabels_int64s`.
    Ints(Vec<i64>),
    /// `classlabels_strings`.
    Strings(Vec<Vec<u8>>),
}

/// Which label a row gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// The class at this index.
    Class(usize),
    /// A literal label (onnxruntime's fallback 0/1 when the labels do not say).
    Literal(i64),
}

impl Labels {
    fn parse(a: &Attrs, ints: &str) -> Result<Self, String> {
        match (a.ints(ints), a.strings("classlabels_strings")) {
            (Some(i), None) if !i.is_empty() => Ok(Self::Ints(i)),
            (None, Some(s)) if !s.is_empty() => Ok(Self::Strings(s)),
            (Some(_), Some(_)) => Err(format!("both {ints} and classlabels_strings")),
            _ => Err(format!("no class labels ({ints} or classlabels_strings)")),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Ints(v) => v.len(),
            Self::Strings(v) => v.len(),
        }
    }

    /// The label tensor `[N]` for the picks.
    fn value(&self, picks: &[Pick]) -> Result<Value, String> {
        let n = self.len();
        let oob = |i: usize| format!("class index {i} out of range for {n} labels");
        let shape = vec![picks.len()];
        Ok(match self {
            Self::Ints(l) => Value::Int(Int {
                shape,
                data: picks
                    .iter()
                    .map(|p| match *p {
                        Pick::Class(i) => l.get(i).copied().ok_or_else(|| oob(i)),
                        Pick::Literal(v) => Ok(v),
                    })
                    .collect::<Result<_, _>>()?,
            }),
            Self::Strings(l) => Value::Str(Str {
                shape,
                data: picks
                    .iter()
                    .map(|p| match *p {
                        Pick::Class(i) => l.get(i).cloned().ok_or_else(|| oob(i)),
                        Pick::Literal(v) => Ok(v.to_string().into_bytes()),
                    })
                    .collect::<Result<_, _>>()?,
            }),
        })
    }
}

/// Host rows of a 1-D (one row) or 2-D input: `(data, rows, columns)`.
fn rows(x: &Value, op: &str) -> Result<(Vec<f32>, usize, usize), String> {
    let shape = x.shape().to_vec();
    let (n, c) = match shape.as_slice() {
        [c] => (1, *c),
        [n, c] => (*n, *c),
        s => return Err(format!("{op} needs a 1-D or 2-D input, got shape {s:?}")),
    };
    Ok((host_floats(x)?, n, c))
}

/// The elements of a float or integer input as f32 (onnxruntime casts integer inputs the same way).
fn host_floats(x: &Value) -> Result<Vec<f32>, String> {
    match x {
        Value::Float(f) => f.to_host(),
        Value::Int(i) => Ok(i.data.iter().map(|&v| v as f32).collect()),
        other => Err(format!("expected a numeric tensor, got {}", other.kind())),
    }
}

/// Parses an `ai.onnx.ml` node this module handles; `Ok(None)` when the op type is not one of
/// them.
pub fn parse(node: &NodeProto) -> Result<Option<MlOp>, String> {
    let a = Attrs::new(node);
    let floats = |name: &str| a.floats(name).unwrap_or_default();
    Ok(Some(match node.op_type() {
        "Scaler" => MlOp::Scaler {
            offset: floats("offset"),
            scale: floats("scale"),
        },
        "Normalizer" => MlOp::Normalizer(match a.string("norm").as_deref().unwrap_or("MAX") {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            other => return Err(format!("Normalizer with norm={other:?}")),
        }),
        "LinearClassifier" => MlOp::LinearClassifier(LinearClassifier::parse(&a)?),
        "LinearRegressor" => MlOp::LinearRegressor(LinearRegressor::parse(&a)?),
        "TreeEnsembleClassifier" => MlOp::Tree(Box::new(TreeEnsemble::parse(&a, true)?)),
        "TreeEnsembleRegressor" => MlOp::Tree(Box::new(TreeEnsemble::parse(&a, false)?)),
        "ZipMap" => return Err(ZIPMAP_REFUSAL.into()),
        _ => return Ok(None),
    }))
}

impl MlOp {
    /// Runs the op; classifiers return `[label, scores]`.
    pub fn run(&self, inputs: &[Option<&Value>], device: &Device) -> Result<Vec<Value>, String> {
        let x = inputs.first().copied().flatten().ok_or("missing input 0")?;
        let upload = |data: Vec<f32>, shape: Vec<usize>| {
            Float::from_host(data, shape, device).map(Value::Float)
        };
        match self {
            MlOp::Scaler { offset, scale } => {
                let shape = x.shape().to_vec();
                let c = *shape.last().ok_or("Scaler needs rank >= 1")?;
                let pick = |v: &[f32], i: usize, what: &str| -> Result<f32, String> {
                    match v.len() {
                        0 => Ok(if what == "scale" { 1.0 } else { 0.0 }),
                        1 => Ok(v[0]),
                        n if n == c => Ok(v[i]),
                        n => Err(format!("Scaler {what} has {n} values for {c} columns")),
                    }
                };
                let data = host_floats(x)?
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| {
                        Ok((v - pick(offset, k % c, "offset")?) * pick(scale, k % c, "scale")?)
                    })
                    .collect::<Result<Vec<f32>, String>>()?;
                Ok(vec![upload(data, shape)?])
            }
            MlOp::Normalizer(norm) => {
                let (mut data, n, c) = rows(x, "Normalizer")?;
                for r in 0..n {
                    normalize(*norm, &mut data[r * c..(r + 1) * c]);
                }
                Ok(vec![upload(data, x.shape().to_vec())?])
            }
            MlOp::LinearClassifier(op) => {
                let (data, n, c) = rows(x, "LinearClassifier")?;
                let (picks, scores, width) = op.run(&data, n, c)?;
                Ok(vec![
                    op.labels.value(&picks)?,
                    upload(scores, vec![n, width])?,
                ])
            }
            MlOp::LinearRegressor(op) => {
                let (data, n, c) = rows(x, "LinearRegressor")?;
                let (scores, width) = op.run(&data, n, c)?;
                Ok(vec![upload(scores, vec![n, width])?])
            }
            MlOp::Tree(op) => {
                if x.shape().len() == 1 {
                    // onnxruntime reads a 1-D input as one row of a single feature here.
                    op.check_features(1)?;
                }
                let (data, n, c) = rows(x, "TreeEnsemble")?;
                let (picks, scores, width) = op.run(&data, n, c)?;
                let scores = upload(scores, vec![n, width])?;
                match &op.labels {
                    Some(labels) => Ok(vec![labels.value(&picks)?, scores]),
                    None => Ok(vec![scores]),
                }
            }
        }
    }
}

/// onnxruntime's Normalizer on one row (a zero norm leaves the row unchanged).
fn normalize(norm: Norm, row: &mut [f32]) {
    match norm {
        Norm::Max => {
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            if max != 0.0 {
                row.iter_mut().for_each(|x| *x /= max);
            }
        }
        Norm::L1 => {
            let sum: f32 = row.iter().map(|x| x.abs()).sum();
            if sum != 0.0 {
                row.iter_mut().for_each(|x| *x /= sum);
            }
        }
        Norm::L2 => {
            let sum: f32 = row.iter().map(|x| x * x).sum();
            if sum != 0.0 {
                for x in row.iter_mut() {
                    let r = (*x * *x / sum).sqrt();
                    *x = if *x < 0.0 { -r } else { r };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_match_onnxruntime_formulas() {
        assert!((logistic(0.0) - 0.5).abs() < 1e-7);
        assert!((logistic(-3.0) + logistic(3.0) - 1.0).abs() < 1e-6);
        assert!(probit(0.5).abs() < 1e-6);
        assert!((probit(0.975) - 1.96).abs() < 1e-2);
        let mut row = [1.0, 2.0, 3.0];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut row = [0.0, 2.0];
        softmax_zero(&mut row);
        assert_eq!(row[0], 0.0);
        assert!((row[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn normalizer_leaves_zero_rows() {
        let mut row = [0.0, 0.0];
        normalize(Norm::L2, &mut row);
        assert_eq!(row, [0.0, 0.0]);
        let mut row = [3.0, -4.0];
        normalize(Norm::L2, &mut row);
        assert_eq!(row, [0.6, -0.8]);
        let mut row = [1.0, -3.0];
        normalize(Norm::L1, &mut row);
        assert_eq!(row, [0.25, -0.75]);
    }
}
