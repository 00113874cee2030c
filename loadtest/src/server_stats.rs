//! The server's side of a run, as perf_analyzer reports it: the model's `ModelStatistics`
//! (v2 protocol) read when the measured window starts and again after the last answer, and the
//! difference turned into per-request averages (queue, compute input/infer/output) and the
//! batching achieved (executions vs inferences).
//!
//! Statistics are best effort: a server without the RPC, a failed or slow read (more than
//! [`READ_TIMEOUT`]) or counters that went backwards (a restart) give `None`, never an error.
//! The window is approximate in the same way as perf_analyzer's: requests in flight at either
//! read are split between the windows by the server's counters, not by send time.

use std::future::Future;
use std::time::Duration;

use kiln_proto::inference::{ModelStatistics, ModelStatisticsRequest, StatisticDuration};
use serde::{Deserialize, Serialize};

use crate::config::TargetConfig;

/// Longest wait for one ModelStatistics answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Cumulative counters of one model (all its versions summed), as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful requests and their total server time, ns.
    pub success: (u64, u64),
    /// Failed requests.
    pub fail: u64,
    /// Requests that waited in the queue and the total wait, ns.
    pub queue: (u64, u64),
    /// Input preparation: requests, ns.
    pub compute_input: (u64, u64),
    /// Model execution: requests, ns.
    pub compute_infer: (u64, u64),
    /// Output preparation: requests, ns.
    pub compute_output: (u64, u64),
    /// Inferences (batch items) performed.
    pub inference_count: u64,
    /// Model executions (a batch of any size is one).
    pub execution_count: u64,
}

fn pair(d: Option<StatisticDuration>) -> (u64, u64) {
    d.map_or((0, 0), |d| (d.count, d.ns))
}

fn add(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

impl Counters {
    /// The sum over `stats` (one entry per version of the model).
    pub fn sum(stats: &[ModelStatistics]) -> Self {
        stats.iter().fold(Self::default(), |acc, m| {
            let s = m.inference_stats.unwrap_or_default();
            Self {
                success: add(acc.success, pair(s.success)),
                fail: acc.fail.saturating_add(pair(s.fail).0),
                queue: add(acc.queue, pair(s.queue)),
                compute_input: add(acc.compute_input, pair(s.compute_input)),
                compute_infer: add(acc.compute_infer, pair(s.compute_infer)),
                compute_output: add(acc.compute_output, pair(s.compute_output)),
                inference_count: acc.inference_count.saturating_add(m.inference_count),
                execution_count: acc.execution_count.saturating_add(m.execution_count),
            }
        })
    }
}

/// What the server did during the measured window, per request (`"server"` in the JSON).
/// Times are microseconds averaged over the requests the server counted (0 when it counted
/// none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Requests the server completed successfully.
    pub requests: u64,
    /// Requests the server failed.
    pub failed: u64,
    /// Inferences (batch items).
    pub inferences: u64,
    /// Model executions (batches).
    pub executions: u64,
    /// `inferences / executions` (0 without executions).
    pub avg_batch_size: f64,
    /// Server time of a successful request, receipt to response.
    pub request_us: f64,
    /// Waiting in the scheduler's queue.
    pub queue_us: f64,
    /// Preparing inputs.
    pub compute_input_us: f64,
    /// Running the model.
    pub compute_infer_us: f64,
    /// Preparing outputs.
    pub compute_output_us: f64,
}

fn avg_us(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let count = after.0.checked_sub(before.0)?;
    let ns = after.1.checked_sub(before.1)?;
    Some(if count == 0 {
        0.0
    } else {
        (ns as f64 / count as f64).round() / 1e3
    })
}

impl ServerStats {
    /// The difference between two reads; `None` if a counter went backwards (a restart).
    pub fn between(before: &Counters, after: &Counters) -> Option<Self> {
        let inferences = after.inference_count.checked_sub(before.inference_count)?;
        let executions = after.execution_count.checked_sub(before.execution_count)?;
        Some(Self {
            requests: after.success.0.checked_sub(before.success.0)?,
            failed: after.fail.checked_sub(before.fail)?,
            inferences,
            executions,
            avg_batch_size: if executions == 0 {
                0.0
            } else {
                (inferences as f64 / executions as f64 * 1e3).round() / 1e3
            },
            request_us: avg_us(before.success, after.success)?,
            queue_us: avg_us(before.queue, after.queue)?,
            compute_input_us: avg_us(before.compute_input, after.compute_input)?,
            compute_infer_us: avg_us(before.compute_infer, after.compute_infer)?,
            compute_output_us: avg_us(before.compute_output, after.compute_output)?,
        })
    }

    /// Queue plus compute: the server time perf_analyzer accounts for.
    pub fn accounted_us(&self) -> f64 {
        self.queue_us + self.compute_input_us + self.compute_infer_us + self.compute_output_us
    }
}

/// Reads the model's counters; `None` if the server does not answer in time or at all.
pub async fn read(mut client: crate::target::Client, target: &TargetConfig) -> Option<Counters> {
    let request = ModelStatisticsRequest {
        name: target.model.clone(),
        version: target.model_version.clone(),
    };
    let answer = tokio::time::timeout(READ_TIMEOUT, client.model_statistics(request)).await;
    let stats = answer.ok()?.ok()?.into_inner().model_stats;
    (!stats.is_empty()).then(|| Counters::sum(&stats))
}

/// Runs `load` (which measures from `warmup` on) and reads the server's counters at the end of
/// the warm-up and after `load` finished; returns `load`'s output and the difference.
pub async fn around<T>(
    client: crate::target::Client,
    target: &TargetConfig,
    warmup: Duration,
    load: impl Future<Output = T>,
) -> (T, Option<ServerStats>) {
    let first = async {
        tokio::time::sleep(warmup).await;
        read(client.clone(), target).await
    };
    let (out, before) = tokio::join!(load, first);
    let Some(before) = before else {
        return (out, None);
    };
    let after = read(client, target).await;
    (
        out,
        after.and_then(|after| ServerStats::between(&before, &after)),
    )
}

#[cfg(test)]
mod tests {
    use kiln_proto::inference::InferStatistics;

    use super::*;

    fn d(count: u64, ns: u64) -> Option<StatisticDuration> {
        Some(StatisticDuration { count, ns })
    }

    fn stats(requests: u64, executions: u64, batch: u64) -> ModelStatistics {
        ModelStatistics {
            inference_count: requests * batch,
            execution_count: executions,
            inference_stats: Some(InferStatistics {
                success: d(requests, requests * 1_000_000),
                fail: d(1, 5),
                queue: d(requests, requests * 200_000),
                compute_input: d(requests, requests * 10_000),
                compute_infer: d(requests, requests * 700_000),
                compute_output: d(requests, requests * 5_000),
                ..InferStatistics::default()
            }),
            ..ModelStatistics::default()
        }
    }

    #[test]
    fn sums_versions_and_averages_the_difference() {
        let before = Counters::sum(&[stats(10, 10, 2)]);
        let after = Counters::sum(&[stats(60, 35, 2), stats(50, 15, 2)]);
        let s = ServerStats::between(&before, &after).unwrap();
        assert_eq!(s.requests, 100);
        assert_eq!(s.failed, 1);
        assert_eq!((s.inferences, s.executions), (200, 40));
        assert_eq!(s.avg_batch_size, 5.0);
        assert_eq!(s.request_us, 1_000.0);
        assert_eq!(s.queue_us, 200.0);
        assert_eq!(s.compute_input_us, 10.0);
        assert_eq!(s.compute_infer_us, 700.0);
        assert_eq!(s.compute_output_us, 5.0);
        assert_eq!(s.accounted_us(), 915.0);
    }

    #[test]
    fn idle_servers_average_zero_and_restarts_give_none() {
        let same = Counters::sum(&[stats(10, 10, 1)]);
        let idle = ServerStats::between(&same, &same).unwrap();
        assert_eq!(
            (idle.requests, idle.queue_us, idle.avg_batch_size),
            (0, 0.0, 0.0)
        );
        let restarted = Counters::sum(&[stats(3, 3, 1)]);
        assert_eq!(ServerStats::between(&same, &restarted), None);
        assert_eq!(Counters::sum(&[]), Counters::default());
        assert_eq!(
            Counters::sum(&[ModelStatistics::default()]),
            Counters::default(),
            "missing statistics count as zero"
        );
    }
}
