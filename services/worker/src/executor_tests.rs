use super::*;
use kiln_model::HostData;
use std::sync::mpsc;

/// Doubles `x`, recording each call's input; waits for a go signal first when gated; panics
/// on an empty input.
struct Fake {
    started: Mutex<mpsc::Sender<Vec<f32>>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Runner for Fake {
    fn run(&self, inputs: Tensors) -> Result<Tensors, ModelError> {
        let (name, t) = inputs.into_iter().next().unwrap();
        let HostData::F32(v) = t.data else {
            return Err(ModelError::InvalidInput {
                name,
                reason: "not FP32".into(),
            });
        };
        let _ = self.started.lock().unwrap().send(v.clone());
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            let _ = gate.recv();
        }
        assert!(!v.is_empty(), "empty input");
        if v.iter().any(|x| *x < 0.0) {
            return Err(ModelError::InvalidInput {
                name,
                reason: "negative".into(),
            });
        }
        Ok(vec![(
            "y".into(),
            HostTensor {
                shape: t.shape,
                data: HostData::F32(v.iter().map(|x| x * 2.0).collect()),
            },
        )])
    }
}

struct Harness {
    fake: Arc<Fake>,
    /// Each model run's input values, in run order.
    runs: mpsc::Receiver<Vec<f32>>,
    go: Option<mpsc::Sender<()>>,
}

fn fake(gated: bool) -> Harness {
    let (started_tx, runs) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let fake = Arc::new(Fake {
        started: Mutex::new(started_tx),
        gate: Mutex::new(gated.then_some(go_rx)),
    });
    Harness {
        fake,
        runs,
        go: gated.then_some(go_tx),
    }
}

/// Waits (off the runtime) for the next model run and returns its input.
async fn next_run(runs: &Arc<Mutex<mpsc::Receiver<Vec<f32>>>>) -> Vec<f32> {
    let runs = runs.clone();
    tokio::task::spawn_blocking(move || {
        runs.lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
    })
    .await
    .unwrap()
}

fn x(values: &[f32]) -> Tensors {
    vec![(
        "x".into(),
        HostTensor {
            shape: vec![values.len()],
            data: HostData::F32(values.to_vec()),
        },
    )]
}

fn y(e: &Executed) -> Vec<f32> {
    match &e.outputs[0].1.data {
        HostData::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

const NORMAL: Priority = Priority::Normal;

#[tokio::test]
async fn computes_off_the_runtime() {
    let h = fake(false);
    let ex = Executor::start("m", "1", h.fake, Settings::new(2, 4)).unwrap();
    let out = ex.submit(x(&[1.0, 2.0]), None, NORMAL).await.unwrap();
    assert_eq!(out.outputs[0].1.data, HostData::F32(vec![2.0, 4.0]));
}

#[tokio::test]
async fn full_queue_is_refused_at_once() {
    let h = fake(true);
    let runs = Arc::new(Mutex::new(h.runs));
    let ex = Arc::new(Executor::start("m", "1", h.fake, Settings::new(1, 1)).unwrap());
    let first = tokio::spawn({
        let ex = ex.clone();
        async move { ex.submit(x(&[1.0]), None, NORMAL).await }
    });
    // The thread holds the first job...
    next_run(&runs).await;
    // ...the second fills the queue (its first poll enqueues it)...
    let mut second = Box::pin(ex.submit(x(&[2.0]), None, NORMAL));
    assert!(futures::poll!(&mut second).is_pending());
    // ...and the third is refused without waiting.
    let third = ex.submit(x(&[3.0]), None, NORMAL).await.map(|_| ());
    assert!(
        matches!(third, Err(WorkerError::QueueFull { capacity: 1, .. })),
        "{third:?}"
    );
    let status = tonic::Status::from(third.unwrap_err());
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let go = h.go.unwrap();
    go.send(()).unwrap();
    go.send(()).unwrap();
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.is_ok());
}

#[tokio::test]
async fn refusing_when_busy_admits_only_while_a_thread_is_free() {
    let h = fake(true);
    let runs = Arc::new(Mutex::new(h.runs));
    let settings = Settings {
        refuse_when_busy: true,
        ..Settings::new(1, 8)
    };
    let ex = Arc::new(Executor::start("m", "1", h.fake, settings).unwrap());
    let first = tokio::spawn({
        let ex = ex.clone();
        async move { ex.submit(x(&[1.0]), None, NORMAL).await }
    });
    // The only thread computes: with room in the queue, a request is still refused at once.
    next_run(&runs).await;
    let refused = ex.submit(x(&[2.0]), None, NORMAL).await.map(|_| ());
    assert!(
        matches!(refused, Err(WorkerError::Busy { instances: 1, .. })),
        "{refused:?}"
    );
    let status = tonic::Status::from(refused.unwrap_err());
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(matches!(ex.admit(), Err(WorkerError::Busy { .. })));
    let go = h.go.unwrap();
    go.send(()).unwrap();
    assert!(first.await.unwrap().is_ok());
    // Once the thread is free again, requests are admitted and computed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ex.admit().is_err() {
        assert!(Instant::now() < deadline, "the thread never became free");
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap();
    let out = ex.submit(x(&[3.0]), None, NORMAL).await.unwrap();
    assert_eq!(y(&out), vec![6.0]);
    // The refused request never ran.
    assert_eq!(next_run(&runs).await, vec![3.0]);
}

#[tokio::test]
async fn expired_deadline_skips_compute() {
    let h = fake(false);
    let ex = Executor::start("m", "1", h.fake, Settings::new(1, 4)).unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    let err = ex.submit(x(&[1.0]), Some(past), NORMAL).await.unwrap_err();
    assert!(matches!(err, WorkerError::DeadlineExceeded));
    assert!(h.runs.try_recv().is_err(), "the model must not run");
    assert_eq!((ex.expired(), ex.canceled()), (1, 0));
    let later = Instant::now() + Duration::from_secs(60);
    assert!(ex.submit(x(&[1.0]), Some(later), NORMAL).await.is_ok());
}

#[tokio::test]
async fn model_errors_and_panics_are_answered() {
    let h = fake(false);
    let ex = Executor::start("m", "1", h.fake, Settings::new(1, 4)).unwrap();
    let bad = vec![(
        "x".to_string(),
        HostTensor {
            shape: vec![1],
            data: HostData::I64(vec![1]),
        },
    )];
    let err = ex.submit(bad, None, NORMAL).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = ex.submit(x(&[]), None, NORMAL).await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    // The thread survived the panic.
    assert!(ex.submit(x(&[1.0]), None, NORMAL).await.is_ok());
}

fn batching(max_batch_size: usize, preferred: Vec<usize>, delay: Duration) -> Policy {
    Policy {
        max_batch_size,
        preferred,
        max_queue_delay: delay,
    }
}

#[tokio::test]
async fn high_priority_is_served_first() {
    let h = fake(true);
    let runs = Arc::new(Mutex::new(h.runs));
    // No merging: each request is its own run, so the run order is the service order.
    let ex = Executor::start("m", "1", h.fake, Settings::new(1, 8)).unwrap();
    let mut first = Box::pin(ex.submit(x(&[1.0]), None, NORMAL));
    assert!(futures::poll!(&mut first).is_pending());
    // The single compute thread is held by the gate with the first request...
    assert_eq!(next_run(&runs).await, [1.0]);
    // ...while two normal requests and then a high one queue up.
    let mut n1 = Box::pin(ex.submit(x(&[2.0]), None, NORMAL));
    let mut n2 = Box::pin(ex.submit(x(&[3.0]), None, NORMAL));
    let mut high = Box::pin(ex.submit(x(&[4.0]), None, Priority::High));
    for f in [&mut n1, &mut n2, &mut high] {
        assert!(futures::poll!(f).is_pending());
    }
    let go = h.go.unwrap();
    for _ in 0..4 {
        go.send(()).unwrap();
    }
    assert_eq!(next_run(&runs).await, [4.0], "the high request goes next");
    assert_eq!(next_run(&runs).await, [2.0]);
    assert_eq!(next_run(&runs).await, [3.0]);
    assert_eq!(y(&high.await.unwrap()), [8.0]);
    assert_eq!(y(&n1.await.unwrap()), [4.0]);
    assert_eq!(y(&n2.await.unwrap()), [6.0]);
    assert_eq!(y(&first.await.unwrap()), [2.0]);
}

#[tokio::test]
async fn merges_queued_requests_and_skips_dead_ones() {
    let h = fake(true);
    let runs = Arc::new(Mutex::new(h.runs));
    let executions = Arc::new(Mutex::new(Vec::new()));
    let settings = Settings {
        policy: batching(8, vec![], Duration::ZERO),
        on_execution: {
            let executions = executions.clone();
            Arc::new(move |e: &Execution| executions.lock().unwrap().push(*e))
        },
        ..Settings::new(1, 16)
    };
    let ex = Executor::start("m", "1", h.fake, settings).unwrap();
    let mut a = Box::pin(ex.submit(x(&[1.0]), None, NORMAL));
    assert!(futures::poll!(&mut a).is_pending());
    assert_eq!(next_run(&runs).await, [1.0]);
    // Queued behind the gate: rows 2, an expired one, a withdrawn one, rows 3, a high one,
    // and one too big to join the others (2 + 3 + 1 + 4 > 8).
    let past = Instant::now() - Duration::from_millis(1);
    let mut b = Box::pin(ex.submit(x(&[2.0, 3.0]), None, NORMAL));
    let mut expired = Box::pin(ex.submit(x(&[9.0]), Some(past), NORMAL));
    let mut gone = Box::pin(ex.submit(x(&[9.5]), None, NORMAL));
    let mut d = Box::pin(ex.submit(x(&[5.0, 6.0, 7.0]), None, NORMAL));
    let mut e = Box::pin(ex.submit(x(&[8.0]), None, Priority::High));
    let mut big = Box::pin(ex.submit(x(&[10.0, 11.0, 12.0, 13.0]), None, NORMAL));
    for f in [&mut b, &mut expired, &mut gone, &mut d, &mut e, &mut big] {
        assert!(futures::poll!(f).is_pending());
    }
    drop(gone);
    let go = h.go.unwrap();
    for _ in 0..3 {
        go.send(()).unwrap();
    }
    assert_eq!(
        next_run(&runs).await,
        [8.0, 2.0, 3.0, 5.0, 6.0, 7.0],
        "high first, then normal in order, dead ones left out"
    );
    assert_eq!(next_run(&runs).await, [10.0, 11.0, 12.0, 13.0]);
    assert_eq!(y(&e.await.unwrap()), [16.0]);
    assert_eq!(y(&b.await.unwrap()), [4.0, 6.0]);
    assert_eq!(y(&d.await.unwrap()), [10.0, 12.0, 14.0]);
    assert_eq!(y(&big.await.unwrap()), [20.0, 22.0, 24.0, 26.0]);
    assert_eq!(y(&a.await.unwrap()), [2.0]);
    assert!(matches!(
        expired.await.unwrap_err(),
        WorkerError::DeadlineExceeded
    ));
    assert_eq!(
        (ex.expired(), ex.canceled()),
        (1, 1),
        "the expired and the withdrawn request"
    );
    let executions = executions.lock().unwrap().clone();
    let shape: Vec<_> = executions.iter().map(|e| (e.rows, e.requests)).collect();
    assert_eq!(shape, [(1, 1), (6, 3), (4, 1)]);
}

#[tokio::test]
async fn a_preferred_size_ends_the_wait() {
    let h = fake(false);
    // A delay far longer than the test's patience: only the preferred size can end it.
    let settings = Settings {
        policy: batching(8, vec![2], Duration::from_secs(600)),
        ..Settings::new(1, 16)
    };
    let ex = Executor::start("m", "1", h.fake, settings).unwrap();
    let mut a = Box::pin(ex.submit(x(&[1.0]), None, NORMAL));
    assert!(futures::poll!(&mut a).is_pending());
    let b = ex.submit(x(&[2.0]), None, NORMAL);
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), futures::future::join(a, b))
        .await
        .expect("the batch of the preferred size runs at once");
    assert_eq!(y(&a.unwrap()), [2.0]);
    assert_eq!(y(&b.unwrap()), [4.0]);
    assert_eq!(h.runs.try_recv().unwrap(), [1.0, 2.0]);
}

#[tokio::test]
async fn a_failed_batch_reruns_each_request_alone() {
    let h = fake(false);
    let settings = Settings {
        policy: batching(2, vec![], Duration::from_secs(600)),
        ..Settings::new(1, 16)
    };
    let ex = Executor::start("m", "1", h.fake, settings).unwrap();
    // Together they fail (a negative value); alone only the negative one does.
    let good = ex.submit(x(&[1.0]), None, NORMAL);
    let bad = ex.submit(x(&[-1.0]), None, NORMAL);
    let (good, bad) = futures::future::join(good, bad).await;
    assert_eq!(y(&good.unwrap()), [2.0]);
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let runs: Vec<Vec<f32>> = h.runs.try_iter().collect();
    assert_eq!(runs, [vec![1.0, -1.0], vec![1.0], vec![-1.0]]);
}

#[tokio::test]
async fn a_request_expiring_while_its_batch_waits_is_not_computed() {
    let h = fake(false);
    let settings = Settings {
        policy: batching(2, vec![], Duration::from_secs(600)),
        ..Settings::new(1, 16)
    };
    let ex = Executor::start("m", "1", h.fake, settings).unwrap();
    // The first request's deadline passes while the batch waits for a second one, whose
    // arrival (the batch is then full) sends the batch to compute.
    let soon = Instant::now() + Duration::from_millis(300);
    let mut first = Box::pin(ex.submit(x(&[1.0]), Some(soon), NORMAL));
    assert!(futures::poll!(&mut first).is_pending());
    // Wait (polling, bounded) until the compute thread has taken it into its batch...
    let give_up = Instant::now() + Duration::from_secs(30);
    while ex.queued() > 0 {
        assert!(
            Instant::now() < give_up,
            "the compute thread never took the request"
        );
        tokio::task::yield_now().await;
    }
    // ...and until its deadline has passed.
    tokio::task::spawn_blocking(move || {
        while Instant::now() <= soon {
            std::thread::yield_now();
        }
    })
    .await
    .unwrap();
    let second = ex.submit(x(&[2.0]), None, NORMAL).await.unwrap();
    assert_eq!(y(&second), [4.0]);
    assert!(matches!(
        first.await.unwrap_err(),
        WorkerError::DeadlineExceeded
    ));
    assert_eq!((ex.expired(), ex.canceled()), (1, 0));
    let runs: Vec<Vec<f32>> = h.runs.try_iter().collect();
    assert_eq!(runs, [vec![2.0]], "only the live request ran");
}
