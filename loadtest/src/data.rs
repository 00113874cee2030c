//! Random tensor contents in the protocol's raw little-endian layout, within the input's type:
//! floats uniform in `[lo, hi)` (default `[0, 1)`), integers small (`[0, 10)`, or the given
//! range truncated and clamped to the type), BOOL 0/1, BYTES short lowercase strings, each
//! prefixed by its 4-byte little-endian length.

use bytes::Bytes;
use kiln_proto::datatype::Datatype;
use rand::Rng;

use crate::config::InputRange;

/// The default range of floating-point inputs.
pub const FLOAT_RANGE: InputRange = InputRange { lo: 0.0, hi: 1.0 };
/// The default range of integer inputs.
pub const INT_RANGE: InputRange = InputRange { lo: 0.0, hi: 10.0 };

/// `count` random elements of `datatype` as raw bytes.
pub fn random_raw(
    datatype: Datatype,
    count: usize,
    range: Option<InputRange>,
    rng: &mut impl Rng,
) -> Bytes {
    let float = range.unwrap_or(FLOAT_RANGE);
    let int = range.unwrap_or(INT_RANGE);
    let mut out = Vec::with_capacity(count * datatype.size().unwrap_or(12));
    for _ in 0..count {
        let mut f = || -> f64 { rng.random_range(float.lo..float.hi) };
        match datatype {
            Datatype::Fp32 => out.extend((f() as f32).to_le_bytes()),
            Datatype::Fp64 => out.extend(f().to_le_bytes()),
            Datatype::Fp16 => out.extend(f32_to_f16(f() as f32).to_le_bytes()),
            Datatype::Bf16 => out.extend((((f() as f32).to_bits() >> 16) as u16).to_le_bytes()),
            Datatype::Bool => out.push(u8::from(rng.random_bool(0.5))),
            Datatype::Bytes => {
                let len = rng.random_range(4..=12usize);
                out.extend((len as u32).to_le_bytes());
                out.extend((0..len).map(|_| rng.random_range(b'a'..=b'z')));
            }
            int_type => {
                let v = rng.random_range(int.lo..int.hi).floor();
                push_int(&mut out, int_type, v);
            }
        }
    }
    out.into()
}

/// Appends the number `v` as one element of `datatype` (floats rounded to the type, integers
/// truncated and clamped to the type's range, BOOL nonzero → 1); BYTES is not a number type.
pub fn push_value(out: &mut Vec<u8>, datatype: Datatype, v: f64) {
    match datatype {
        Datatype::Fp32 => out.extend((v as f32).to_le_bytes()),
        Datatype::Fp64 => out.extend(v.to_le_bytes()),
        Datatype::Fp16 => out.extend(f32_to_f16(v as f32).to_le_bytes()),
        Datatype::Bf16 => out.extend((((v as f32).to_bits() >> 16) as u16).to_le_bytes()),
        Datatype::Bool => out.push(u8::from(v != 0.0)),
        Datatype::Bytes => unreachable!("BYTES is not a number type"),
        int_type => push_int(out, int_type, v.trunc()),
    }
}

/// Appends `v` (an integral value) as `datatype`, clamped to the type's range.
fn push_int(out: &mut Vec<u8>, datatype: Datatype, v: f64) {
    // `as` from f64 saturates at the integer type's bounds.
    match datatype {
        Datatype::Int8 => out.extend((v as i8).to_le_bytes()),
        Datatype::Int16 => out.extend((v as i16).to_le_bytes()),
        Datatype::Int32 => out.extend((v as i32).to_le_bytes()),
        Datatype::Int64 => out.extend((v as i64).to_le_bytes()),
        Datatype::Uint8 => out.extend((v as u8).to_le_bytes()),
        Datatype::Uint16 => out.extend((v as u16).to_le_bytes()),
        Datatype::Uint32 => out.extend((v as u32).to_le_bytes()),
        Datatype::Uint64 => out.extend((v as u64).to_le_bytes()),
        other => unreachable!("{other} is not an integer type"),
    }
}

/// IEEE half precision of `x` (round toward zero; overflow to infinity, tiny values to zero).
fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = bits & 0x007f_ffff;
    if x.is_nan() {
        sign | 0x7e00
    } else if exp >= 0x1f {
        sign | 0x7c00
    } else if exp <= 0 {
        if exp < -10 {
            sign
        } else {
            // Subnormal: shift the implicit leading one into the mantissa.
            sign | (((mantissa | 0x0080_0000) >> (14 - exp)) as u16)
        }
    } else {
        sign | ((exp as u16) << 10) | ((mantissa >> 13) as u16)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn values_stay_in_range_and_size() {
        let mut rng = StdRng::seed_from_u64(7);
        let raw = random_raw(Datatype::Fp32, 1000, None, &mut rng);
        assert_eq!(raw.len(), 4000);
        for c in raw.chunks_exact(4) {
            let v = f32::from_le_bytes(c.try_into().unwrap());
            assert!((0.0..1.0).contains(&v), "{v}");
        }
        let range = Some(InputRange { lo: -3.0, hi: 3.0 });
        let raw = random_raw(Datatype::Int64, 500, range, &mut rng);
        for c in raw.chunks_exact(8) {
            let v = i64::from_le_bytes(c.try_into().unwrap());
            assert!((-3..3).contains(&v), "{v}");
        }
        let raw = random_raw(Datatype::Uint8, 100, None, &mut rng);
        assert!(raw.iter().all(|b| *b < 10));
        let raw = random_raw(Datatype::Bool, 100, None, &mut rng);
        assert!(raw.iter().all(|b| *b <= 1));
    }

    #[test]
    fn bytes_are_length_prefixed() {
        let mut rng = StdRng::seed_from_u64(1);
        let raw = random_raw(Datatype::Bytes, 3, None, &mut rng);
        let mut rest = &raw[..];
        for _ in 0..3 {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!((4..=12).contains(&len));
            assert!(rest[4..4 + len].iter().all(u8::is_ascii_lowercase));
            rest = &rest[4 + len..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn half_precision() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(0.5), 0x3800);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(0.0), 0);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
    }
}
