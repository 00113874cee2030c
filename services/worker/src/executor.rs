//! The compute side of one loaded model version: a bounded queue feeding a pool of dedicated
//! threads (DESIGN.md §5: burn never runs on tokio's async workers).
//!
//! Guarantees:
//! - [`Executor::submit`] never blocks: if the queue is full it fails at once with
//!   [`WorkerError::QueueFull`] (RESOURCE_EXHAUSTED), the back-pressure signal of DESIGN.md §6;
//! - a job whose caller's deadline has passed, or whose caller has gone away, when a thread
//!   dequeues it is answered without computing ([`WorkerError::DeadlineExceeded`]);
//! - every job is answered exactly once, with its queue and compute times; a panic in the model
//!   is caught and answered as an internal error, and the thread lives on;
//! - dropping the executor closes the queue: the threads finish the jobs already queued and exit.
//!
//! The interface (`submit` a request's tensors, await its outputs and timings) is what the
//! dynamic batcher of issue 3 will keep; only the inside of this module changes.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_model::{HostTensor, Model, ModelError};
use tokio::sync::oneshot;

use crate::error::WorkerError;

/// Named tensors, in and out of a model.
pub type Tensors = Vec<(String, HostTensor)>;

/// Something that computes outputs from inputs, blocking: the model runtime, or a fake in tests.
pub trait Runner: Send + Sync + 'static {
    /// Runs one inference.
    fn run(&self, inputs: Tensors) -> Result<Tensors, ModelError>;
}

impl Runner for Model {
    fn run(&self, inputs: Tensors) -> Result<Tensors, ModelError> {
        self.infer(inputs)
    }
}

/// The result of one job.
#[derive(Debug)]
pub struct Executed {
    /// The model's outputs, in manifest order.
    pub outputs: Tensors,
    /// Time from submission to a thread taking the job.
    pub queue: Duration,
    /// Time spent in the model.
    pub compute: Duration,
}

struct Job {
    inputs: Tensors,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Executed, WorkerError>>,
}

/// A bounded queue and its compute threads for one model version.
pub struct Executor {
    model: String,
    version: String,
    capacity: usize,
    queue: SyncSender<Job>,
}

impl Executor {
    /// Starts `threads` compute threads (at least one) behind a queue of `capacity` jobs (at
    /// least one). `model` and `version` name the threads and the errors.
    pub fn start(
        model: &str,
        version: &str,
        runner: Arc<dyn Runner>,
        threads: usize,
        capacity: usize,
    ) -> std::io::Result<Self> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let runner = runner.clone();
            std::thread::Builder::new()
                .name(format!("kiln-compute-{model}-{version}-{i}"))
                .spawn(move || compute_loop(&rx, runner.as_ref()))?;
        }
        Ok(Self {
            model: model.to_string(),
            version: version.to_string(),
            capacity,
            queue: tx,
        })
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `inputs` and waits for the outputs. Fails at once if the queue is full; answers
    /// [`WorkerError::DeadlineExceeded`] if `deadline` has passed when a thread takes the job.
    /// Dropping the returned future withdraws the request: it is skipped when dequeued.
    pub async fn submit(
        &self,
        inputs: Tensors,
        deadline: Option<Instant>,
    ) -> Result<Executed, WorkerError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            deadline,
            enqueued: Instant::now(),
            reply,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(WorkerError::QueueFull {
                    model: self.model.clone(),
                    version: self.version.clone(),
                    capacity: self.capacity,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(WorkerError::Unavailable(format!(
                    "model {} version {} is unloading",
                    self.model, self.version
                )));
            }
        }
        answer.await.map_err(|_| {
            WorkerError::Internal(format!(
                "compute thread of {} version {} dropped the request",
                self.model, self.version
            ))
        })?
    }
}

fn compute_loop(queue: &Mutex<Receiver<Job>>, runner: &dyn Runner) {
    loop {
        // Holding the lock while blocked in recv is fine: the other threads could only wait for
        // the same next job anyway.
        let job = {
            let rx = queue.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let taken = Instant::now();
        let queue_time = taken - job.enqueued;
        if job.reply.is_closed() {
            continue; // the caller gave up (cancelled or timed out)
        }
        if job.deadline.is_some_and(|d| taken >= d) {
            let _ = job.reply.send(Err(WorkerError::DeadlineExceeded));
            continue;
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| runner.run(job.inputs)));
        let compute = taken.elapsed();
        let answer = match result {
            Ok(Ok(outputs)) => Ok(Executed {
                outputs,
                queue: queue_time,
                compute,
            }),
            Ok(Err(e)) => Err(WorkerError::Model(e)),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(WorkerError::Internal(format!("model panicked: {what}")))
            }
        };
        let _ = job.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::HostData;

    /// Doubles `x`; waits for a go signal first when gated; panics on an empty input.
    struct Fake {
        started: Mutex<mpsc::Sender<()>>,
        gate: Mutex<Option<Receiver<()>>>,
    }

    impl Runner for Fake {
        fn run(&self, inputs: Tensors) -> Result<Tensors, ModelError> {
            let _ = self.started.lock().unwrap().send(());
            if let Some(gate) = self.gate.lock().unwrap().as_ref() {
                let _ = gate.recv();
            }
            let (name, t) = inputs.into_iter().next().unwrap();
            let HostData::F32(v) = t.data else {
                return Err(ModelError::InvalidInput {
                    name,
                    reason: "not FP32".into(),
                });
            };
            assert!(!v.is_empty(), "empty input");
            Ok(vec![(
                "y".into(),
                HostTensor {
                    shape: t.shape,
                    data: HostData::F32(v.iter().map(|x| x * 2.0).collect()),
                },
            )])
        }
    }

    fn fake(gated: bool) -> (Arc<Fake>, mpsc::Receiver<()>, Option<mpsc::Sender<()>>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        let f = Arc::new(Fake {
            started: Mutex::new(started_tx),
            gate: Mutex::new(gated.then_some(go_rx)),
        });
        (f, started_rx, gated.then_some(go_tx))
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

    #[tokio::test]
    async fn computes_off_the_runtime() {
        let (f, _started, _) = fake(false);
        let ex = Executor::start("m", "1", f, 2, 4).unwrap();
        let out = ex.submit(x(&[1.0, 2.0]), None).await.unwrap();
        assert_eq!(out.outputs[0].1.data, HostData::F32(vec![2.0, 4.0]));
    }

    #[tokio::test]
    async fn full_queue_is_refused_at_once() {
        let (f, started, go) = fake(true);
        let ex = Arc::new(Executor::start("m", "1", f, 1, 1).unwrap());
        let first = tokio::spawn({
            let ex = ex.clone();
            async move { ex.submit(x(&[1.0]), None).await }
        });
        // The thread holds the first job...
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // ...the second fills the queue (its first poll enqueues it)...
        let mut second = Box::pin(ex.submit(x(&[2.0]), None));
        assert!(futures::poll!(&mut second).is_pending());
        // ...and the third is refused without waiting.
        let third = ex.submit(x(&[3.0]), None).await.map(|_| ());
        assert!(
            matches!(third, Err(WorkerError::QueueFull { capacity: 1, .. })),
            "{third:?}"
        );
        let go = go.unwrap();
        go.send(()).unwrap();
        go.send(()).unwrap();
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.is_ok());
    }

    #[tokio::test]
    async fn expired_deadline_skips_compute() {
        let (f, started, _) = fake(false);
        let ex = Executor::start("m", "1", f, 1, 4).unwrap();
        let past = Instant::now() - Duration::from_millis(1);
        let err = ex.submit(x(&[1.0]), Some(past)).await.unwrap_err();
        assert!(matches!(err, WorkerError::DeadlineExceeded));
        assert!(started.try_recv().is_err(), "the model must not run");
        let later = Instant::now() + Duration::from_secs(60);
        assert!(ex.submit(x(&[1.0]), Some(later)).await.is_ok());
    }

    #[tokio::test]
    async fn model_errors_and_panics_are_answered() {
        let (f, _started, _) = fake(false);
        let ex = Executor::start("m", "1", f, 1, 4).unwrap();
        let bad = vec![(
            "x".to_string(),
            HostTensor {
                shape: vec![1],
                data: HostData::I64(vec![1]),
            },
        )];
        let err = ex.submit(bad, None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = ex.submit(x(&[]), None).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        // The thread survived the panic.
        assert!(ex.submit(x(&[1.0]), None).await.is_ok());
    }
}
