//! One inference, end to end: find the model version, decode and check the inputs, queue them for
//! a compute thread, encode the outputs, and record statistics and metrics.
//!
//! Every request that reaches a known model version is counted exactly once, as a success or a
//! failure (a request whose caller disconnects mid-way is not counted). The caller's gRPC
//! deadline travels with the request to the compute queue, where an expired request is dropped
//! before compute; so does the `timeout` request parameter (Triton's per-request queue timeout, in
//! microseconds) and, for a request with neither, the model's `default_timeout_microseconds`
//! ([`queue_deadline`]). The request parameter `priority` picks the queue level ([`priority_of`]).
//! With telemetry on, every request that reaches a known version is handed to its profile
//! ([`crate::telemetry`]): its latency and outcome, and a copy of its rows and outputs, never
//! sketched here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_proto::inference::infer_parameter::ParameterChoice;
use kiln_proto::inference::{ModelInferRequest, ModelInferResponse};
use prost::Message;
use tonic::metadata::MetadataMap;

use crate::batch::Priority;
use crate::error::WorkerError;
use crate::stats::{FailureReason, RequestTimings};
use crate::store::{LoadedModel, ModelStore};
use crate::telemetry::profiler::Capture;
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
    let mut capture = None;
    let result = run(
        &model,
        req,
        deadline,
        received,
        max_message_bytes,
        &mut capture,
    )
    .await;
    match &result {
        Ok((_, timings)) => {
            model.stats.record_success(timings);
            model.metrics.record_success(timings);
        }
        Err(e) => {
            model
                .stats
                .record_failure(received.elapsed(), FailureReason::of(e));
        }
    }
    if let Some(profiler) = &model.profiler {
        // A copy into a bounded buffer: the profiling thread sketches it later.
        let capture = capture.filter(|_| result.is_ok());
        profiler.record(received.elapsed(), result.is_ok(), capture);
    }
    result.map(|(resp, _)| resp)
}

async fn run(
    model: &Arc<LoadedModel>,
    mut req: ModelInferRequest,
    deadline: Option<Instant>,
    received: Instant,
    max_message_bytes: usize,
    capture: &mut Option<Capture>,
) -> Result<(ModelInferResponse, RequestTimings), WorkerError> {
    // Under overload most requests are refused: refuse them before decoding.
    model.executor.admit()?;
    let decode_start = Instant::now();
    let decoded = tensors::decode_request(&model.manifest, &mut req)?;
    let compute_input = decode_start.elapsed();

    let priority = priority_of(&req);
    let deadline = queue_deadline(
        deadline,
        timeout_of(&req),
        model.manifest.batching.default_timeout_microseconds,
        received,
    );
    if let Some(profiler) = &model.profiler {
        *capture = profiler.capture_inputs(&decoded.inputs, decoded.batch as usize);
    }
    let executed = model
        .executor
        .submit(decoded.inputs, deadline, priority)
        .await?;
    if let (Some(profiler), Some(c)) = (&model.profiler, capture.as_mut()) {
        profiler.capture_outputs(c, &executed.outputs);
    }

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

/// The request's priority from its `priority` parameter (uint64 or int64, Triton's convention:
/// 1 is high; absent, 0, 2 and above are normal; anything else is ignored).
pub fn priority_of(req: &ModelInferRequest) -> Priority {
    let level = match req
        .parameters
        .get("priority")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        Some(ParameterChoice::Uint64Param(v)) => *v,
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(*v).unwrap_or(0),
        _ => 0,
    };
    Priority::from_level(level)
}

/// The request's `timeout` parameter (Triton's per-request queue timeout, microseconds).
pub fn timeout_of(req: &ModelInferRequest) -> Option<Duration> {
    match req
        .parameters
        .get("timeout")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        Some(ParameterChoice::Uint64Param(v)) => Some(Duration::from_micros(*v)),
        Some(ParameterChoice::Int64Param(v)) if *v > 0 => {
            Some(Duration::from_micros(v.unsigned_abs()))
        }
        _ => None,
    }
}

/// When a queued request stops being worth computing: the earlier of the gRPC deadline and the
/// `timeout` parameter; with neither, the model's default timeout (0 = none).
pub fn queue_deadline(
    grpc: Option<Instant>,
    timeout: Option<Duration>,
    default_timeout_us: u64,
    received: Instant,
) -> Option<Instant> {
    let param = timeout.map(|t| received + t);
    match (grpc, param) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b).or_else(|| {
            (default_timeout_us > 0).then(|| received + Duration::from_micros(default_timeout_us))
        }),
    }
}

/// The caller's deadline from the `grpc-timeout` request header, measured from now.
pub fn deadline_from(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    kiln_proto::edge::parse_grpc_timeout(value).map(|t| Instant::now() + t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::inference::InferParameter;

    fn with_priority(choice: Option<ParameterChoice>) -> ModelInferRequest {
        let mut req = ModelInferRequest::default();
        if let Some(choice) = choice {
            req.parameters.insert(
                "priority".into(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            );
        }
        req
    }

    #[test]
    fn queue_deadline_is_the_earliest_given() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(queue_deadline(None, None, 0, now), None);
        assert_eq!(queue_deadline(None, None, 5_000, now), Some(now + ms(5)));
        assert_eq!(
            queue_deadline(Some(now + ms(9)), None, 5_000, now),
            Some(now + ms(9))
        );
        assert_eq!(
            queue_deadline(None, Some(ms(2)), 5_000, now),
            Some(now + ms(2))
        );
        assert_eq!(
            queue_deadline(Some(now + ms(9)), Some(ms(2)), 0, now),
            Some(now + ms(2))
        );
        assert_eq!(
            queue_deadline(Some(now + ms(1)), Some(ms(2)), 0, now),
            Some(now + ms(1))
        );
        let mut req = ModelInferRequest::default();
        req.parameters.insert(
            "timeout".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(1500)),
            },
        );
        assert_eq!(timeout_of(&req), Some(Duration::from_micros(1500)));
    }

    #[test]
    fn priority_parameter_picks_the_level() {
        use ParameterChoice::*;
        let cases = [
            (None, Priority::Normal),
            (Some(Uint64Param(1)), Priority::High),
            (Some(Int64Param(1)), Priority::High),
            (Some(Uint64Param(0)), Priority::Normal),
            (Some(Uint64Param(2)), Priority::Normal),
            (Some(Int64Param(-1)), Priority::Normal),
            (Some(StringParam("1".into())), Priority::Normal),
        ];
        for (choice, want) in cases {
            assert_eq!(
                priority_of(&with_priority(choice.clone())),
                want,
                "{choice:?}"
            );
        }
    }
}
