//! The protocol's tensor datatypes: the v2 strings (`"FP32"`), their sizes, and the
//! `model_config.DataType` enum values Triton's ModelConfig uses (`TYPE_FP32`).

use crate::inference::DataType as ConfigType;

/// A tensor element type of the Open Inference Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// `BOOL`, one byte per element.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BF16`.
    Bf16,
    /// `BYTES`: length-prefixed byte strings (4-byte little-endian length each).
    Bytes,
}

const ALL: [(Datatype, &str, ConfigType); 14] = [
    (Datatype::Bool, "BOOL", ConfigType::TypeBool),
    (Datatype::Uint8, "UINT8", ConfigType::TypeUint8),
    (Datatype::Uint16, "UINT16", ConfigType::TypeUint16),
    (Datatype::Uint32, "UINT32", ConfigType::TypeUint32),
    (Datatype::Uint64, "UINT64", ConfigType::TypeUint64),
    (Datatype::Int8, "INT8", ConfigType::TypeInt8),
    (Datatype::Int16, "INT16", ConfigType::TypeInt16),
    (Datatype::Int32, "INT32", ConfigType::TypeInt32),
    (Datatype::Int64, "INT64", ConfigType::TypeInt64),
    (Datatype::Fp16, "FP16", ConfigType::TypeFp16),
    (Datatype::Fp32, "FP32", ConfigType::TypeFp32),
    (Datatype::Fp64, "FP64", ConfigType::TypeFp64),
    (Datatype::Bf16, "BF16", ConfigType::TypeBf16),
    (Datatype::Bytes, "BYTES", ConfigType::TypeString),
];

impl Datatype {
    /// Parses a v2 datatype string (`"FP32"`); `None` if unknown.
    pub fn parse(s: &str) -> Option<Self> {
        ALL.iter()
            .find(|(_, name, _)| *name == s)
            .map(|(d, _, _)| *d)
    }

    /// The v2 datatype string.
    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(d, _, _)| *d == self)
            .map_or("", |(_, n, _)| n)
    }

    /// The ModelConfig enum value (`TYPE_FP32`, `TYPE_STRING` for BYTES).
    pub fn config_type(self) -> ConfigType {
        ALL.iter()
            .find(|(d, _, _)| *d == self)
            .map_or(ConfigType::TypeInvalid, |(_, _, c)| *c)
    }

    /// Bytes per element, `None` for variable-length `BYTES`.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
            Datatype::Bytes => return None,
        })
    }
}

impl std::fmt::Display for Datatype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_name() {
        for (d, name, cfg) in ALL {
            assert_eq!(Datatype::parse(name), Some(d));
            assert_eq!(d.as_str(), name);
            assert_eq!(d.config_type(), cfg);
        }
        assert_eq!(Datatype::parse("FLOAT"), None);
        assert_eq!(Datatype::Fp32.size(), Some(4));
        assert_eq!(Datatype::Bytes.size(), None);
    }
}
