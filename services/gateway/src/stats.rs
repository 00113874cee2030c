//! ModelStatistics for the whole cluster: ask every worker that holds a replica, concurrently
//! and with a short timeout, and sum what they say per (model, version).
//!
//! Sums are what Triton's clients expect from one server: counts and nanoseconds of every
//! `StatisticDuration` add up, batch statistics merge by batch size, response statistics by
//! key, `last_inference` is the latest one and memory usage lists every worker's entries. A
//! worker that does not answer in time (or answers with an error) is skipped, never failing
//! the call: perf_analyzer aborts on any ModelStatistics error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kiln_proto::inference::{
    InferBatchStatistics, InferResponseStatistics, InferStatistics, ModelStatistics,
    ModelStatisticsRequest, ModelStatisticsResponse, StatisticDuration,
};

use crate::balancer::Backend;

/// Asks each backend for `request`'s statistics, each with `timeout`, and returns the answers
/// that came (failures are logged and skipped).
pub async fn gather(
    backends: Vec<Arc<Backend>>,
    request: ModelStatisticsRequest,
    timeout: Duration,
) -> Vec<ModelStatisticsResponse> {
    let calls = backends.into_iter().map(|backend| {
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(timeout);
        async move {
            let mut client = backend.client();
            match tokio::time::timeout(timeout, client.model_statistics(req)).await {
                Ok(Ok(response)) => Some(response.into_inner()),
                Ok(Err(status)) => {
                    tracing::debug!(address = %backend.address, %status, "worker statistics skipped");
                    None
                }
                Err(_) => {
                    tracing::debug!(address = %backend.address, "worker statistics timed out");
                    None
                }
            }
        }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Sums the statistics of several workers per (name, version), sorted by name then version.
pub fn merge_responses(
    responses: impl IntoIterator<Item = ModelStatisticsResponse>,
) -> Vec<ModelStatistics> {
    let mut by_model: BTreeMap<(String, String), ModelStatistics> = BTreeMap::new();
    for stats in responses.into_iter().flat_map(|r| r.model_stats) {
        let key = (stats.name.clone(), stats.version.clone());
        match by_model.get_mut(&key) {
            Some(total) => merge(total, stats),
            None => {
                by_model.insert(key, stats);
            }
        }
    }
    by_model.into_values().collect()
}

/// Adds `other` into `total` (same model and version).
pub fn merge(total: &mut ModelStatistics, other: ModelStatistics) {
    total.last_inference = total.last_inference.max(other.last_inference);
    total.inference_count = total.inference_count.saturating_add(other.inference_count);
    total.execution_count = total.execution_count.saturating_add(other.execution_count);
    if let Some(o) = other.inference_stats {
        let t = total.inference_stats.get_or_insert_with(Default::default);
        merge_infer(t, o);
    }
    for batch in other.batch_stats {
        match total
            .batch_stats
            .iter_mut()
            .find(|b| b.batch_size == batch.batch_size)
        {
            Some(t) => merge_batch(t, batch),
            None => total.batch_stats.push(batch),
        }
    }
    total.batch_stats.sort_by_key(|b| b.batch_size);
    total.memory_usage.extend(other.memory_usage);
    for (key, response) in other.response_stats {
        merge_response(total.response_stats.entry(key).or_default(), response);
    }
}

fn add(total: &mut Option<StatisticDuration>, other: Option<StatisticDuration>) {
    if let Some(o) = other {
        let t = total.get_or_insert_with(Default::default);
        t.count = t.count.saturating_add(o.count);
        t.ns = t.ns.saturating_add(o.ns);
    }
}

fn merge_infer(t: &mut InferStatistics, o: InferStatistics) {
    add(&mut t.success, o.success);
    add(&mut t.fail, o.fail);
    add(&mut t.queue, o.queue);
    add(&mut t.compute_input, o.compute_input);
    add(&mut t.compute_infer, o.compute_infer);
    add(&mut t.compute_output, o.compute_output);
    add(&mut t.cache_hit, o.cache_hit);
    add(&mut t.cache_miss, o.cache_miss);
}

fn merge_batch(t: &mut InferBatchStatistics, o: InferBatchStatistics) {
    add(&mut t.compute_input, o.compute_input);
    add(&mut t.compute_infer, o.compute_infer);
    add(&mut t.compute_output, o.compute_output);
}

fn merge_response(t: &mut InferResponseStatistics, o: InferResponseStatistics) {
    add(&mut t.compute_infer, o.compute_infer);
    add(&mut t.compute_output, o.compute_output);
    add(&mut t.success, o.success);
    add(&mut t.fail, o.fail);
    add(&mut t.empty_response, o.empty_response);
    add(&mut t.cancel, o.cancel);
}

/// An all-zero entry, for a model version the table knows but no worker reported.
pub fn empty(name: &str, version: &str) -> ModelStatistics {
    let zero = || Some(StatisticDuration::default());
    ModelStatistics {
        name: name.to_owned(),
        version: version.to_owned(),
        inference_stats: Some(InferStatistics {
            success: zero(),
            fail: zero(),
            queue: zero(),
            compute_input: zero(),
            compute_infer: zero(),
            compute_output: zero(),
            cache_hit: zero(),
            cache_miss: zero(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use kiln_proto::inference::MemoryUsage;

    use super::*;

    fn d(count: u64, ns: u64) -> Option<StatisticDuration> {
        Some(StatisticDuration { count, ns })
    }

    fn stats(version: &str, n: u64, last: u64, batch_sizes: &[u64]) -> ModelStatistics {
        ModelStatistics {
            name: "m".into(),
            version: version.into(),
            last_inference: last,
            inference_count: n,
            execution_count: n / 2,
            inference_stats: Some(InferStatistics {
                success: d(n, n * 100),
                queue: d(n, n * 10),
                compute_infer: d(n, n * 50),
                ..Default::default()
            }),
            batch_stats: batch_sizes
                .iter()
                .map(|b| InferBatchStatistics {
                    batch_size: *b,
                    compute_infer: d(1, *b * 1000),
                    ..Default::default()
                })
                .collect(),
            memory_usage: vec![MemoryUsage {
                r#type: "CPU".into(),
                id: 0,
                byte_size: 10,
            }],
            response_stats: [(
                "0".to_string(),
                InferResponseStatistics {
                    success: d(n, 1),
                    ..Default::default()
                },
            )]
            .into(),
        }
    }

    #[test]
    fn sums_per_model_version() {
        let a = ModelStatisticsResponse {
            model_stats: vec![stats("1", 4, 100, &[1, 4]), stats("2", 1, 50, &[])],
        };
        let b = ModelStatisticsResponse {
            model_stats: vec![stats("1", 6, 300, &[4, 8])],
        };
        let merged = merge_responses([a, b]);
        assert_eq!(merged.len(), 2);
        let v1 = &merged[0];
        assert_eq!((v1.name.as_str(), v1.version.as_str()), ("m", "1"));
        assert_eq!(v1.inference_count, 10);
        assert_eq!(v1.execution_count, 2 + 3);
        assert_eq!(v1.last_inference, 300);
        let is = v1.inference_stats.as_ref().unwrap();
        assert_eq!(is.success, d(10, 1000));
        assert_eq!(is.queue, d(10, 100));
        assert_eq!(is.compute_infer, d(10, 500));
        assert_eq!(is.fail, None);
        let batches: Vec<_> = v1
            .batch_stats
            .iter()
            .map(|b| (b.batch_size, b.compute_infer.unwrap().count))
            .collect();
        assert_eq!(batches, [(1, 1), (4, 2), (8, 1)]);
        assert_eq!(v1.memory_usage.len(), 2);
        assert_eq!(v1.response_stats["0"].success, d(10, 2));
        assert_eq!(merged[1].inference_count, 1);
    }

    #[test]
    fn empty_entry_has_zero_durations() {
        let e = empty("m", "3");
        assert_eq!(e.inference_count, 0);
        assert_eq!(e.inference_stats.unwrap().queue, d(0, 0));
    }
}
