//! The load models: a closed loop (`C` workers, each sending its next request when the
//! previous one answers) and an open loop (a fixed schedule of `R` requests per second,
//! independent of the answers).
//!
//! Both drive any [`Call`] (the gRPC one is [`crate::target::InferCall`]; tests use fakes) and
//! run on tokio's clock, so `tokio::time::pause` makes them deterministic. The open loop's due
//! times come from [`crate::schedule::Arrivals`] (constant, ramped by stages, or Poisson);
//! with [`crate::stability::Stability`] a monitor ends the measured window at the first
//! stable window boundary.
//!
//! Guarantees:
//! - A request belongs to the warm-up or to the measurement by its start time (closed loop: the
//!   actual send; open loop: the intended send); the run stops issuing at the end of the
//!   measured window (or after `requests` measured requests) and then waits for every
//!   outstanding answer, so `sent = answered` and nothing is lost.
//! - Open loop, coordinated omission: request `i` is due at `start + i / R` ([`Pacer`]; ramps
//!   and Poisson arrivals: [`crate::schedule`]). If the
//!   pacer wakes late (a busy runtime), it sends every overdue request at once and each one's
//!   latency still counts from its due time. A due request that would exceed `max_in_flight`
//!   is recorded as not sent instead of being delayed.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::config::{LoadConfig, LoadMode};
use crate::mix::Tally;
use crate::record::{Recorder, Sample};
use crate::schedule::Arrivals;
use crate::stability::{self, StabilityReport, Tracker};

/// The outcome of one request.
#[derive(Debug)]
pub struct Answer {
    /// Which of the run's models it went to (0 with one model).
    pub model: usize,
    /// Its gRPC status.
    pub result: Result<(), Status>,
    /// Why its outputs failed validation (`--validate`), if they did.
    pub mismatch: Option<String>,
    /// When the answer arrived, if the call did more after it (validation) that its latency
    /// must not include; else the call's return counts.
    pub answered: Option<Instant>,
}

impl From<Result<(), Status>> for Answer {
    /// An answer of model 0, not validated.
    fn from(result: Result<(), Status>) -> Self {
        Self {
            model: 0,
            result,
            mismatch: None,
            answered: None,
        }
    }
}

/// Sends request number `n` (0, 1, 2, ... over the whole run) and reports its outcome.
pub trait Call: Clone + Send + Sync + 'static {
    /// Sends request `n` and waits for its answer; a client-side timeout is a
    /// `DEADLINE_EXCEEDED` status.
    fn call(&self, n: u64) -> impl Future<Output = Answer> + Send;

    /// Called once before the first request with the start of the measured window (calls that
    /// change over time, like `--drift`, count from it).
    fn begin(&self, _measure_from: Instant) {}
}

/// The status code of an answer.
fn code_of(answer: &Result<(), Status>) -> Code {
    answer.as_ref().map_or_else(Status::code, |()| Code::Ok)
}

/// Whether a request starting at a given time is sent, and whether it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Sent, not recorded.
    Warmup,
    /// Sent and recorded.
    Measured,
    /// Not sent: the run is over.
    Stop,
}

/// No end: the window's end is unset.
const NO_END: u64 = u64::MAX;

/// The run's time window and request budget, shared by every worker. Its end can be brought
/// forward while it runs ([`Window::stop_at`]: the stability monitor does).
#[derive(Debug)]
pub struct Window {
    /// When load started.
    pub start: Instant,
    /// When the warm-up ends and measurement starts (second 0 of the series).
    pub measure_from: Instant,
    /// When issuing stops, as nanoseconds after `start` ([`NO_END`]: none).
    end_ns: AtomicU64,
    max_requests: Option<u64>,
    issued: AtomicU64,
}

impl Window {
    /// The window of `load` starting at `start`.
    pub fn new(start: Instant, load: &LoadConfig) -> Self {
        let measure_from = start + load.warmup;
        let window = Self {
            start,
            measure_from,
            end_ns: AtomicU64::new(NO_END),
            max_requests: load.requests,
            issued: AtomicU64::new(0),
        };
        if let Some(limit) = load.measured_limit() {
            window.stop_at(measure_from + limit);
        }
        window
    }

    /// When issuing stops, if time-limited.
    pub fn end(&self) -> Option<Instant> {
        match self.end_ns.load(Ordering::Relaxed) {
            NO_END => None,
            ns => Some(self.start + Duration::from_nanos(ns)),
        }
    }

    /// Ends the window at `at` unless it ends earlier already.
    pub fn stop_at(&self, at: Instant) {
        let ns = u64::try_from(at.saturating_duration_since(self.start).as_nanos())
            .unwrap_or(NO_END - 1);
        self.end_ns.fetch_min(ns, Ordering::Relaxed);
    }

    /// Decides for a request starting at `at`; counts it against the request budget.
    pub fn admit(&self, at: Instant) -> Admit {
        if at < self.measure_from {
            return Admit::Warmup;
        }
        if self.end().is_some_and(|end| at >= end) {
            return Admit::Stop;
        }
        if let Some(max) = self.max_requests
            && self.issued.fetch_add(1, Ordering::Relaxed) >= max
        {
            return Admit::Stop;
        }
        Admit::Measured
    }

    /// The measured time: the whole window if the run reached its end, else from the end of
    /// the warm-up to `last` (the last answer of a request-limited run).
    pub fn measured(&self, last: Instant) -> Duration {
        let until = match self.end() {
            Some(end) if last >= end => end,
            _ => last,
        };
        until.saturating_duration_since(self.measure_from)
    }
}

/// The open loop's constant-rate schedule: request `i` is due at `start + i / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: Instant,
    rate: f64,
}

impl Pacer {
    /// A schedule of `rate` requests per second from `start`.
    pub fn new(start: Instant, rate: f64) -> Self {
        Self { start, rate }
    }

    /// When request `i` is due.
    pub fn due_at(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The requests from `next` on that are due at `now` (empty if `next` is not yet due).
    pub fn due(&self, next: u64, now: Instant) -> Range<u64> {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let mut last = (elapsed * self.rate).floor() as u64;
        // Agree exactly with `due_at` despite float rounding: a request is due iff its due
        // time has come.
        while last > 0 && self.due_at(last) > now {
            last -= 1;
        }
        while self.due_at(last + 1) <= now {
            last += 1;
        }
        next..(last + 1).max(next)
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Latency by status, the series.
    pub recorder: Recorder,
    /// Answers per model.
    pub tally: Tally,
    /// Length of the measured window.
    pub measured: Duration,
    /// How the stability monitor ended the window, if one ran.
    pub stability: Option<StabilityReport>,
}

/// Where a task records its measured answers.
struct Sink {
    recorder: Recorder,
    tally: Tally,
    tracker: Option<Arc<Tracker>>,
}

impl Sink {
    fn new(window: &Window, tracker: &Option<Arc<Tracker>>) -> Self {
        Self {
            recorder: Recorder::new(window.measure_from),
            tally: Tally::default(),
            tracker: tracker.clone(),
        }
    }

    fn record(&mut self, sample: Sample, answer: &Answer) {
        self.recorder.record(sample);
        if let Err(status) = &answer.result {
            self.recorder.note_message(sample.code, status.message());
        }
        self.tally
            .record(answer.model, &sample, answer.mismatch.as_deref());
    }

    fn merge(&mut self, other: Sink) {
        self.recorder.merge(other.recorder);
        self.tally.merge(other.tally);
    }
}

/// Records a finished OK answer in the stability tracker (at completion, so the monitor sees
/// a window's answers when it closes).
fn track(tracker: &Option<Arc<Tracker>>, sample: &Sample) {
    if let Some(tracker) = tracker
        && sample.code == Code::Ok
    {
        tracker.record_ok(sample.done, sample.latency());
    }
}

/// Set once SIGINT (Ctrl-C) arrived: the run in progress ends at once, as if its duration were
/// over (it is measured and reported), and no further run of a sweep starts.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether SIGINT ended a run (see [`INTERRUPTED`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Ends `window` when SIGINT arrives (or at once when it already did).
fn stop_on_interrupt(window: Arc<Window>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !interrupted() && tokio::signal::ctrl_c().await.is_err() {
            return; // no signal handling here: run to the end
        }
        INTERRUPTED.store(true, Ordering::Relaxed);
        window.stop_at(Instant::now());
    })
}

/// Runs `load` against `call` from now on and returns the measured outcomes.
pub async fn run<C: Call>(call: C, load: &LoadConfig) -> Outcome {
    let window = Arc::new(Window::new(Instant::now(), load));
    let interrupt = stop_on_interrupt(window.clone());
    call.begin(window.measure_from);
    let tracker = load
        .stability
        .map(|rule| Arc::new(Tracker::new(window.measure_from, rule)));
    let monitor = tracker
        .clone()
        .map(|t| tokio::spawn(stability::monitor(t, window.clone())));
    let sink = match load.mode {
        LoadMode::Closed { concurrency } => {
            closed_loop(call, concurrency, window.clone(), tracker).await
        }
        LoadMode::Open {
            rate,
            max_in_flight,
        } => {
            let arrivals = if load.stages.is_empty() {
                Arrivals::constant(window.start, rate, load.arrival, load.seed)
            } else {
                Arrivals::stages(
                    window.start,
                    &load.stages,
                    load.warmup,
                    load.arrival,
                    load.seed,
                )
            };
            open_loop(
                call,
                arrivals,
                max_in_flight,
                load.spin,
                window.clone(),
                tracker,
            )
            .await
        }
    };
    interrupt.abort();
    let measured = window.measured(Instant::now());
    let stability = match monitor {
        Some(monitor) => Some(monitor.await.expect("the stability monitor panicked")),
        None => None,
    };
    Outcome {
        recorder: sink.recorder,
        tally: sink.tally,
        measured,
        stability,
    }
}

/// `concurrency` workers, each sending the next request when the previous one answers.
async fn closed_loop<C: Call>(
    call: C,
    concurrency: usize,
    window: Arc<Window>,
    tracker: Option<Arc<Tracker>>,
) -> Sink {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, window, next) = (call.clone(), window.clone(), next.clone());
            let mut sink = Sink::new(&window, &tracker);
            tokio::spawn(async move {
                loop {
                    let start = Instant::now();
                    let admit = window.admit(start);
                    if admit == Admit::Stop {
                        break;
                    }
                    let answer = call.call(next.fetch_add(1, Ordering::Relaxed)).await;
                    if admit == Admit::Measured {
                        let done = answer.answered.unwrap_or_else(Instant::now);
                        let code = code_of(&answer.result);
                        let sample = Sample { start, done, code };
                        track(&sink.tracker, &sample);
                        sink.record(sample, &answer);
                    }
                }
                sink
            })
        })
        .collect();
    let mut total = Sink::new(&window, &tracker);
    for worker in workers {
        total.merge(worker.await.expect("a load worker panicked"));
    }
    total
}

/// How close to its due time the pacer busy-waits instead of sleeping: tokio's timer ticks
/// every millisecond, which would add up to 1 ms to every open-loop latency.
pub const SPIN_WINDOW: Duration = Duration::from_millis(1);

/// Waits until `due`: sleeps until [`SPIN_WINDOW`] before it, then (if `spin`) busy-waits on
/// the OS clock for the rest. Under a paused tokio clock the busy wait ends after real time and
/// the final `sleep_until` advances the paused clock, so tests stay deterministic.
async fn wait_until(due: Instant, spin: bool) {
    let now = Instant::now();
    if due <= now {
        return;
    }
    if spin && due - now > SPIN_WINDOW {
        tokio::time::sleep_until(due - SPIN_WINDOW).await;
    }
    let now = Instant::now();
    if spin && due > now {
        let until = std::time::Instant::now() + (due - now);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    if Instant::now() < due {
        tokio::time::sleep_until(due).await;
    }
}

/// Requests on the `arrivals` schedule, each measured from its due time. The pacer records the
/// requests not sent and each sent request's send lag (actual − due send time); the answers go
/// over a channel to a collector task.
async fn open_loop<C: Call>(
    call: C,
    mut arrivals: Arrivals,
    max_in_flight: usize,
    spin: bool,
    window: Arc<Window>,
    tracker: Option<Arc<Tracker>>,
) -> Sink {
    let (answers, mut inbox) = mpsc::unbounded_channel::<(Sample, Answer)>();
    let mut collected = Sink::new(&window, &None);
    let collector = tokio::spawn(async move {
        while let Some((sample, answer)) = inbox.recv().await {
            collected.record(sample, &answer);
        }
        collected
    });
    let mut paced = Recorder::new(window.measure_from);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    'schedule: while let Some(first) = arrivals.next_due() {
        // Above ~1k req/s a spinning pacer never waits for anything that is not ready: let
        // the futures beside the loop (the reads that open the measured window) run now and
        // then.
        tokio::task::consume_budget().await;
        let now = Instant::now();
        if first > now {
            wait_until(first, spin).await;
            continue;
        }
        if in_flight.available_permits() == 0 {
            // Every permit is out: wait for one instead of spinning through the schedule (which
            // would burn the CPU the requests need and starve what runs beside the loop, such
            // as the reads that open the measured window). The requests due meanwhile are not
            // sent, exactly as if each had been tried at its due time; the freed permit goes
            // to the next one due.
            let freed = in_flight.clone().acquire_owned().await;
            let freed_at = Instant::now();
            while let Some(due) = arrivals.next_due().filter(|due| *due < freed_at) {
                match window.admit(due) {
                    Admit::Stop => break 'schedule,
                    Admit::Measured => paced.record_not_sent(due),
                    Admit::Warmup => {}
                }
                arrivals.advance();
            }
            drop(freed);
            continue;
        }
        while let Some(intended) = arrivals.next_due().filter(|due| *due <= now) {
            tokio::task::consume_budget().await; // behind its schedule, likewise
            let admit = window.admit(intended);
            if admit == Admit::Stop {
                break 'schedule;
            }
            let n = arrivals.index();
            arrivals.advance();
            let measured = admit == Admit::Measured;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                if measured {
                    paced.record_not_sent(intended);
                }
                continue;
            };
            if measured {
                paced.record_send_lag(Instant::now().saturating_duration_since(intended));
            }
            let (call, answers, tracker) = (call.clone(), answers.clone(), tracker.clone());
            tokio::spawn(async move {
                let answer = call.call(n).await;
                let done = answer.answered.unwrap_or_else(Instant::now);
                drop(permit);
                if measured {
                    let code = code_of(&answer.result);
                    let sample = Sample {
                        start: intended,
                        done,
                        code,
                    };
                    track(&tracker, &sample);
                    let _ = answers.send((sample, answer));
                }
            });
        }
    }
    // Every spawned request holds a clone of `answers`: the collector ends after the last one.
    drop(answers);
    let mut sink = collector.await.expect("the collector panicked");
    sink.recorder.merge(paced);
    sink
}
