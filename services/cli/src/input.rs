//! Inputs of `kiln predict`: parsing what the user typed, fitting it to the model's input shape,
//! encoding it as raw little-endian tensor bytes, and decoding the outputs that come back.
//!
//! Accepted text: numbers separated by commas and/or whitespace (`1,2,3` or `1 2 3`), or a JSON
//! array, possibly nested (a list of rows is a batch), or a JSON object whose `inputs` field is
//! such an array (the layout of `models/digits/testdata/heldout.json`).

use anyhow::{Context, bail, ensure};
use rand::Rng;

/// Values read from the user, with the number of rows when the input was a list of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// Every number, row after row.
    pub data: Vec<f64>,
    /// Rows (batch items) when the input was a JSON list of lists; `None` for a flat list.
    pub rows: Option<usize>,
}

/// Parses input text (see the module docs for the formats).
pub fn parse_values(text: &str) -> anyhow::Result<Values> {
    let text = text.trim();
    ensure!(!text.is_empty(), "the input is empty");
    if text.starts_with('[') || text.starts_with('{') {
        let json: serde_json::Value =
            serde_json::from_str(text).context("the input is not valid JSON")?;
        let array = match &json {
            serde_json::Value::Object(o) => o
                .get("inputs")
                .context("a JSON object input needs an \"inputs\" array")?,
            other => other,
        };
        let serde_json::Value::Array(items) = array else {
            bail!("the JSON input must be an array of numbers or of rows");
        };
        let rows = items
            .iter()
            .all(|v| v.is_array())
            .then_some(items.len())
            .filter(|n| *n > 0);
        let mut data = Vec::new();
        flatten(array, &mut data)?;
        ensure!(!data.is_empty(), "the input has no values");
        return Ok(Values { data, rows });
    }
    let data = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>()
                .with_context(|| format!("{s:?} is not a number"))
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(Values { data, rows: None })
}

fn flatten(v: &serde_json::Value, out: &mut Vec<f64>) -> anyhow::Result<()> {
    match v {
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().context("number out of range")?);
            Ok(())
        }
        serde_json::Value::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        other => bail!("{other} is not a number"),
    }
}

/// Keeps only the first `n` rows of a batch.
pub fn first_rows(values: Values, n: usize) -> anyhow::Result<Values> {
    let Some(rows) = values.rows else {
        bail!("--rows needs an input made of rows (a JSON list of lists)");
    };
    let n = n.min(rows);
    ensure!(n > 0, "--rows must be at least 1");
    let per_row = values.data.len() / rows;
    Ok(Values {
        data: values.data[..n * per_row].to_vec(),
        rows: Some(n),
    })
}

/// The request shape for `count` values given the model's input shape from ModelMetadata
/// (`[-1, ...]` when the model batches). A batched model gets as many rows as the values fill;
/// one other dimension may be -1 and is inferred.
pub fn fit_shape(model_shape: &[i64], count: usize) -> anyhow::Result<Vec<i64>> {
    ensure!(count > 0, "no input values");
    let batched = model_shape.first() == Some(&-1);
    let item = if batched {
        &model_shape[1..]
    } else {
        model_shape
    };
    let unknown = item.iter().filter(|d| **d < 0).count();
    ensure!(
        unknown <= 1,
        "input shape {model_shape:?} has several unknown dimensions; cannot infer it"
    );
    let known: usize = item
        .iter()
        .filter(|d| **d > 0)
        .map(|d| *d as usize)
        .product();
    let mut shape: Vec<i64> = item.to_vec();
    if unknown == 1 {
        // One free per-item dimension: a single item holding every value.
        ensure!(
            count.is_multiple_of(known),
            "{count} values do not fit the input shape {model_shape:?}"
        );
        let free = (count / known) as i64;
        shape.iter_mut().filter(|d| **d < 0).for_each(|d| *d = free);
        if batched {
            shape.insert(0, 1);
        }
        return Ok(shape);
    }
    if batched {
        ensure!(
            count.is_multiple_of(known),
            "{count} values are not a whole number of items of {known} values (input shape {model_shape:?})"
        );
        shape.insert(0, (count / known) as i64);
    } else {
        ensure!(
            count == known,
            "the input takes {known} values (shape {model_shape:?}), got {count}"
        );
    }
    Ok(shape)
}

/// `count` random values in `[0, 1)`, for a request without input.
pub fn random_values(count: usize) -> Values {
    let mut rng = rand::rng();
    Values {
        data: (0..count).map(|_| rng.random::<f64>()).collect(),
        rows: None,
    }
}

/// The number of values one item of `model_shape` takes, unknown dimensions counted as 1.
pub fn item_len(model_shape: &[i64]) -> usize {
    let item = if model_shape.first() == Some(&-1) {
        &model_shape[1..]
    } else {
        model_shape
    };
    item.iter().map(|d| (*d).max(1) as usize).product()
}

/// Encodes values as raw little-endian bytes of `datatype`.
pub fn encode(datatype: &str, data: &[f64]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() * 8);
    for &x in data {
        match datatype {
            "FP32" => out.extend_from_slice(&(x as f32).to_le_bytes()),
            "FP64" => out.extend_from_slice(&x.to_le_bytes()),
            "INT32" => out.extend_from_slice(&(x as i32).to_le_bytes()),
            "INT64" => out.extend_from_slice(&(x as i64).to_le_bytes()),
            "UINT8" => out.push(x as u8),
            "BOOL" => out.push(u8::from(x != 0.0)),
            other => bail!(
                "kiln predict cannot encode {other} inputs (FP32, FP64, INT32, INT64, UINT8, BOOL)"
            ),
        }
    }
    Ok(out)
}

/// Decodes raw little-endian output bytes of `datatype` into numbers.
pub fn decode(datatype: &str, raw: &[u8]) -> anyhow::Result<Vec<f64>> {
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N)
            .map(|c| c.try_into().expect("exact chunk"))
    }
    Ok(match datatype {
        "FP32" => chunks::<4>(raw)
            .map(|b| f64::from(f32::from_le_bytes(b)))
            .collect(),
        "FP64" => chunks::<8>(raw).map(f64::from_le_bytes).collect(),
        "INT32" => chunks::<4>(raw)
            .map(|b| f64::from(i32::from_le_bytes(b)))
            .collect(),
        "INT64" => chunks::<8>(raw)
            .map(|b| i64::from_le_bytes(b) as f64)
            .collect(),
        "UINT8" | "BOOL" => raw.iter().map(|b| f64::from(*b)).collect(),
        other => bail!("kiln predict cannot decode {other} outputs"),
    })
}

/// The `k` largest entries of `row` as `(index, value)`, largest first.
pub fn top_k(row: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut indexed: Vec<(usize, f64)> = row.iter().copied().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    indexed.truncate(k);
    indexed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_and_space_separated_numbers() {
        let v = parse_values("1, 2.5,-3  4e1\n5").unwrap();
        assert_eq!(v.data, [1.0, 2.5, -3.0, 40.0, 5.0]);
        assert_eq!(v.rows, None);
        assert!(parse_values("1,x").is_err());
        assert!(parse_values("   ").is_err());
    }

    #[test]
    fn parses_json_arrays_rows_and_objects() {
        assert_eq!(parse_values("[1, 2, 3]").unwrap().data, [1.0, 2.0, 3.0]);
        let v = parse_values("[[1,2],[3,4],[5,6]]").unwrap();
        assert_eq!(v.rows, Some(3));
        assert_eq!(v.data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let v = parse_values(r#"{"inputs": [[1,2],[3,4]], "labels": [0, 1]}"#).unwrap();
        assert_eq!(v.rows, Some(2));
        assert!(parse_values(r#"{"x": 1}"#).is_err());
        assert!(parse_values(r#"["a"]"#).is_err());
        assert!(parse_values("[1, 2").is_err());
        let two = first_rows(parse_values("[[1,2],[3,4],[5,6]]").unwrap(), 2).unwrap();
        assert_eq!((two.rows, two.data.len()), (Some(2), 4));
        assert!(first_rows(parse_values("1,2").unwrap(), 1).is_err());
    }

    #[test]
    fn reads_the_digits_test_data() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/digits/testdata/heldout.json"
        );
        let v = parse_values(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rows = v.rows.unwrap();
        assert_eq!(v.data.len(), rows * 64);
        assert_eq!(
            fit_shape(&[-1, 64], v.data.len()).unwrap(),
            [rows as i64, 64]
        );
    }

    #[test]
    fn fits_values_to_the_model_shape() {
        assert_eq!(fit_shape(&[-1, 4], 4).unwrap(), [1, 4]);
        assert_eq!(fit_shape(&[-1, 4], 12).unwrap(), [3, 4]);
        assert!(fit_shape(&[-1, 4], 6).is_err());
        assert_eq!(fit_shape(&[2, 3], 6).unwrap(), [2, 3]);
        assert!(fit_shape(&[2, 3], 5).is_err());
        assert_eq!(fit_shape(&[-1, 3, -1], 12).unwrap(), [1, 3, 4]);
        assert_eq!(
            fit_shape(&[-1], 5).unwrap(),
            [5],
            "scalar items: one per value"
        );
        assert!(fit_shape(&[-1, -1, -1], 4).is_err());
        assert!(fit_shape(&[-1, 4], 0).is_err());
        assert_eq!(item_len(&[-1, 8, 8]), 64);
        assert_eq!(random_values(item_len(&[-1, 64])).data.len(), 64);
    }

    #[test]
    fn encodes_and_decodes_raw_tensors() {
        let raw = encode("FP32", &[1.5, -2.0]).unwrap();
        assert_eq!(raw.len(), 8);
        assert_eq!(decode("FP32", &raw).unwrap(), [1.5, -2.0]);
        assert_eq!(
            decode("INT64", &encode("INT64", &[7.0, -1.0]).unwrap()).unwrap(),
            [7.0, -1.0]
        );
        assert_eq!(
            decode("FP64", &encode("FP64", &[0.1]).unwrap()).unwrap(),
            [0.1]
        );
        assert_eq!(
            decode("INT32", &encode("INT32", &[3.0]).unwrap()).unwrap(),
            [3.0]
        );
        assert!(encode("BYTES", &[1.0]).is_err());
        assert_eq!(top_k(&[0.1, 0.7, 0.2], 2), [(1, 0.7), (2, 0.2)]);
    }
}
