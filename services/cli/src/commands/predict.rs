//! `kiln predict`: one ModelInfer through the gateway, the way any v2 client would do it.
//!
//! It asks ModelMetadata for the input's name, datatype and shape, fits the given (or random)
//! values to that shape, sends them as raw little-endian bytes (`raw_input_contents`, as
//! tritonclient does), and prints each output per batch item: a single value as is, a vector of
//! probabilities as its top entries.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::model_infer_request::InferInputTensor;
use kiln_proto::inference::model_infer_response::InferOutputTensor;
use kiln_proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
};
use serde::Serialize;
use tonic::transport::Endpoint;

use crate::args::{OutputFormat, PredictArgs};
use crate::input::{self, Values};
use crate::output::emit;
use kiln_security::ClientArgs;

/// One decoded output tensor (the JSON form of `kiln predict -o json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// Tensor name.
    pub name: String,
    /// v2 datatype.
    pub datatype: String,
    /// Shape, batch dimension first when the model batches.
    pub shape: Vec<i64>,
    /// Values in row-major order.
    pub data: Vec<f64>,
}

/// What one prediction returned.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Model name.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// Items in the batch sent.
    pub batch: usize,
    /// Decoded outputs.
    pub outputs: Vec<Output>,
}

/// Runs `kiln predict`.
pub async fn run(args: PredictArgs, remote: ClientArgs) -> anyhow::Result<()> {
    let values = match (&args.input, &args.input_file) {
        (Some(text), _) => Some(input::parse_values(text)?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                input::parse_values(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )
        }
        (None, None) => None,
    };
    let values = match (values, args.rows) {
        (Some(v), Some(n)) => Some(input::first_rows(v, n)?),
        (v, _) => v,
    };
    let prediction = predict(&args.gateway, &args.model, &args.version, values, &remote).await?;
    match args.output {
        OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&prediction)?)),
        OutputFormat::Table => emit(&render(&prediction, args.top)),
    }
}

/// Sends one request to the gateway at `url`. `values` feed the model's (single) input; `None`
/// sends one item of random values to every input.
pub async fn predict(
    url: &str,
    model: &str,
    version: &str,
    values: Option<Values>,
    remote: &ClientArgs,
) -> anyhow::Result<Prediction> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let tls = remote.tls()?;
    let endpoint = Endpoint::from_shared(kiln_security::wire_url(&url))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(60));
    let channel = kiln_security::connect(endpoint, tls.as_ref())
        .await
        .with_context(|| format!("cannot reach the gateway at {url} (see --gateway)"))?;
    let mut client = GrpcInferenceServiceClient::with_interceptor(channel, remote.bearer()?)
        .max_decoding_message_size(64 << 20);
    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: model.into(),
            version: version.into(),
        })
        .await
        .with_context(|| format!("ModelMetadata of {model}"))?
        .into_inner();
    ensure!(!meta.inputs.is_empty(), "{model} declares no inputs");
    if values.is_some() && meta.inputs.len() > 1 {
        bail!(
            "{model} has {} inputs; kiln predict feeds one (leave out --input for random values)",
            meta.inputs.len()
        );
    }

    let mut inputs = Vec::new();
    let mut raw = Vec::new();
    let mut batch = 1;
    for (i, spec) in meta.inputs.iter().enumerate() {
        let vals = match (&values, i) {
            (Some(v), 0) => v.clone(),
            _ => input::random_values(input::item_len(&spec.shape)),
        };
        let shape = input::fit_shape(&spec.shape, vals.data.len())
            .with_context(|| format!("input {:?}", spec.name))?;
        if spec.shape.first() == Some(&-1) {
            batch = shape[0] as usize;
        }
        raw.push(input::encode(&spec.datatype, &vals.data)?.into());
        inputs.push(InferInputTensor {
            name: spec.name.clone(),
            datatype: spec.datatype.clone(),
            shape,
            ..Default::default()
        });
    }
    let response = client
        .model_infer(ModelInferRequest {
            model_name: model.into(),
            model_version: version.into(),
            inputs,
            raw_input_contents: raw,
            ..Default::default()
        })
        .await
        .with_context(|| format!("ModelInfer of {model}"))?
        .into_inner();
    Ok(Prediction {
        model: response.model_name.clone(),
        version: response.model_version.clone(),
        batch,
        outputs: decode_outputs(&response)?,
    })
}

/// Decodes every output, raw or typed.
pub fn decode_outputs(response: &ModelInferResponse) -> anyhow::Result<Vec<Output>> {
    response
        .outputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let data = match response.raw_output_contents.get(i) {
                Some(raw) => input::decode(&t.datatype, raw)?,
                None => typed(t),
            };
            Ok(Output {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.clone(),
                data,
            })
        })
        .collect()
}

fn typed(t: &InferOutputTensor) -> Vec<f64> {
    let Some(c) = &t.contents else {
        return Vec::new();
    };
    let InferTensorContents {
        bool_contents,
        int_contents,
        int64_contents,
        uint_contents,
        uint64_contents,
        fp32_contents,
        fp64_contents,
        ..
    } = c;
    bool_contents
        .iter()
        .map(|b| f64::from(u8::from(*b)))
        .chain(int_contents.iter().map(|x| f64::from(*x)))
        .chain(int64_contents.iter().map(|x| *x as f64))
        .chain(uint_contents.iter().map(|x| f64::from(*x)))
        .chain(uint64_contents.iter().map(|x| *x as f64))
        .chain(fp32_contents.iter().map(|x| f64::from(*x)))
        .chain(fp64_contents.iter().copied())
        .collect()
}

fn looks_like_probabilities(row: &[f64]) -> bool {
    row.len() > 1
        && row.iter().all(|p| (0.0..=1.0).contains(p))
        && (row.iter().sum::<f64>() - 1.0).abs() < 1e-3
}

fn show(x: f64, datatype: &str) -> String {
    if datatype.starts_with("FP") {
        format!("{x:.4}")
    } else {
        format!("{x}")
    }
}

/// Renders a prediction for people: one line per output per batch item.
pub fn render(p: &Prediction, top: usize) -> String {
    let mut out = format!(
        "{}/{}\n",
        p.model,
        if p.version.is_empty() {
            "?"
        } else {
            &p.version
        }
    );
    for item in 0..p.batch {
        if p.batch > 1 {
            out.push_str(&format!("item {item}:\n"));
        }
        for o in &p.outputs {
            let per_item = o.data.len().checked_div(p.batch).unwrap_or(o.data.len());
            let row = &o.data
                [(item * per_item).min(o.data.len())..((item + 1) * per_item).min(o.data.len())];
            let text = match row {
                [x] => show(*x, &o.datatype),
                row if looks_like_probabilities(row) => input::top_k(row, top)
                    .iter()
                    .map(|(i, p)| format!("{i}: {p:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                row => {
                    let shown: Vec<String> =
                        row.iter().take(10).map(|x| show(*x, &o.datatype)).collect();
                    let more = if row.len() > 10 {
                        format!(", … ({} values)", row.len())
                    } else {
                        String::new()
                    };
                    format!("[{}{more}]", shown.join(", "))
                }
            };
            out.push_str(&format!("  {:<14} {text}\n", o.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(name: &str, datatype: &str, shape: &[i64], data: &[f64]) -> Output {
        Output {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn renders_labels_and_top_probabilities() {
        let p = Prediction {
            model: "digits".into(),
            version: "1".into(),
            batch: 2,
            outputs: vec![
                out("label", "INT64", &[2], &[3.0, 7.0]),
                out(
                    "probabilities",
                    "FP32",
                    &[2, 3],
                    &[0.1, 0.8, 0.1, 0.5, 0.2, 0.3],
                ),
            ],
        };
        let text = render(&p, 2);
        assert!(text.starts_with("digits/1\n"), "{text}");
        assert!(text.contains("item 1:"), "{text}");
        assert!(text.contains("label          3\n"), "{text}");
        assert!(text.contains("1: 0.8000, 0: 0.1000"), "{text}");
        assert!(text.contains("0: 0.5000, 2: 0.3000"), "{text}");
    }

    #[test]
    fn decodes_raw_and_typed_outputs() {
        let response = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "a".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                ..Default::default()
            }],
            raw_output_contents: vec![input::encode("FP32", &[0.5, 2.0]).unwrap().into()],
            ..Default::default()
        };
        assert_eq!(decode_outputs(&response).unwrap()[0].data, [0.5, 2.0]);
        let typed_response = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "b".into(),
                datatype: "INT64".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    int64_contents: vec![4],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(decode_outputs(&typed_response).unwrap()[0].data, [4.0]);
    }
}
