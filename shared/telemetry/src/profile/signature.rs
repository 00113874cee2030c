//! Which tensors of a model's signature are profiled, and how: the one mapping from a package's
//! inputs and outputs to a [`ProfileSchema`], shared by the worker (live traffic) and the monitor
//! (reference profiles built from training data), so the two profiles always line up.
//!
//! - FP32 inputs with static per-item dims are profiled, flattened: one numeric feature per
//!   element, named `{input}[i]` (a single-element input keeps its bare name); other inputs (other
//!   datatypes, dynamic dims) are left out, and so is an input that would take the features past
//!   [`MAX_FEATURES`] (an image's pixels are not features to watch one by one, and each feature
//!   costs a sketch per window on the worker and the monitor).
//! - INT64, INT32 and BYTES outputs are class labels (a class histogram); FP32 and FP64 outputs
//!   are scores (a quantile sketch); other outputs are left out.

use super::{FeatureKind, FeatureSpec, OutputKind, OutputSpec, ProfileSchema, SketchConfig};

/// Most input features profiled per model; inputs beyond it are left out whole.
pub const MAX_FEATURES: usize = 4096;

/// One tensor of a signature: name, protocol datatype (`"FP32"`, ...), per-item dims (-1 =
/// dynamic).
#[derive(Debug, Clone, Copy)]
pub struct TensorSig<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Inference-protocol datatype.
    pub datatype: &'a str,
    /// Per-item dims, batch dimension excluded.
    pub dims: &'a [i64],
}

/// The profiled part of a signature.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureLayout {
    /// `(input index in the signature, features per row)` of each profiled input, in order.
    pub inputs: Vec<(usize, usize)>,
    /// `(output index in the signature, kind)` of each profiled output, in order.
    pub outputs: Vec<(usize, OutputKind)>,
    /// The schema of the profile.
    pub schema: ProfileSchema,
}

/// Maps a signature to its profile layout (see the module docs).
pub fn layout(
    inputs: &[TensorSig<'_>],
    outputs: &[TensorSig<'_>],
    config: SketchConfig,
) -> SignatureLayout {
    let mut schema = ProfileSchema {
        config,
        ..ProfileSchema::default()
    };
    let mut profiled_inputs = Vec::new();
    for (i, spec) in inputs.iter().enumerate() {
        if spec.datatype != "FP32" || spec.dims.iter().any(|d| *d < 0) {
            continue;
        }
        let n = spec
            .dims
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?));
        let Some(n) = n.filter(|n| *n <= MAX_FEATURES - schema.features.len()) else {
            continue;
        };
        if n == 1 && spec.dims.iter().all(|d| *d == 1) {
            schema.features.push(FeatureSpec {
                name: spec.name.to_string(),
                kind: FeatureKind::Numeric,
            });
        } else {
            schema.features.extend((0..n).map(|k| FeatureSpec {
                name: format!("{}[{k}]", spec.name),
                kind: FeatureKind::Numeric,
            }));
        }
        profiled_inputs.push((i, n));
    }
    let mut profiled_outputs = Vec::new();
    for (i, spec) in outputs.iter().enumerate() {
        let kind = match spec.datatype {
            "INT64" | "INT32" | "BYTES" => OutputKind::Label,
            "FP32" | "FP64" => OutputKind::Score,
            _ => continue,
        };
        schema.outputs.push(OutputSpec {
            name: spec.name.to_string(),
            kind,
        });
        profiled_outputs.push((i, kind));
    }
    SignatureLayout {
        inputs: profiled_inputs,
        outputs: profiled_outputs,
        schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_fp32_inputs_and_classifies_outputs() {
        let sig = |name, datatype, dims| TensorSig {
            name,
            datatype,
            dims,
        };
        let l = layout(
            &[
                sig("x", "FP32", &[2, 2]),
                sig("ids", "INT64", &[3]),
                sig("dyn", "FP32", &[-1]),
                sig("one", "FP32", &[1]),
            ],
            &[
                sig("label", "INT64", &[]),
                sig("p", "FP32", &[10]),
                sig("mask", "BOOL", &[1]),
            ],
            SketchConfig::default(),
        );
        let names: Vec<&str> = l.schema.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["x[0]", "x[1]", "x[2]", "x[3]", "one"]);
        assert_eq!(l.inputs, [(0, 4), (3, 1)]);
        assert_eq!(l.outputs, [(0, OutputKind::Label), (1, OutputKind::Score)]);
        assert_eq!(l.schema.outputs.len(), 2);
    }

    #[test]
    fn inputs_past_the_feature_cap_are_left_out_whole() {
        let sig = |name, dims| TensorSig {
            name,
            datatype: "FP32",
            dims,
        };
        let image = [3, 224, 224];
        let l = layout(
            &[
                sig("image", &image),
                sig("meta", &[4]),
                sig("huge", &[i64::MAX, 2]),
            ],
            &[],
            SketchConfig::default(),
        );
        assert_eq!(
            l.inputs,
            [(1, 4)],
            "the image and the overflowing input are left out"
        );
        assert_eq!(l.schema.features.len(), 4);
        let fits = [MAX_FEATURES as i64];
        let l = layout(
            &[sig("x", &fits), sig("y", &[1])],
            &[],
            SketchConfig::default(),
        );
        assert_eq!(
            l.inputs,
            [(0, MAX_FEATURES)],
            "the cap is inclusive; y would pass it"
        );
    }
}
