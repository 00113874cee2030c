//! Per model version inference statistics, the counters behind `ModelStatistics`.
//!
//! Semantics follow Triton's, because perf_analyzer computes its report from differences of
//! these counters between two calls:
//! - `success` counts requests that got a response, with their end-to-end time in the worker;
//!   `fail` counts those that did not (invalid input, full queue, deadline, runtime error);
//! - `queue`, `compute_input`, `compute_infer`, `compute_output` count successful requests with
//!   the time spent waiting for a compute thread, decoding inputs, running the model and encoding
//!   outputs; so `queue.count` rises by one with every successful request;
//! - `inference_count` counts batch items (a request of batch 8 adds 8), `execution_count`
//!   model executions (one per request until the dynamic batcher merges requests).
//!
//! All counters are lock-free atomics: recording never blocks the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_proto::inference::{InferStatistics, ModelStatistics, StatisticDuration};

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
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// Records a request that failed after `total`.
    pub fn record_failure(&self, total: Duration) {
        self.fail.add(total);
        self.touch();
    }

    fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }

    /// The protocol message for this model version.
    pub fn snapshot(&self, name: &str, version: &str) -> ModelStatistics {
        ModelStatistics {
            name: name.to_string(),
            version: version.to_string(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: Some(InferStatistics {
                success: Some(self.success.snapshot()),
                fail: Some(self.fail.snapshot()),
                queue: Some(self.queue.snapshot()),
                compute_input: Some(self.compute_input.snapshot()),
                compute_infer: Some(self.compute_infer.snapshot()),
                compute_output: Some(self.compute_output.snapshot()),
                cache_hit: Some(StatisticDuration::default()),
                cache_miss: Some(StatisticDuration::default()),
            }),
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
        s.record_failure(ms);
        let snap = s.snapshot("digits", "1");
        let stats = snap.inference_stats.unwrap();
        assert_eq!(snap.inference_count, 10);
        assert_eq!(snap.execution_count, 2);
        assert_eq!(stats.success.unwrap().count, 2);
        assert_eq!(stats.success.unwrap().ns, 4_000_000);
        assert_eq!(stats.queue.unwrap().count, 2);
        assert_eq!(stats.fail.unwrap().count, 1);
        assert!(snap.last_inference > 0);
    }
}
