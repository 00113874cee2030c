//! The compute side of one loaded model version: the dynamic batcher. A bounded two-level
//! priority queue feeds a pool of dedicated compute threads (DESIGN.md §5: burn never runs on
//! tokio's async workers); a thread forms a batch from queued requests by the policy of
//! [`crate::batch`], runs it once through the model and splits the outputs back (DESIGN.md §6).
//!
//! Guarantees:
//! - [`Executor::submit`] never blocks: if the queue is full it fails at once with
//!   [`WorkerError::QueueFull`] (RESOURCE_EXHAUSTED), the back-pressure signal of DESIGN.md §6;
//! - with `refuse_when_busy`, a request arriving while every thread computes is refused at once
//!   ([`WorkerError::Busy`]) instead of queueing behind the running batches;
//! - high-priority requests are taken before normal ones; within a level, oldest first;
//! - one thread at a time forms a batch (the others wait or compute), so concurrent requests
//!   gather into one batch rather than spreading over idle threads;
//! - a request whose deadline has passed, or whose caller has gone away, is never computed: it is
//!   answered [`WorkerError::DeadlineExceeded`] and counted in [`Executor::expired`] (or, caller
//!   gone, dropped and counted in [`Executor::canceled`]);
//! - every request is answered exactly once with its own rows of the outputs, its queue time and
//!   the batch's compute time; if a merged batch fails (model error or panic) each of its
//!   requests is run again alone, so a bad request only fails itself; a panic is answered as an
//!   internal error and the thread lives on;
//! - every successful model execution is reported once to the [`OnExecution`] hook (batch
//!   statistics);
//! - dropping the executor closes the queue: the threads finish the requests already queued and
//!   exit.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kiln_model::{HostTensor, Model, ModelError};
use tokio::sync::oneshot;

use crate::batch::{self, Pending, Policy, Priority, Queues, Step};
use crate::error::WorkerError;

/// Named tensors, in and out of a model.
pub type Tensors = Vec<(String, HostTensor)>;

/// Something that computes outputs from inputs, blocking: the model runtime, or a fake in tests.
pub trait Runner: Send + Sync + 'static {
    /// Runs one inference over a whole batch.
    fn run(&self, inputs: Tensors) -> Result<Tensors, ModelError>;
}

impl Runner for Model {
    fn run(&self, inputs: Tensors) -> Result<Tensors, ModelError> {
        self.infer(inputs)
    }
}

/// The result of one request.
#[derive(Debug)]
pub struct Executed {
    /// The request's rows of the model's outputs, in manifest order.
    pub outputs: Tensors,
    /// Time from submission to its batch starting to compute.
    pub queue: Duration,
    /// Time its batch spent in the model.
    pub compute: Duration,
}

/// One successful model execution, as reported to [`OnExecution`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Execution {
    /// Rows in the batch (the sum of its requests' rows).
    pub rows: u64,
    /// Requests merged into the batch.
    pub requests: u64,
    /// Concatenating the requests' inputs.
    pub compute_input: Duration,
    /// Running the model.
    pub compute_infer: Duration,
    /// Splitting the outputs back.
    pub compute_output: Duration,
}

/// Called on a compute thread after every successful model execution.
pub type OnExecution = Arc<dyn Fn(&Execution) + Send + Sync>;

/// How an executor runs.
#[derive(Clone)]
pub struct Settings {
    /// Compute threads (at least one).
    pub threads: usize,
    /// Queued requests before new ones are refused (at least one).
    pub capacity: usize,
    /// Refuse new requests while every thread is computing (see
    /// `kiln_model::BatchingConfig::refuse_when_busy`).
    pub refuse_when_busy: bool,
    /// How batches are formed.
    pub policy: Policy,
    /// Told of every execution.
    pub on_execution: OnExecution,
}

impl Settings {
    /// `threads` threads, a queue of `capacity`, no batching, no hook.
    pub fn new(threads: usize, capacity: usize) -> Self {
        Self {
            threads,
            capacity,
            refuse_when_busy: false,
            policy: Policy::default(),
            on_execution: Arc::new(|_| {}),
        }
    }
}

struct Job {
    inputs: Tensors,
    rows: usize,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Executed, WorkerError>>,
}

impl Pending for Job {
    fn rows(&self) -> usize {
        self.rows
    }

    fn merges_with(&self, other: &Self) -> bool {
        batch::same_signature(&self.inputs, &other.inputs)
    }

    fn is_live(&self, now: Instant) -> bool {
        !self.reply.is_closed() && self.deadline.is_none_or(|d| now < d)
    }

    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}

#[derive(Default)]
struct State {
    queue: Queues<Job>,
    /// A thread is forming a batch; the others leave the queue to it.
    forming: bool,
    /// Threads running a batch now.
    computing: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    policy: Policy,
    on_execution: OnExecution,
    expired: AtomicU64,
    canceled: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers requests that will not be computed.
    fn skip(&self, dead: &mut Vec<Job>) {
        for job in dead.drain(..) {
            if job.reply.is_closed() {
                self.canceled.fetch_add(1, Ordering::Relaxed);
            } else {
                self.expired.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(Err(WorkerError::DeadlineExceeded));
            }
        }
    }
}

/// The dynamic batcher of one model version: its queue and compute threads.
pub struct Executor {
    model: String,
    version: String,
    capacity: usize,
    /// Compute threads, when requests are refused while all of them compute; else `None`.
    refuse_when_busy: Option<usize>,
    shared: Arc<Shared>,
}

impl Executor {
    /// Starts the compute threads. `model` and `version` name the threads and the errors.
    pub fn start(
        model: &str,
        version: &str,
        runner: Arc<dyn Runner>,
        settings: Settings,
    ) -> std::io::Result<Self> {
        let capacity = settings.capacity.max(1);
        let threads = settings.threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            policy: settings.policy,
            on_execution: settings.on_execution,
            expired: AtomicU64::new(0),
            canceled: AtomicU64::new(0),
        });
        let executor = Self {
            model: model.to_string(),
            version: version.to_string(),
            capacity,
            refuse_when_busy: settings.refuse_when_busy.then_some(threads),
            shared,
        };
        for i in 0..threads {
            let shared = executor.shared.clone();
            let runner = runner.clone();
            // On a spawn failure `executor` drops, closing the queue for the threads started.
            let thread =
                std::thread::Builder::new().name(format!("kiln-compute-{model}-{version}-{i}"));
            crate::priority::spawn(thread, move || compute_loop(&shared, runner.as_ref()))?;
        }
        Ok(executor)
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fails with [`WorkerError::QueueFull`] if the queue is full now (or
    /// [`WorkerError::Busy`], refusing while busy, if every thread computes): lets a caller
    /// refuse a request before paying for decoding it. [`Self::submit`] checks again when it
    /// queues.
    pub fn admit(&self) -> Result<(), WorkerError> {
        self.room(&self.shared.lock())
    }

    fn room(&self, state: &State) -> Result<(), WorkerError> {
        if state.queue.len() >= self.capacity {
            return Err(WorkerError::QueueFull {
                model: self.model.clone(),
                version: self.version.clone(),
                capacity: self.capacity,
            });
        }
        match self.refuse_when_busy {
            Some(threads) if state.computing >= threads => Err(WorkerError::Busy {
                model: self.model.clone(),
                version: self.version.clone(),
                instances: threads,
            }),
            _ => Ok(()),
        }
    }

    /// Requests waiting in the queue now (not those in a batch being formed or computed).
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Requests answered DEADLINE_EXCEEDED without compute so far (deadline passed in the queue).
    pub fn expired(&self) -> u64 {
        self.shared.expired.load(Ordering::Relaxed)
    }

    /// Requests dropped without compute so far because their caller went away.
    pub fn canceled(&self) -> u64 {
        self.shared.canceled.load(Ordering::Relaxed)
    }

    /// Queues `inputs` at `priority` and waits for this request's outputs. Fails at once if the
    /// queue is full; answers [`WorkerError::DeadlineExceeded`] if `deadline` has passed when
    /// its batch is formed. Dropping the returned future withdraws the request: it is skipped.
    pub async fn submit(
        &self,
        inputs: Tensors,
        deadline: Option<Instant>,
        priority: Priority,
    ) -> Result<Executed, WorkerError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            rows: batch::rows_of(&inputs, self.shared.policy.max_batch_size > 0),
            inputs,
            deadline,
            enqueued: Instant::now(),
            reply,
        };
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(WorkerError::Unavailable(format!(
                    "model {} version {} is unloading",
                    self.model, self.version
                )));
            }
            self.room(&state)?;
            state.queue.push(job, priority);
        }
        self.shared.wake.notify_all();
        answer.await.map_err(|_| {
            WorkerError::Internal(format!(
                "compute thread of {} version {} dropped the request",
                self.model, self.version
            ))
        })?
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// Waits for a request and forms a batch around it (empty if all of it died while waiting),
/// counting this thread as computing; `None` once closed and drained.
fn next_batch(shared: &Shared) -> Option<Vec<Job>> {
    let mut dead = Vec::new();
    let mut state = shared.lock();
    let first = loop {
        if !state.forming {
            if let Some(job) = batch::take_first(&mut state.queue, &mut dead, Instant::now()) {
                break job;
            }
            if state.closed {
                shared.skip(&mut dead);
                return None;
            }
        }
        shared.skip(&mut dead);
        state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
    };
    state.forming = true;
    let mut jobs = vec![first];
    loop {
        let now = Instant::now();
        match batch::fill(&mut state.queue, &mut jobs, &mut dead, &shared.policy, now) {
            Step::Run => break,
            Step::WaitUntil(_) if state.closed => break,
            Step::WaitUntil(until) => {
                shared.skip(&mut dead);
                state = shared
                    .wake
                    .wait_timeout(state, until.saturating_duration_since(now))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
    state.forming = false;
    state.computing += 1;
    drop(state);
    batch::prune(&mut jobs, &mut dead, Instant::now());
    // Another thread may form the next batch while this one computes.
    shared.wake.notify_all();
    shared.skip(&mut dead);
    Some(jobs)
}

fn compute_loop(shared: &Shared, runner: &dyn Runner) {
    while let Some(jobs) = next_batch(shared) {
        if !jobs.is_empty() {
            execute(shared, runner, jobs);
        }
        shared.lock().computing -= 1;
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn run_guarded(runner: &dyn Runner, inputs: Tensors) -> Result<Tensors, WorkerError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| runner.run(inputs))) {
        Ok(Ok(outputs)) => Ok(outputs),
        Ok(Err(e)) => Err(WorkerError::Model(e)),
        Err(panic) => Err(WorkerError::Internal(format!(
            "model panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// Runs a batch and answers its requests.
fn execute(shared: &Shared, runner: &dyn Runner, jobs: Vec<Job>) {
    let taken = Instant::now();
    if jobs.len() == 1 {
        return execute_one(
            shared,
            runner,
            jobs.into_iter().next().expect("one job"),
            taken,
        );
    }
    // The requests keep their inputs: if the merged batch fails, each runs again alone.
    let start = Instant::now();
    let inputs: Vec<&Tensors> = jobs.iter().map(|j| &j.inputs).collect();
    let merged = batch::concat(&inputs);
    let compute_input = start.elapsed();
    let outcome = merged.ok().and_then(|merged| {
        let start = Instant::now();
        let outputs = run_guarded(runner, merged).ok()?;
        Some((outputs, start.elapsed()))
    });
    let Some((outputs, compute)) = outcome else {
        for job in jobs {
            execute_one(shared, runner, job, taken);
        }
        return;
    };
    let start = Instant::now();
    let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
    let parts = batch::split(outputs, &rows);
    let compute_output = start.elapsed();
    (shared.on_execution)(&Execution {
        rows: rows.iter().sum::<usize>() as u64,
        requests: jobs.len() as u64,
        compute_input,
        compute_infer: compute,
        compute_output,
    });
    for (job, outputs) in jobs.into_iter().zip(parts) {
        let _ = job.reply.send(Ok(Executed {
            outputs,
            queue: taken.saturating_duration_since(job.enqueued),
            compute,
        }));
    }
}

/// Runs one request alone and answers it.
fn execute_one(shared: &Shared, runner: &dyn Runner, job: Job, taken: Instant) {
    let start = Instant::now();
    let result = run_guarded(runner, job.inputs);
    let compute = start.elapsed();
    let answer = result.map(|outputs| {
        (shared.on_execution)(&Execution {
            rows: job.rows as u64,
            requests: 1,
            compute_infer: compute,
            ..Execution::default()
        });
        Executed {
            outputs,
            queue: taken.saturating_duration_since(job.enqueued),
            compute,
        }
    });
    let _ = job.reply.send(answer);
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
