//! A small `.npy` reader (NumPy's format, versions 1–3): little-endian `f4`, `f8`, `i1`,
//! `i2`, `i4`, `i8`, `u1`, `u2`, `u4`, `u8` and `b1` arrays in C order, read as `f64` rows
//! along the first axis (a 1-D array is one value per row). Written here rather than pulling a
//! crate: the header is a short Python dict literal and only these dtypes matter.

use anyhow::{Context, bail, ensure};

/// An array read from `.npy`: its shape and its values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Every value, converted to `f64`.
    pub values: Vec<f64>,
}

impl Npy {
    /// The rows along the first axis.
    pub fn rows(&self) -> Vec<Vec<f64>> {
        let per_row: usize = self.shape.iter().skip(1).product();
        if per_row == 0 {
            return Vec::new();
        }
        self.values.chunks(per_row).map(<[f64]>::to_vec).collect()
    }
}

/// The value of `key` in the header dict (`'descr': '<f4'` → `'<f4'`), up to the next top-level
/// comma or brace.
fn field<'a>(header: &'a str, key: &str) -> anyhow::Result<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .with_context(|| format!("the .npy header has no {key:?}"))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .context("malformed .npy header")?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .context("malformed .npy header")?;
    Ok(rest[..end].trim())
}

/// Parses a whole `.npy` file.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Npy> {
    ensure!(
        bytes.starts_with(b"\x93NUMPY") && bytes.len() >= 10,
        "not a .npy file"
    );
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated .npy header");
            (u32::from_le_bytes(bytes[8..12].try_into()?) as usize, 12)
        }
        v => bail!(".npy version {v} is not supported"),
    };
    let header = bytes
        .get(start..start + len)
        .context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let descr = field(header, "descr")?.trim_matches(['\'', '"']);
    ensure!(
        field(header, "fortran_order")? == "False",
        "Fortran-order .npy arrays are not supported"
    );
    let shape: Vec<usize> = field(header, "shape")?
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .with_context(|| format!("shape entry {d:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let data = &bytes[start + len..];
    let count: usize = shape.iter().product();
    let (size, read): (usize, fn(&[u8]) -> f64) = match descr {
        "<f4" => (4, |b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
        "<f8" => (8, |b| f64::from_le_bytes(b.try_into().unwrap())),
        "|i1" => (1, |b| b[0] as i8 as f64),
        "<i2" => (2, |b| i16::from_le_bytes(b.try_into().unwrap()) as f64),
        "<i4" => (4, |b| i32::from_le_bytes(b.try_into().unwrap()) as f64),
        "<i8" => (8, |b| i64::from_le_bytes(b.try_into().unwrap()) as f64),
        "|u1" | "|b1" => (1, |b| b[0] as f64),
        "<u2" => (2, |b| u16::from_le_bytes(b.try_into().unwrap()) as f64),
        "<u4" => (4, |b| u32::from_le_bytes(b.try_into().unwrap()) as f64),
        "<u8" => (8, |b| u64::from_le_bytes(b.try_into().unwrap()) as f64),
        other => bail!(".npy dtype {other:?} is not supported (little-endian numbers only)"),
    };
    ensure!(
        data.len() >= count * size,
        ".npy data is shorter than its shape {shape:?}"
    );
    let values = data[..count * size].chunks_exact(size).map(read).collect();
    Ok(Npy { shape, values })
}

/// Writes `values` of `shape` as a version-1 `<f4` or `<f8` `.npy` (for tests and tools).
pub fn write(shape: &[usize], values: &[f64], f32_values: bool) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let dims = match dims.len() {
        1 => format!("{},", dims[0]),
        _ => dims.join(", "),
    };
    let descr = if f32_values { "<f4" } else { "<f8" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // Pad with spaces to a 64-byte boundary, ending in a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in values {
        if f32_values {
            out.extend((*v as f32).to_le_bytes());
        } else {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_numpys_own_bytes() {
        let values: Vec<f64> = (0..6).map(f64::from).collect();
        for f32_values in [true, false] {
            let npy = parse(&write(&[3, 2], &values, f32_values)).unwrap();
            assert_eq!(npy.shape, [3, 2]);
            assert_eq!(npy.rows(), [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]);
        }
        // np.save(f, np.array([7, -1], dtype=np.int64)) as NumPy writes it.
        let mut numpy = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }";
        numpy.extend(format!("{header:<117}\n").as_bytes());
        numpy.extend(7i64.to_le_bytes());
        numpy.extend((-1i64).to_le_bytes());
        let npy = parse(&numpy).unwrap();
        assert_eq!(npy.rows(), [[7.0], [-1.0]]);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse(b"PK\x03\x04").is_err());
        let mut big_endian = write(&[1], &[1.0], false);
        let at = big_endian.windows(3).position(|w| w == b"<f8").unwrap();
        big_endian[at] = b'>';
        assert!(parse(&big_endian).is_err());
        let mut short = write(&[4], &[1.0, 2.0, 3.0, 4.0], true);
        short.truncate(short.len() - 1);
        assert!(parse(&short).is_err());
    }
}
