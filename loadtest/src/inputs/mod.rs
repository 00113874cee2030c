//! Input data from files (`--input-data FILE`) instead of random values: perf_analyzer's JSON
//! ([`json`], which may also carry `validation_data`), `.npy` ([`npy`]: rows along the first
//! axis) or `.csv` ([`csv`]: one row per line). A row is one item; rows are batched in order
//! into requests of `--batch-size` (the last request wraps around to the first rows), and the
//! requests are cycled. `.npy` and `.csv` rows feed the model's first input; JSON rows name
//! their inputs. Expected outputs (for `--validate`) come from the JSON's `validation_data` or
//! from `--expected FILE` (`.npy` rows for the first output, or JSON `validation_data`), one per
//! row, in the same order.

pub mod csv;
pub mod json;
pub mod npy;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::model_infer_request::InferInputTensor;

use crate::data::push_value;
use crate::target::InputPlan;

/// One input's value in one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Numbers, in C order, with the item's dims if the data gives them.
    Numbers {
        /// The values.
        values: Vec<f64>,
        /// The item's dims (batch excluded).
        shape: Option<Vec<i64>>,
    },
    /// BYTES elements.
    Strings(Vec<String>),
    /// The item's raw bytes as sent (`b64`).
    Raw(Bytes),
}

/// One row: an item per input name (`""`: the model's first input).
pub type Row = BTreeMap<String, Item>;
/// The expected outputs of one row, by output name (`""`: the first output).
pub type Expected = BTreeMap<String, Vec<f64>>;

/// Rows of input data and, if given, their expected outputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputData {
    /// The rows, in order.
    pub rows: Vec<Row>,
    /// The expected outputs, one per row (empty: none given).
    pub expected: Vec<Expected>,
}

/// The first input's rows of plain numbers.
fn unnamed(rows: Vec<Vec<f64>>) -> Vec<Row> {
    rows.into_iter()
        .map(|values| {
            let item = Item::Numbers {
                values,
                shape: None,
            };
            BTreeMap::from([(String::new(), item)])
        })
        .collect()
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Reads `--input-data` (by extension: `.json`, `.npy`, `.csv`).
pub fn load(path: &Path) -> anyhow::Result<InputData> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let context = || format!("input data {}", path.display());
    let (rows, expected) = match extension(path).as_str() {
        "json" => json::parse(std::str::from_utf8(&bytes)?).with_context(context)?,
        "npy" => (
            unnamed(npy::parse(&bytes).with_context(context)?.rows()),
            Vec::new(),
        ),
        "csv" => (
            unnamed(csv::parse(std::str::from_utf8(&bytes)?).with_context(context)?),
            Vec::new(),
        ),
        other => bail!(
            "{}: unknown input data format {other:?} (json, npy, csv)",
            path.display()
        ),
    };
    ensure!(!rows.is_empty(), "{}: no rows", path.display());
    Ok(InputData { rows, expected })
}

/// Reads `--expected`: `.npy` rows of the first output, or JSON `validation_data`.
pub fn load_expected(path: &Path) -> anyhow::Result<Vec<Expected>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let context = || format!("expected outputs {}", path.display());
    match extension(path).as_str() {
        "npy" => Ok(npy::parse(&bytes)
            .with_context(context)?
            .rows()
            .into_iter()
            .map(|values| BTreeMap::from([(String::new(), values)]))
            .collect()),
        "json" => json::expected(&serde_json::from_slice(&bytes).with_context(context)?),
        other => bail!("{}: unknown format {other:?} (npy, json)", path.display()),
    }
}

/// The item of `input` (the `index`-th of the model) in `row`.
fn item_of<'a>(row: &'a Row, input: &str, index: usize) -> Option<&'a Item> {
    row.get(input)
        .or_else(|| (index == 0).then(|| row.get("")).flatten())
}

/// The tensors of one request made of `rows` (a batch) for the model's `inputs` (planned for
/// this batch size); errors name the input whose data does not fit.
pub fn encode(
    inputs: &[InputPlan],
    batching: bool,
    rows: &[&Row],
) -> anyhow::Result<(Vec<InferInputTensor>, Vec<Bytes>)> {
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut raws = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let datatype = Datatype::parse(&input.datatype).context("checked by describe")?;
        let planned: Vec<i64> = input.shape[usize::from(batching)..].to_vec();
        let mut item_dims = None;
        let mut raw = Vec::new();
        for row in rows {
            let item = item_of(row, &input.name, index)
                .with_context(|| format!("input {}: not in the input data", input.name))?;
            let dims = encode_item(&mut raw, datatype, item, &planned)
                .with_context(|| format!("input {}", input.name))?;
            ensure!(
                item_dims.as_ref().is_none_or(|d| *d == dims),
                "input {}: rows of one batch differ in shape",
                input.name
            );
            item_dims = Some(dims);
        }
        let mut shape = if batching {
            vec![rows.len() as i64]
        } else {
            Vec::new()
        };
        shape.extend(item_dims.unwrap_or(planned));
        tensors.push(InferInputTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape,
            ..InferInputTensor::default()
        });
        raws.push(raw.into());
    }
    Ok((tensors, raws))
}

/// Appends one item as `datatype`; returns its dims.
fn encode_item(
    out: &mut Vec<u8>,
    datatype: Datatype,
    item: &Item,
    planned: &[i64],
) -> anyhow::Result<Vec<i64>> {
    let count = |dims: &[i64]| dims.iter().product::<i64>().max(0) as usize;
    match item {
        Item::Numbers { values, shape } => {
            ensure!(datatype != Datatype::Bytes, "BYTES input given numbers");
            let dims = shape.clone().unwrap_or_else(|| planned.to_vec());
            ensure!(
                values.len() == count(&dims),
                "{} values for an item of shape {dims:?}",
                values.len()
            );
            for v in values {
                push_value(out, datatype, *v);
            }
            Ok(dims)
        }
        Item::Strings(strings) => {
            ensure!(
                datatype == Datatype::Bytes,
                "{datatype} input given strings"
            );
            for s in strings {
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            Ok(vec![strings.len() as i64])
        }
        Item::Raw(bytes) => {
            out.extend_from_slice(bytes);
            Ok(planned.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, datatype: &str, shape: Vec<i64>) -> InputPlan {
        InputPlan {
            name: name.into(),
            datatype: datatype.into(),
            shape,
        }
    }

    #[test]
    fn batches_rows_into_typed_tensors() {
        let rows = unnamed(vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let refs: Vec<&Row> = rows.iter().collect();
        let inputs = [plan("x", "INT64", vec![2, 2])];
        let (tensors, raws) = encode(&inputs, true, &refs).unwrap();
        assert_eq!(tensors[0].shape, [2, 2]);
        let values: Vec<i64> = raws[0]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, [1, 2, 3, 4]);

        let fp32 = [plan("x", "FP32", vec![2, 3])];
        let err = encode(&fp32, true, &refs).unwrap_err();
        assert!(format!("{err:#}").contains("input x: 2 values"), "{err:#}");
        let second = [plan("a", "FP32", vec![2, 2]), plan("b", "FP32", vec![2, 2])];
        let err = encode(&second, true, &refs).unwrap_err();
        assert!(
            format!("{err:#}").contains("input b: not in the input data"),
            "{err:#}"
        );
    }

    #[test]
    fn loads_files_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("x.npy");
        std::fs::write(&npy, npy::write(&[2, 2], &[1.0, 2.0, 3.0, 4.0], true)).unwrap();
        let data = load(&npy).unwrap();
        assert_eq!(data.rows.len(), 2);
        let csv = dir.path().join("x.CSV");
        std::fs::write(&csv, "a,b\n1,2\n").unwrap();
        assert_eq!(load(&csv).unwrap().rows.len(), 1);
        let expected = dir.path().join("y.npy");
        std::fs::write(&expected, npy::write(&[2], &[3.0, 7.0], false)).unwrap();
        assert_eq!(load_expected(&expected).unwrap()[1][""], [7.0]);
        assert!(load(&dir.path().join("x.txt")).is_err());
    }
}
