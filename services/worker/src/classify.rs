//! Triton's classification extension: an output requested with the `classification`
//! parameter (what tritonclient's `InferRequestedOutput(name, class_count=N)` sends) comes back
//! as its `N` largest entries per batch item instead of the whole tensor: BYTES strings
//! `"value:index"` (`"value:index:label"` when the manifest gives the output `labels`), largest
//! first, shaped `[batch, n]` for a batching model (`[n]` otherwise),
//! `n = min(N, entries per item)`. Values print as Triton prints them: floats with six
//! decimals, integers as they are. Ties keep index order.

use kiln_model::{HostData, HostTensor};
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::infer_parameter::ParameterChoice;
use kiln_proto::inference::model_infer_request::InferRequestedOutputTensor;

/// The request parameter of an output that asks for classification.
pub const PARAMETER: &str = "classification";

/// The class count an output asks for: `None` without the parameter or with 0 (Triton's "no
/// classification"); an error for a negative or non-integer value.
pub fn class_count(out: &InferRequestedOutputTensor) -> Result<Option<usize>, String> {
    let Some(choice) = out
        .parameters
        .get(PARAMETER)
        .and_then(|p| p.parameter_choice.as_ref())
    else {
        return Ok(None);
    };
    let count = match choice {
        ParameterChoice::Int64Param(v) => {
            u64::try_from(*v).map_err(|_| format!("{PARAMETER} must not be negative, got {v}"))?
        }
        ParameterChoice::Uint64Param(v) => *v,
        other => return Err(format!("{PARAMETER} must be an integer, got {other:?}")),
    };
    Ok((count > 0).then(|| usize::try_from(count).unwrap_or(usize::MAX)))
}

/// Outputs of this datatype can be classified (numbers, not BOOL or BYTES), else why not.
pub fn check_datatype(datatype: Datatype) -> Result<(), String> {
    match datatype {
        Datatype::Bool | Datatype::Bytes => Err(format!(
            "classification needs a numeric output, this one is {datatype}"
        )),
        _ => Ok(()),
    }
}

/// The entries of `data` as (sort key, printed value); NaN sorts last.
fn entries(data: &HostData) -> Vec<(f64, String)> {
    fn float(v: f64) -> (f64, String) {
        let key = if v.is_nan() { f64::NEG_INFINITY } else { v };
        (key, format!("{v:.6}"))
    }
    match data {
        HostData::F32(v) => v.iter().map(|x| float(f64::from(*x))).collect(),
        HostData::F64(v) => v.iter().map(|x| float(*x)).collect(),
        HostData::I32(v) => v.iter().map(|x| (f64::from(*x), x.to_string())).collect(),
        HostData::I64(v) => v.iter().map(|x| (*x as f64, x.to_string())).collect(),
        HostData::U8(v) => v.iter().map(|x| (f64::from(*x), x.to_string())).collect(),
        HostData::Bool(_) | HostData::Bytes(_) => Vec::new(),
    }
}

/// The top `count` entries of each batch item of `tensor` (the first dimension is the batch
/// when `batched`), as described in the module docs.
pub fn top_k(
    tensor: &HostTensor,
    batched: bool,
    count: usize,
    labels: &[String],
) -> Result<HostTensor, String> {
    check_datatype(tensor.datatype())?;
    let entries = entries(&tensor.data);
    let rows = if batched {
        tensor.shape.first().copied().unwrap_or(1)
    } else {
        1
    };
    let per_row = entries.len().checked_div(rows).unwrap_or(0);
    let n = count.min(per_row);
    let mut out = Vec::with_capacity(rows * n);
    let mut order: Vec<usize> = Vec::with_capacity(per_row);
    for row in entries.chunks(per_row.max(1)).take(rows) {
        order.clear();
        order.extend(0..row.len());
        // Stable: equal values keep index order.
        order.sort_by(|&a, &b| row[b].0.total_cmp(&row[a].0));
        out.extend(order[..n].iter().map(|&i| {
            match labels.get(i) {
                Some(label) => format!("{}:{i}:{label}", row[i].1),
                None => format!("{}:{i}", row[i].1),
            }
            .into_bytes()
        }));
    }
    let shape = if batched { vec![rows, n] } else { vec![n] };
    Ok(HostTensor {
        shape,
        data: HostData::Bytes(out),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kiln_proto::inference::InferParameter;

    use super::*;

    fn requested(choice: Option<ParameterChoice>) -> InferRequestedOutputTensor {
        let mut parameters = HashMap::new();
        if let Some(c) = choice {
            parameters.insert(
                PARAMETER.to_string(),
                InferParameter {
                    parameter_choice: Some(c),
                },
            );
        }
        InferRequestedOutputTensor {
            name: "probabilities".into(),
            parameters,
        }
    }

    fn strings(t: &HostTensor) -> Vec<String> {
        match &t.data {
            HostData::Bytes(v) => v
                .iter()
                .map(|b| String::from_utf8(b.clone()).unwrap())
                .collect(),
            other => panic!("not BYTES: {other:?}"),
        }
    }

    #[test]
    fn reads_the_class_count_as_tritonclient_sends_it() {
        assert_eq!(class_count(&requested(None)), Ok(None));
        let int = requested(Some(ParameterChoice::Int64Param(3)));
        assert_eq!(class_count(&int), Ok(Some(3)));
        let uint = requested(Some(ParameterChoice::Uint64Param(2)));
        assert_eq!(class_count(&uint), Ok(Some(2)));
        let zero = requested(Some(ParameterChoice::Int64Param(0)));
        assert_eq!(class_count(&zero), Ok(None), "0 means no classification");
        let negative = requested(Some(ParameterChoice::Int64Param(-1)));
        assert!(class_count(&negative).unwrap_err().contains("negative"));
        let text = requested(Some(ParameterChoice::StringParam("3".into())));
        assert!(class_count(&text).unwrap_err().contains("integer"));
    }

    #[test]
    fn keeps_the_largest_entries_of_each_batch_item() {
        let probs = HostTensor {
            shape: vec![2, 4],
            data: HostData::F32(vec![0.1, 0.6, 0.2, 0.1, 0.7, 0.05, 0.05, 0.2]),
        };
        let top = top_k(&probs, true, 2, &[]).unwrap();
        assert_eq!(top.shape, [2, 2]);
        assert_eq!(
            strings(&top),
            ["0.600000:1", "0.200000:2", "0.700000:0", "0.200000:3"]
        );
        // More classes than entries: every entry, sorted; ties keep index order.
        let all = top_k(&probs, true, 10, &[]).unwrap();
        assert_eq!(all.shape, [2, 4]);
        assert_eq!(
            &strings(&all)[..4],
            ["0.600000:1", "0.200000:2", "0.100000:0", "0.100000:3"]
        );
    }

    #[test]
    fn unbatched_integers_and_nan_and_non_numbers() {
        let scores = HostTensor {
            shape: vec![3],
            data: HostData::I64(vec![5, -2, 9]),
        };
        let top = top_k(&scores, false, 2, &[]).unwrap();
        assert_eq!(top.shape, [2]);
        assert_eq!(strings(&top), ["9:2", "5:0"]);
        let nan = HostTensor {
            shape: vec![1, 3],
            data: HostData::F64(vec![f64::NAN, 1.0, -1.0]),
        };
        assert_eq!(
            strings(&top_k(&nan, true, 3, &[]).unwrap()),
            ["1.000000:1", "-1.000000:2", "NaN:0"]
        );
        let labels = ["low".to_string(), "mid".to_string()];
        let labelled = top_k(&scores, false, 3, &labels).unwrap();
        assert_eq!(
            strings(&labelled),
            ["9:2", "5:0:low", "-2:1:mid"],
            "an index past the labels has none"
        );
        let flags = HostTensor {
            shape: vec![2],
            data: HostData::Bool(vec![true, false]),
        };
        assert!(
            top_k(&flags, false, 1, &[])
                .unwrap_err()
                .contains("numeric")
        );
    }
}
