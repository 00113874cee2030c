//! Host tensors: what crosses the boundary between the protocol and the runtime.
//!
//! The protocol carries tensors either as little-endian raw bytes (`raw_input_contents`) or as
//! typed repeated fields; both decode into a [`HostTensor`] here, with the byte length checked
//! against the shape, and results encode back the same two ways.

use kiln_proto::datatype::Datatype;

/// Element storage of a host tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// `FP32`
    F32(Vec<f32>),
    /// `FP64`
    F64(Vec<f64>),
    /// `INT32`
    I32(Vec<i32>),
    /// `INT64`
    I64(Vec<i64>),
    /// `UINT8`
    U8(Vec<u8>),
    /// `BOOL`
    Bool(Vec<bool>),
    /// `BYTES`: one byte string per element.
    Bytes(Vec<Vec<u8>>),
}

impl HostData {
    /// The protocol datatypes a host tensor carries (and so a model's inputs and outputs may
    /// have), as a list for messages.
    pub const DATATYPES: &str = "BOOL, UINT8, INT32, INT64, FP32, FP64, BYTES";

    /// Whether a host tensor can carry elements of `datatype`.
    pub fn carries(datatype: Datatype) -> bool {
        matches!(
            datatype,
            Datatype::Bool
                | Datatype::Uint8
                | Datatype::Int32
                | Datatype::Int64
                | Datatype::Fp32
                | Datatype::Fp64
                | Datatype::Bytes
        )
    }
}

/// A tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, row-major.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: HostData,
}

/// Why bytes do not decode into a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The byte count does not match shape × element size.
    #[error("expected {expected} bytes for shape {shape:?} of {datatype}, got {actual}")]
    Length {
        /// Datatype.
        datatype: Datatype,
        /// Shape.
        shape: Vec<usize>,
        /// Required bytes.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// The datatype is not supported by the runtime.
    #[error("datatype {0} is not supported")]
    Unsupported(Datatype),
    /// Malformed BYTES encoding.
    #[error("malformed BYTES tensor: {0}")]
    Bytes(String),
}

impl HostTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            HostData::F32(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::U8(v) => v.len(),
            HostData::Bool(v) => v.len(),
            HostData::Bytes(v) => v.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The protocol datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        match &self.data {
            HostData::F32(_) => Datatype::Fp32,
            HostData::F64(_) => Datatype::Fp64,
            HostData::I32(_) => Datatype::Int32,
            HostData::I64(_) => Datatype::Int64,
            HostData::U8(_) => Datatype::Uint8,
            HostData::Bool(_) => Datatype::Bool,
            HostData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// Decodes little-endian raw bytes (the protocol's `raw_input_contents`).
    pub fn from_raw(datatype: Datatype, shape: Vec<usize>, raw: &[u8]) -> Result<Self, CodecError> {
        let count: usize = shape.iter().product();
        if datatype == Datatype::Bytes {
            let items = decode_bytes(raw)?;
            if items.len() != count {
                return Err(CodecError::Bytes(format!(
                    "{} strings for shape {shape:?}",
                    items.len()
                )));
            }
            return Ok(Self {
                shape,
                data: HostData::Bytes(items),
            });
        }
        let size = datatype.size().unwrap_or(1);
        let expected = count.saturating_mul(size);
        if raw.len() != expected {
            return Err(CodecError::Length {
                datatype,
                shape,
                expected,
                actual: raw.len(),
            });
        }
        fn le<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            raw.chunks_exact(N)
                .map(|c| f(c.try_into().expect("exact chunk")))
                .collect()
        }
        let data = match datatype {
            Datatype::Fp32 => HostData::F32(le(raw, f32::from_le_bytes)),
            Datatype::Fp64 => HostData::F64(le(raw, f64::from_le_bytes)),
            Datatype::Int32 => HostData::I32(le(raw, i32::from_le_bytes)),
            Datatype::Int64 => HostData::I64(le(raw, i64::from_le_bytes)),
            Datatype::Uint8 => HostData::U8(raw.to_vec()),
            Datatype::Bool => HostData::Bool(raw.iter().map(|b| *b != 0).collect()),
            other => return Err(CodecError::Unsupported(other)),
        };
        Ok(Self { shape, data })
    }

    /// Encodes as little-endian raw bytes (the protocol's `raw_output_contents`).
    pub fn to_raw(&self) -> Vec<u8> {
        match &self.data {
            HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::U8(v) => v.clone(),
            HostData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
            HostData::Bytes(v) => {
                let mut out = Vec::new();
                for item in v {
                    out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                    out.extend_from_slice(item);
                }
                out
            }
        }
    }
}

/// Splits the protocol's BYTES encoding: each element is a 4-byte little-endian length + bytes.
fn decode_bytes(mut raw: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut items = Vec::new();
    while !raw.is_empty() {
        if raw.len() < 4 {
            return Err(CodecError::Bytes("truncated length prefix".into()));
        }
        let n = u32::from_le_bytes(raw[..4].try_into().expect("4 bytes")) as usize;
        raw = &raw[4..];
        if raw.len() < n {
            return Err(CodecError::Bytes("element longer than the buffer".into()));
        }
        items.push(raw[..n].to_vec());
        raw = &raw[n..];
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_and_length_check() {
        let t = HostTensor {
            shape: vec![2, 2],
            data: HostData::F32(vec![1.0, -2.5, 3.25, 0.0]),
        };
        let raw = t.to_raw();
        assert_eq!(
            HostTensor::from_raw(Datatype::Fp32, vec![2, 2], &raw).unwrap(),
            t
        );
        let err = HostTensor::from_raw(Datatype::Fp32, vec![2, 3], &raw).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Length {
                expected: 24,
                actual: 16,
                ..
            }
        ));
        let ints = HostTensor {
            shape: vec![3],
            data: HostData::I64(vec![-1, 0, 7]),
        };
        assert_eq!(
            HostTensor::from_raw(Datatype::Int64, vec![3], &ints.to_raw()).unwrap(),
            ints
        );
    }

    #[test]
    fn bytes_round_trip() {
        let t = HostTensor {
            shape: vec![2],
            data: HostData::Bytes(vec![b"ab".to_vec(), b"".to_vec()]),
        };
        assert_eq!(
            HostTensor::from_raw(Datatype::Bytes, vec![2], &t.to_raw()).unwrap(),
            t
        );
        assert!(HostTensor::from_raw(Datatype::Bytes, vec![1], &[9, 0, 0, 0, 1]).is_err());
    }
}
