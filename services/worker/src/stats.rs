//! Per model version inference statistics, the counters behind `ModelStatistics`.
//!
//! Semantics follow Triton's, because perf_analyzer computes its report from differences of
//! these counters between two calls:
//! - `success` counts requests that got a response, with their end-to-end time in the worker;
//!   `fail` counts those that did not (invalid input, full queue, deadline, runtime error);
//! - `queue`, `compute_input`, `compute_infer`, `compute_output` count successful requests with
//!   the time spent queued until their batch starts computing, decoding inputs, running the model
//!   and encoding outputs, so `queue.count` rises by one with every successful request (a
//!   request's `compute_infer` is the time of the whole batch it ran in, as in Triton);
//! - `inference_count` counts batch items of successful requests (a request of batch 8 adds 8),
//!   `execution_count` model executions (one per batch the dynamic batcher runs, however many
//!   requests it merged), and `batch_stats` has one entry per executed batch size, counting the
//!   executions of that size with the time spent concatenating inputs (`compute_input`), in the
//!   model (`compute_infer`) and splitting outputs (`compute_output`), ordered by size.
//!
//! Request counters are lock-free atomics: recording never blocks the request path. The batch
//! table takes a short lock once per execution, on the compute thread.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_proto::inference::{
    InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration,
};

use kiln_model::ModelError;

use crate::error::WorkerError;
use crate::executor::Execution;

/// A count and a total duration.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> StatisticDuration {
        StatisticDuration {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

/// Where the time of one successful request went.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTimings {
    /// Batch items in the request.
    pub batch: u64,
    /// From receipt to response, inside the worker.
    pub total: Duration,
    /// Waiting in the model version's queue.
    pub queue: Duration,
    /// Decoding and validating the inputs.
    pub compute_input: Duration,
    /// Running the model.
    pub compute_infer: Duration,
    /// Encoding the outputs.
    pub compute_output: Duration,
}

/// Why a request failed, in Triton's classes (the `reason` label of
/// `nv_inference_request_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused without compute: the queue was full, or the deadline passed while queued.
    Rejected,
    /// The caller went away while the request was queued (counted by the batcher, which is the
    /// only one to see it: the handler is gone by then).
    Canceled,
    /// The model failed while running.
    Backend,
    /// Anything else: invalid input, oversized response, unloading.
    Other,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 4] = [
        FailureReason::Rejected,
        FailureReason::Canceled,
        FailureReason::Backend,
        FailureReason::Other,
    ];

    /// The label value, as Triton writes it.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Canceled => "CANCELED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }

    /// The class of a worker error.
    pub fn of(e: &WorkerError) -> Self {
        match e {
            WorkerError::QueueFull { .. }
            | WorkerError::Busy { .. }
            | WorkerError::DeadlineExceeded => FailureReason::Rejected,
            WorkerError::Model(ModelError::InvalidInput { .. }) => FailureReason::Other,
            WorkerError::Model(_) | WorkerError::Internal(_) => FailureReason::Backend,
            _ => FailureReason::Other,
        }
    }
}

/// The durations of successful requests, as cumulative totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Successful requests.
    pub success: StatisticDuration,
    /// Failed requests (all reasons).
    pub fail: StatisticDuration,
    /// Queue time of successful requests.
    pub queue: StatisticDuration,
    /// Input decoding of successful requests.
    pub compute_input: StatisticDuration,
    /// Model time of successful requests.
    pub compute_infer: StatisticDuration,
    /// Output encoding of successful requests.
    pub compute_output: StatisticDuration,
    /// Batch items of successful requests.
    pub inference_count: u64,
    /// Model executions.
    pub execution_count: u64,
    /// Failures by [`FailureReason::ALL`] order.
    pub failures: [u64; 4],
}

/// Cumulative statistics of one loaded model version.
#[derive(Debug, Default)]
pub struct ModelStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Failures by [`FailureReason::ALL`] order.
    failures: [AtomicU64; 4],
    /// Executions by batch size: (compute_input, compute_infer, compute_output).
    batches: Mutex<BTreeMap<u64, [StatisticDuration; 3]>>,
    /// Milliseconds since the Unix epoch of the last request, 0 if none.
    last_inference_ms: AtomicU64,
}

impl ModelStats {
    /// Records a request that got a response.
    pub fn record_success(&self, t: &RequestTimings) {
        self.success.add(t.total);
        self.queue.add(t.queue);
        self.compute_input.add(t.compute_input);
        self.compute_infer.add(t.compute_infer);
        self.compute_output.add(t.compute_output);
        self.inference_count.fetch_add(t.batch, Ordering::Relaxed);
        self.touch();
    }

    /// Records one successful model execution (a batch of one or more requests).
    pub fn record_execution(&self, e: &Execution) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let entry = batches.entry(e.rows).or_default();
        for (d, t) in entry
            .iter_mut()
            .zip([e.compute_input, e.compute_infer, e.compute_output])
        {
            d.count += 1;
            d.ns =
                d.ns.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// Records a request that failed after `total`.
    pub fn record_failure(&self, total: Duration, reason: FailureReason) {
        self.fail.add(total);
        self.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// The cumulative totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            success: self.success.snapshot(),
            fail: self.fail.snapshot(),
            queue: self.queue.snapshot(),
            compute_input: self.compute_input.snapshot(),
            compute_infer: self.compute_infer.snapshot(),
            compute_output: self.compute_output.snapshot(),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            failures: std::array::from_fn(|i| self.failures[i].load(Ordering::Relaxed)),
        }
    }

    fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }

    /// The protocol message for this model version.
    pub fn snapshot(&self, name: &str, version: &str) -> ModelStatistics {
        let batch_stats = self
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(size, [input, infer, output])| InferBatchStatistics {
                batch_size: *size,
                compute_input: Some(*input),
                compute_infer: Some(*infer),
                compute_output: Some(*output),
            })
            .collect();
        let t = self.totals();
        ModelStatistics {
            name: name.to_string(),
            version: version.to_string(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: t.inference_count,
            execution_count: t.execution_count,
            inference_stats: Some(InferStatistics {
                success: Some(t.success),
                fail: Some(t.fail),
                queue: Some(t.queue),
                compute_input: Some(t.compute_input),
                compute_infer: Some(t.compute_infer),
                compute_output: Some(t.compute_output),
                cache_hit: Some(StatisticDuration::default()),
                cache_miss: Some(StatisticDuration::default()),
            }),
            batch_stats,
            ..ModelStatistics::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_successes_and_failures() {
        let s = ModelStats::default();
        let ms = Duration::from_millis(1);
        s.record_success(&RequestTimings {
            batch: 8,
            total: 4 * ms,
            queue: ms,
            compute_input: ms,
            compute_infer: ms,
            compute_output: ms,
        });
        s.record_success(&RequestTimings {
            batch: 2,
            ..RequestTimings::default()
        });
        s.record_failure(ms, FailureReason::Rejected);
        for rows in [8, 2, 8] {
            s.record_execution(&Execution {
                rows,
                requests: 1,
                compute_infer: ms,
                ..Execution::default()
            });
        }
        let snap = s.snapshot("digits", "1");
        let stats = snap.inference_stats.unwrap();
        assert_eq!(snap.inference_count, 10);
        assert_eq!(snap.execution_count, 3);
        let sizes: Vec<_> = snap.batch_stats.iter().map(|b| b.batch_size).collect();
        assert_eq!(sizes, [2, 8]);
        let eight = snap.batch_stats[1].compute_infer.unwrap();
        assert_eq!((eight.count, eight.ns), (2, 2_000_000));
        assert_eq!(snap.batch_stats[1].compute_input.unwrap().count, 2);
        assert_eq!(stats.success.unwrap().count, 2);
        assert_eq!(stats.success.unwrap().ns, 4_000_000);
        assert_eq!(stats.queue.unwrap().count, 2);
        assert_eq!(stats.fail.unwrap().count, 1);
        assert!(snap.last_inference > 0);
        assert_eq!(s.totals().failures, [1, 0, 0, 0]);
    }
}
