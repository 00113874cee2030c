//! The dynamic batcher through the worker's gRPC service, on the real digits package with a
//! queue delay: concurrent requests of mixed batch sizes are merged into fewer executions, each
//! request gets exactly its own rows (parity with onnxruntime), and ModelStatistics reports the
//! executions and their batch sizes. Queue ordering, priorities, expiry and the full queue are
//! tested deterministically in the executor's and the batch former's unit tests.

mod common;

use std::path::PathBuf;

use common::*;
use kiln_coord::codec::ReplicaState;
use kiln_proto::inference::*;

/// A copy of digits/1 whose manifest's `[batching]` table is `batching`.
fn package_with(tag: &str, batching: &str) -> PathBuf {
    let src = package_dir();
    let dir = std::env::temp_dir().join(format!("kiln-batching-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "kiln.toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let manifest = std::fs::read_to_string(src.join("kiln.toml")).unwrap();
    let head = &manifest[..manifest.find("[batching]").expect("a [batching] table")];
    std::fs::write(
        dir.join("kiln.toml"),
        format!("{head}[batching]\n{batching}\n"),
    )
    .unwrap();
    dir
}

/// A worker serving digits/1 from `dir`, READY.
async fn worker_over(dir: &std::path::Path, id: &str, threads: usize) -> Fixture {
    let coord = coordinator();
    let mut record = digits_record();
    record.package_uri = dir.display().to_string();
    register(&coord, &record).await;
    assign(&coord, id, "digits", "1").await;
    let config = kiln_worker::Config {
        compute_threads: threads,
        ..config(id)
    };
    let worker = kiln_worker::start(config, coord.clone()).await.unwrap();
    wait_replica(&coord, "digits", "1", id, ReplicaState::Ready).await;
    let client = client(&worker).await;
    Fixture {
        coord,
        worker,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_batches_merge_and_each_get_their_own_rows() {
    let dir = package_with(
        "mixed",
        "max_queue_delay_microseconds = 10000\nmax_queue_size = 1024",
    );
    let mut f = worker_over(&dir, "w-batch", 1).await;
    let config = f
        .client
        .model_config(ModelConfigRequest {
            name: "digits".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let batching = config.dynamic_batching.unwrap();
    assert_eq!(batching.max_queue_delay_microseconds, 10_000);

    let data = std::sync::Arc::new(heldout());
    // 40 requests of 1, 3 and 5 rows over distinct held-out rows, all in flight at once.
    let mut start = 0;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let rows = [1, 3, 5][i % 3];
        let (first, data, mut client) = (start, data.clone(), f.client.clone());
        start += rows;
        tasks.push(tokio::spawn(async move {
            let mut req = raw_request(&data.inputs[first..first + rows]);
            req.id = format!("r{i}");
            let resp = client.model_infer(req).await.unwrap().into_inner();
            assert_eq!(resp.id, format!("r{i}"));
            assert_eq!(resp.outputs[0].shape, vec![rows as i64]);
            assert_eq!(resp.outputs[1].shape, vec![rows as i64, 10]);
            let (labels, probs) = raw_outputs(&resp);
            assert_eq!(labels.len(), rows);
            assert_parity(&data, first, &labels, &probs);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total_rows = start as u64;

    let resp = f
        .client
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = &resp.model_stats[0];
    let inference = s.inference_stats.unwrap();
    assert_eq!(inference.success.unwrap().count, 40);
    assert_eq!(inference.queue.unwrap().count, 40);
    assert_eq!(inference.compute_infer.unwrap().count, 40);
    assert_eq!(s.inference_count, total_rows);
    assert!(
        s.execution_count < 40,
        "requests were merged: {} executions for 40 requests",
        s.execution_count
    );
    // One entry per executed batch size; together they account for every execution and row.
    let executions: u64 = s
        .batch_stats
        .iter()
        .map(|b| b.compute_infer.unwrap().count)
        .sum();
    assert_eq!(executions, s.execution_count);
    let rows: u64 = s
        .batch_stats
        .iter()
        .map(|b| b.batch_size * b.compute_infer.unwrap().count)
        .sum();
    assert_eq!(rows, total_rows);
    // Fewer executions than requests means some batch merged several requests.
    assert!(
        s.batch_stats.iter().any(|b| b.batch_size > 1),
        "{:?}",
        s.batch_stats
    );
    assert!(s.batch_stats.iter().all(|b| b.batch_size <= 64));
    for b in &s.batch_stats {
        let (input, output) = (b.compute_input.unwrap(), b.compute_output.unwrap());
        assert_eq!(input.count, b.compute_infer.unwrap().count);
        assert_eq!(output.count, b.compute_infer.unwrap().count);
    }
    f.worker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_run_one_execution_each() {
    // No delay: a lone request never waits, and counters match the request-per-execution case.
    let dir = package_with("single", "max_queue_delay_microseconds = 0");
    let mut f = worker_over(&dir, "w-single", 2).await;
    let data = heldout();
    for (i, rows) in [2usize, 7].into_iter().enumerate() {
        let resp = f
            .client
            .model_infer(raw_request(&data.inputs[i * 10..i * 10 + rows]))
            .await
            .unwrap()
            .into_inner();
        let (labels, probs) = raw_outputs(&resp);
        assert_parity(&data, i * 10, &labels, &probs);
    }
    let resp = f
        .client
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = &resp.model_stats[0];
    assert_eq!(s.execution_count, 2);
    assert_eq!(s.inference_count, 9);
    let sizes: Vec<_> = s.batch_stats.iter().map(|b| b.batch_size).collect();
    assert_eq!(sizes, [2, 7]);
    f.worker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
