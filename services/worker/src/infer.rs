//! One inference, end to end: find the model version, decode and check the inputs, queue them for
//! a compute thread, encode the outputs, and record statistics and metrics.
//!
//! Every request that reaches a known model version is counted exactly once, as a success or a
//! failure (a request whose caller disconnects mid-way is not counted). The caller's gRPC
//! deadline travels with the request to the compute queue, where an expired request is dropped
//! before compute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_proto::inference::{ModelInferRequest, ModelInferResponse};
use prost::Message;
use tonic::metadata::MetadataMap;

use crate::error::WorkerError;
use crate::stats::RequestTimings;
use crate::store::{LoadedModel, ModelStore};
use crate::tensors;

/// Runs `req` on the model version it names. `max_message_bytes` bounds the encoded response.
pub async fn infer(
    store: &ModelStore,
    req: ModelInferRequest,
    deadline: Option<Instant>,
    max_message_bytes: usize,
) -> Result<ModelInferResponse, WorkerError> {
    let received = Instant::now();
    let model = store.resolve(&req.model_name, &req.model_version)?;
    let result = run(&model, req, deadline, received, max_message_bytes).await;
    match &result {
        Ok((_, timings)) => {
            model.stats.record_success(timings);
            model.metrics.record_success(timings);
        }
        Err(_) => {
            model.stats.record_failure(received.elapsed());
            model.metrics.record_failure();
        }
    }
    result.map(|(resp, _)| resp)
}

async fn run(
    model: &Arc<LoadedModel>,
    mut req: ModelInferRequest,
    deadline: Option<Instant>,
    received: Instant,
    max_message_bytes: usize,
) -> Result<(ModelInferResponse, RequestTimings), WorkerError> {
    let decode_start = Instant::now();
    let decoded = tensors::decode_request(&model.manifest, &mut req)?;
    let compute_input = decode_start.elapsed();

    let executed = model.executor.submit(decoded.inputs, deadline).await?;

    let encode_start = Instant::now();
    let mut resp = ModelInferResponse {
        model_name: model.name().to_string(),
        model_version: model.version().to_string(),
        id: std::mem::take(&mut req.id),
        ..ModelInferResponse::default()
    };
    tensors::encode_response(
        &mut resp,
        &model.manifest,
        &decoded.outputs,
        decoded.raw,
        executed.outputs,
    )?;
    let size = resp.encoded_len();
    if size > max_message_bytes {
        return Err(WorkerError::TooLarge(format!(
            "response of {size} bytes exceeds the limit of {max_message_bytes} bytes; \
             request fewer outputs or a smaller batch"
        )));
    }
    let timings = RequestTimings {
        batch: decoded.batch,
        total: received.elapsed(),
        queue: executed.queue,
        compute_input,
        compute_infer: executed.compute,
        compute_output: encode_start.elapsed(),
    };
    Ok((resp, timings))
}

/// The caller's deadline from the `grpc-timeout` request header, measured from now.
pub fn deadline_from(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value).map(|t| Instant::now() + t)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        let mut md = MetadataMap::new();
        assert!(deadline_from(&md).is_none());
        md.insert("grpc-timeout", "1S".parse().unwrap());
        assert!(deadline_from(&md).is_some_and(|d| d > Instant::now()));
    }
}
