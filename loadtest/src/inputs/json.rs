//! perf_analyzer's `--input-data` JSON:
//!
//! ```text
//! {"data": [{"INPUT0": [1, 2, 3, 4], "INPUT1": {"content": [[1, 2], [3, 4]], "shape": [2, 2]},
//!            "INPUT2": {"b64": "AACAPw=="}, "TEXT": ["hello"]}, ...],
//!  "validation_data": [{"OUTPUT0": [2, 4, 6, 8]}, ...]}
//! ```
//!
//! Each `data` entry is one row (one item of a batch): per input a (possibly nested, flattened
//! here) array of numbers, booleans or strings (BYTES), or `{"content": [...], "shape":
//! [...]}` (the shape sets the item's dims), or `{"b64": "..."}` (the item's raw bytes). A
//! `validation_data` entry holds the expected outputs of the same row. Streams (`data` entries
//! that are arrays, for sequence models) are not supported.

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::Value;

use crate::inputs::{Expected, Item, Row};

/// The rows and the expected outputs of a perf_analyzer JSON document.
pub fn parse(text: &str) -> anyhow::Result<(Vec<Row>, Vec<Expected>)> {
    let root: Value = serde_json::from_str(text).context("input data is not JSON")?;
    let rows = match root.get("data") {
        Some(Value::Array(entries)) => entries
            .iter()
            .enumerate()
            .map(|(i, e)| row(e).with_context(|| format!("data[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        Some(_) => bail!("\"data\" must be an array"),
        None => Vec::new(),
    };
    let expected = match root.get("validation_data") {
        Some(v) => expected(v)?,
        None => Vec::new(),
    };
    Ok((rows, expected))
}

/// Expected outputs: a `validation_data` array (or a document holding one).
pub fn expected(v: &Value) -> anyhow::Result<Vec<Expected>> {
    let entries = match v {
        Value::Array(entries) => entries,
        Value::Object(o) if o.contains_key("validation_data") => {
            return expected(&o["validation_data"]);
        }
        _ => bail!("\"validation_data\" must be an array"),
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let row = row(e).with_context(|| format!("validation_data[{i}]"))?;
            row.into_iter()
                .map(|(name, item)| match item {
                    Item::Numbers { values, .. } => Ok((name, values)),
                    _ => bail!("validation_data[{i}].{name}: only numbers can be validated"),
                })
                .collect()
        })
        .collect()
}

fn row(entry: &Value) -> anyhow::Result<Row> {
    let Value::Object(tensors) = entry else {
        bail!("expected an object of tensors (streams of sequence data are not supported)");
    };
    tensors
        .iter()
        .map(|(name, spec)| Ok((name.clone(), item(spec).with_context(|| name.clone())?)))
        .collect()
}

fn item(spec: &Value) -> anyhow::Result<Item> {
    match spec {
        Value::Object(o) => {
            if let Some(b64) = o.get("b64") {
                let text = b64.as_str().context("\"b64\" must be a string")?;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .context("invalid base64")?;
                return Ok(Item::Raw(raw.into()));
            }
            let content = o
                .get("content")
                .context("expected \"content\" or \"b64\"")?;
            let shape = match o.get("shape") {
                Some(s) => Some(
                    s.as_array()
                        .context("\"shape\" must be an array")?
                        .iter()
                        .map(|d| d.as_i64().context("\"shape\" entries are integers"))
                        .collect::<anyhow::Result<Vec<i64>>>()?,
                ),
                None => None,
            };
            match item(content)? {
                Item::Numbers { values, .. } => Ok(Item::Numbers { values, shape }),
                Item::Strings(s) => Ok(Item::Strings(s)),
                raw => Ok(raw),
            }
        }
        _ => {
            let mut flat = Vec::new();
            flatten(spec, &mut flat);
            if flat.iter().all(|v| v.is_string()) && !flat.is_empty() {
                let strings = flat.iter().filter_map(|v| v.as_str().map(String::from));
                return Ok(Item::Strings(strings.collect()));
            }
            let values = flat
                .iter()
                .map(|v| match v {
                    Value::Number(n) => n.as_f64().context("a number out of range"),
                    Value::Bool(b) => Ok(f64::from(u8::from(*b))),
                    other => bail!("expected numbers, got {other}"),
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            Ok(Item::Numbers {
                values,
                shape: None,
            })
        }
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_analyzers_forms() {
        let text = r#"{"data": [
            {"x": [[1, 2], [3, 4]], "t": ["hi"], "r": {"b64": "AACAPw=="}},
            {"x": {"content": [5, 6, 7, 8], "shape": [2, 2]}, "t": ["yo"], "r": {"b64": ""}}
        ], "validation_data": [{"y": [2, 4, 6, 8]}, {"y": [10, 12, 14, 16]}]}"#;
        let (rows, expected) = parse(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0]["x"],
            Item::Numbers {
                values: vec![1.0, 2.0, 3.0, 4.0],
                shape: None
            }
        );
        assert_eq!(
            rows[1]["x"],
            Item::Numbers {
                values: vec![5.0, 6.0, 7.0, 8.0],
                shape: Some(vec![2, 2])
            }
        );
        assert_eq!(rows[0]["t"], Item::Strings(vec!["hi".into()]));
        assert_eq!(rows[0]["r"], Item::Raw(1f32.to_le_bytes().to_vec().into()));
        assert_eq!(expected[1]["y"], [10.0, 12.0, 14.0, 16.0]);

        assert!(parse(r#"{"data": [[{"x": [1]}]]}"#).is_err(), "streams");
        assert!(parse(r#"{"data": [{"x": {"b64": "!!"}}]}"#).is_err());
        assert!(parse(r#"{"data": [{"x": [1, "a"]}]}"#).is_err());
    }
}
