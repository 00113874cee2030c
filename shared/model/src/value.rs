//! Run-time values of the interpreter.
//!
//! burn tensors carry their rank in the type (`Tensor<D>`), while an ONNX graph learns ranks only
//! at run time. [`Float`] closes that gap: an enum over ranks 1..=6 plus the logical shape (so a
//! rank-0 ONNX scalar is a one-element burn tensor with an empty logical shape). The `ranked!`
//! macros apply one generic expression to whichever rank is present.
//!
//! Integer tensors ([`Int`]) stay on the host: in inference graphs they are shapes, indices and
//! class labels — small, and consumed by host-side logic (Reshape targets, label lookup). Moving
//! them to the device would buy nothing and cost a round trip.
//!
//! Booleans ([`Bool`]) follow the same host policy: in the graphs Kiln serves they are masks built
//! from shapes and small comparisons, consumed by `Where`/`Not`. Comparing two *float* tensors
//! (`Equal`/`Less`/`Greater`) therefore downloads them; `Where` uploads its mask once. A graph that
//! compares large activations pays that round trip — revisit with a device-side bool kind if a
//! served model needs it.
//!
//! Strings ([`Str`]) exist for class labels (`ai.onnx.ml` classifiers with `classlabels_strings`):
//! host-only, moved by the layout ops (Identity, Reshape, Flatten, Squeeze, Unsqueeze, Slice,
//! Transpose, Expand, ArrayFeatureExtractor); every numeric op refuses them with an error naming the
//! kind.

use burn::tensor::{Device, Tensor, TensorData};

/// Highest tensor rank the interpreter runs.
pub const MAX_RANK: usize = 6;

/// A float tensor of run-time rank on a burn device.
#[derive(Clone, Debug)]
pub enum Ranked {
    /// Rank 1.
    R1(Tensor<1>),
    /// Rank 2.
    R2(Tensor<2>),
    /// Rank 3.
    R3(Tensor<3>),
    /// Rank 4.
    R4(Tensor<4>),
    /// Rank 5.
    R5(Tensor<5>),
    /// Rank 6.
    R6(Tensor<6>),
}

/// Applies `$body` (an expression over the bound tensor `$t`) at whatever rank `$v` has, and
/// wraps the result back at the same rank.
macro_rules! map_ranked {
    ($v:expr, $t:ident => $body:expr) => {
        match $v {
            $crate::value::Ranked::R1($t) => $crate::value::Ranked::R1($body),
            $crate::value::Ranked::R2($t) => $crate::value::Ranked::R2($body),
            $crate::value::Ranked::R3($t) => $crate::value::Ranked::R3($body),
            $crate::value::Ranked::R4($t) => $crate::value::Ranked::R4($body),
            $crate::value::Ranked::R5($t) => $crate::value::Ranked::R5($body),
            $crate::value::Ranked::R6($t) => $crate::value::Ranked::R6($body),
        }
    };
}

/// Applies `$body` to two tensors of the same rank (callers align ranks first).
macro_rules! zip_ranked {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr) => {
        match ($a, $b) {
            ($crate::value::Ranked::R1($x), $crate::value::Ranked::R1($y)) => {
                $crate::value::Ranked::R1($body)
            }
            ($crate::value::Ranked::R2($x), $crate::value::Ranked::R2($y)) => {
                $crate::value::Ranked::R2($body)
            }
            ($crate::value::Ranked::R3($x), $crate::value::Ranked::R3($y)) => {
                $crate::value::Ranked::R3($body)
            }
            ($crate::value::Ranked::R4($x), $crate::value::Ranked::R4($y)) => {
                $crate::value::Ranked::R4($body)
            }
            ($crate::value::Ranked::R5($x), $crate::value::Ranked::R5($y)) => {
                $crate::value::Ranked::R5($body)
            }
            ($crate::value::Ranked::R6($x), $crate::value::Ranked::R6($y)) => {
                $crate::value::Ranked::R6($body)
            }
            _ => unreachable!("ranks are aligned before zipping"),
        }
    };
}

/// Evaluates `$body` (any result type) at whatever rank `$v` has.
macro_rules! with_ranked {
    ($v:expr, $t:ident => $body:expr) => {
        match $v {
            $crate::value::Ranked::R1($t) => $body,
            $crate::value::Ranked::R2($t) => $body,
            $crate::value::Ranked::R3($t) => $body,
            $crate::value::Ranked::R4($t) => $body,
            $crate::value::Ranked::R5($t) => $body,
            $crate::value::Ranked::R6($t) => $body,
        }
    };
}

pub(crate) use {map_ranked, with_ranked, zip_ranked};

/// A float tensor with its logical ONNX shape.
#[derive(Clone, Debug)]
pub struct Float {
    /// The tensor; its rank is `max(1, shape.len())`.
    pub t: Ranked,
    /// Logical shape; empty for a scalar.
    pub shape: Vec<usize>,
}

/// A tensor in host memory, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Host<T> {
    /// Logical shape; empty for a scalar.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: Vec<T>,
}

/// An integer tensor (INT64/INT32) in host memory.
pub type Int = Host<i64>;

/// A boolean tensor in host memory.
pub type Bool = Host<bool>;

/// A string tensor (ONNX STRING, protocol BYTES) in host memory: one byte string per element.
pub type Str = Host<Vec<u8>>;

/// A value flowing along a graph edge.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // values are moved rarely; boxing would add an allocation per op
pub enum Value {
    /// FP32 on the device.
    Float(Float),
    /// INT64/INT32 on the host.
    Int(Int),
    /// BOOL on the host.
    Bool(Bool),
    /// STRING on the host (class labels); only label-shaped ops accept it.
    Str(Str),
}

/// Reshapes a rank-1 tensor to the given dims (rank 1..=6).
fn from_flat(t: Tensor<1>, dims: &[usize]) -> Result<Ranked, String> {
    if dims.contains(&0) {
        // burn's reshape reads 0 as "copy the input dim": build empty tensors directly.
        let dev = t.device();
        let empty = |d: &[usize]| TensorData::new(Vec::<f32>::new(), d.to_vec());
        return Ok(match dims.len() {
            1 => Ranked::R1(Tensor::from_data(empty(dims), &dev)),
            2 => Ranked::R2(Tensor::from_data(empty(dims), &dev)),
            3 => Ranked::R3(Tensor::from_data(empty(dims), &dev)),
            4 => Ranked::R4(Tensor::from_data(empty(dims), &dev)),
            5 => Ranked::R5(Tensor::from_data(empty(dims), &dev)),
            6 => Ranked::R6(Tensor::from_data(empty(dims), &dev)),
            r => return Err(format!("rank {r} exceeds the supported {MAX_RANK}")),
        });
    }
    Ok(match dims.len() {
        0 | 1 => Ranked::R1(t.reshape([dims.first().copied().unwrap_or(1)])),
        2 => Ranked::R2(t.reshape([dims[0], dims[1]])),
        3 => Ranked::R3(t.reshape([dims[0], dims[1], dims[2]])),
        4 => Ranked::R4(t.reshape([dims[0], dims[1], dims[2], dims[3]])),
        5 => Ranked::R5(t.reshape([dims[0], dims[1], dims[2], dims[3], dims[4]])),
        6 => Ranked::R6(t.reshape([dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]])),
        r => return Err(format!("rank {r} exceeds the supported {MAX_RANK}")),
    })
}

impl Float {
    /// Uploads host floats with the given logical shape.
    pub fn from_host(data: Vec<f32>, shape: Vec<usize>, device: &Device) -> Result<Self, String> {
        let n = data.len();
        if shape.iter().product::<usize>() != n {
            return Err(format!("{n} elements do not fill shape {shape:?}"));
        }
        let flat = Tensor::<1>::from_data(TensorData::new(data, [n]), device);
        Ok(Self {
            t: from_flat(flat, &shape)?,
            shape,
        })
    }

    /// Downloads the elements, row-major.
    pub fn to_host(&self) -> Result<Vec<f32>, String> {
        let data = with_ranked!(self.t.clone(), t => t.into_data());
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("cannot read tensor: {e:?}"))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Flattens to rank 1.
    pub fn flat(&self) -> Tensor<1> {
        let n = self.len().max(1);
        with_ranked!(self.t.clone(), t => t.reshape([n]))
    }

    /// A view with another shape of the same element count (metadata only when contiguous).
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Self, String> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(format!("cannot reshape {:?} to {shape:?}", self.shape));
        }
        Ok(Self {
            t: from_flat(self.flat(), &shape)?,
            shape,
        })
    }

    /// The same tensor at burn rank `rank` (≥ its own), with leading 1s: numpy-style alignment.
    pub fn at_rank(&self, rank: usize) -> Result<Ranked, String> {
        let mut dims = vec![1; rank.saturating_sub(self.shape.len())];
        dims.extend_from_slice(&self.shape);
        if dims.len() == self.t_rank() {
            return Ok(self.t.clone());
        }
        from_flat(self.flat(), &dims)
    }

    /// The burn rank of the stored tensor.
    pub fn t_rank(&self) -> usize {
        with_ranked!(&self.t, t => t.dims().len())
    }

    /// Wraps a burn result whose logical shape is its burn shape.
    pub fn from_ranked(t: Ranked) -> Self {
        let shape = with_ranked!(&t, x => x.dims().to_vec());
        Self { t, shape }
    }
}

/// Most elements an operator may make from sizes it reads out of tensor values (`Range`,
/// `ConstantOfShape`, `Expand`, broadcasting, `Pad`): 2^28 (1 GiB of FP32). Those sizes can come
/// from request data, and an allocation that fails aborts the process, so the graph fails with
/// an error instead. Inputs are bounded before the model runs (`--max-message-bytes`).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The element count of `dims`, or an error naming `op` when it passes [`MAX_ELEMENTS`].
pub fn check_elements(op: &str, dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            format!("{op} would make a tensor of shape {dims:?}, over {MAX_ELEMENTS} elements")
        })
}

/// The numpy broadcast of two shapes, or an error naming both.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let off = rank - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect::<Result<Vec<usize>, String>>()
        .and_then(|shape| check_elements("broadcasting", &shape).map(|_| shape))
}

/// Normalizes a possibly negative ONNX axis against `rank`.
pub fn axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r.max(1)).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} out of range for rank {rank}"))
    }
}

impl Int {
    /// A rank-1 integer tensor.
    pub fn vector(data: Vec<i64>) -> Self {
        Self {
            shape: vec![data.len()],
            data,
        }
    }
}

impl Value {
    /// Bytes the value's elements occupy (4 per float, 8 per int, 1 per bool, the strings'
    /// lengths), without container overhead.
    pub fn bytes(&self) -> usize {
        match self {
            Value::Float(f) => f.shape.iter().product::<usize>() * 4,
            Value::Int(i) => i.shape.iter().product::<usize>() * 8,
            Value::Bool(b) => b.shape.iter().product::<usize>(),
            Value::Str(s) => s.data.iter().map(Vec::len).sum(),
        }
    }

    /// Short type name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Float(_) => "float",
            Value::Int(_) => "int",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
        }
    }

    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Float(f) => &f.shape,
            Value::Int(i) => &i.shape,
            Value::Bool(b) => &b.shape,
            Value::Str(s) => &s.shape,
        }
    }

    /// The float tensor, or an error.
    pub fn float(&self) -> Result<&Float, String> {
        match self {
            Value::Float(f) => Ok(f),
            other => Err(format!("expected a float tensor, got {}", other.kind())),
        }
    }

    /// The bool tensor, or an error.
    pub fn bool(&self) -> Result<&Bool, String> {
        match self {
            Value::Bool(b) => Ok(b),
            other => Err(format!("expected a bool tensor, got {}", other.kind())),
        }
    }

    /// The string tensor, or an error.
    pub fn str(&self) -> Result<&Str, String> {
        match self {
            Value::Str(s) => Ok(s),
            other => Err(format!("expected a string tensor, got {}", other.kind())),
        }
    }

    /// The int tensor, or an error.
    pub fn int(&self) -> Result<&Int, String> {
        match self {
            Value::Int(i) => Ok(i),
            other => Err(format!("expected an integer tensor, got {}", other.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shape(&[4, 1, 5], &[3, 1]).unwrap(), vec![4, 3, 5]);
        assert_eq!(broadcast_shape(&[], &[2]).unwrap(), vec![2]);
        assert!(broadcast_shape(&[2, 3], &[2]).is_err());
        // Two modest vectors may not broadcast into a huge matrix.
        let err = broadcast_shape(&[1 << 15, 1], &[1, 1 << 15]).unwrap_err();
        assert!(err.contains("over 268435456 elements"), "{err}");
    }

    #[test]
    fn element_counts_are_checked_against_the_cap() {
        assert_eq!(check_elements("op", &[2, 3]), Ok(6));
        assert_eq!(check_elements("op", &[]), Ok(1));
        assert_eq!(check_elements("op", &[MAX_ELEMENTS]), Ok(MAX_ELEMENTS));
        assert!(
            check_elements("Range", &[MAX_ELEMENTS + 1])
                .unwrap_err()
                .starts_with("Range")
        );
        assert!(check_elements("op", &[usize::MAX, 2]).is_err(), "overflow");
    }

    #[test]
    fn axes_normalize() {
        assert_eq!(axis(-1, 3).unwrap(), 2);
        assert_eq!(axis(0, 0).unwrap(), 0);
        assert!(axis(3, 3).is_err());
    }

    #[test]
    fn floats_round_trip_through_the_device() {
        let dev = Device::flex();
        let f = Float::from_host(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2, 3], &dev).unwrap();
        assert_eq!(f.t_rank(), 2);
        let r = f.reshape(vec![3, 2]).unwrap();
        assert_eq!(r.to_host().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for dims in [vec![0, 5, 6], vec![4, 0, 6], vec![4, 5, 0]] {
            let e = Float::from_host(vec![], dims.clone(), &dev).unwrap();
            assert_eq!(e.to_host().unwrap().len(), 0, "{dims:?}");
        }
        let s = Float::from_host(vec![7.0], vec![], &dev).unwrap();
        assert_eq!(s.t_rank(), 1);
        assert!(s.shape.is_empty());
        assert_eq!(
            f.at_rank(4).map(|t| with_ranked!(t, x => x.dims().len())),
            Ok(4)
        );
    }
}
