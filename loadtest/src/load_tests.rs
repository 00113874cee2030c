//! Tests of the load loops against fake servers on a paused tokio clock, of the coordinated
//! omission correction on a synthetic timeline, and of reports and assertions built from them.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

use crate::assert::Assertions;
use crate::config::{LoadConfig, LoadMode, RunConfig};
use crate::load::{self, Answer, Call, Pacer, Window};
use crate::record::{Recorder, Sample};
use crate::report::Report;
use crate::target::ModelPlan;

const MS: Duration = Duration::from_millis(1);

/// A server with one execution slot: requests queue on a lock, each takes `service`, except
/// request `stall_at`, which takes `stall`.
#[derive(Clone)]
struct SerialServer {
    slot: Arc<tokio::sync::Mutex<()>>,
    service: Duration,
    stall_at: u64,
    stall: Duration,
}

impl SerialServer {
    fn new(service: Duration, stall_at: u64, stall: Duration) -> Self {
        Self {
            slot: Arc::default(),
            service,
            stall_at,
            stall,
        }
    }
}

impl Call for SerialServer {
    async fn call(&self, n: u64) -> Answer {
        let _slot = self.slot.lock().await;
        let took = if n == self.stall_at {
            self.stall
        } else {
            self.service
        };
        tokio::time::sleep(took).await;
        Ok(()).into()
    }
}

/// A server with unlimited parallelism: every request takes `service`; every `reject_every`th
/// is answered RESOURCE_EXHAUSTED at once.
#[derive(Clone)]
struct ParallelServer {
    service: Duration,
    reject_every: u64,
}

impl Call for ParallelServer {
    async fn call(&self, n: u64) -> Answer {
        if self.reject_every > 0 && n % self.reject_every == self.reject_every - 1 {
            return Err(Status::resource_exhausted("queue full")).into();
        }
        tokio::time::sleep(self.service).await;
        Ok(()).into()
    }
}

/// Runs `load` against `call`: the recorder and the measured time.
async fn run_load<C: Call>(call: C, load: &LoadConfig) -> (Recorder, Duration) {
    let outcome = load::run(call, load).await;
    (outcome.recorder, outcome.measured)
}

fn open(rate: f64, max_in_flight: usize, warmup: Duration, duration: Duration) -> LoadConfig {
    LoadConfig {
        mode: LoadMode::Open {
            rate,
            max_in_flight,
        },
        connections: 1,
        warmup,
        duration: Some(duration),
        requests: None,
        spin: false,
        ..LoadConfig::default()
    }
}

fn closed(concurrency: usize, warmup: Duration, duration: Option<Duration>) -> LoadConfig {
    LoadConfig {
        mode: LoadMode::Closed { concurrency },
        connections: 1,
        warmup,
        duration,
        requests: None,
        spin: false,
        ..LoadConfig::default()
    }
}

#[test]
fn a_late_pacer_counts_latency_from_the_intended_send() {
    // Synthetic timeline at 1000 req/s: the pacer sends request 0 at t=0, then is stalled until
    // t=50ms. Requests 1..=50 are all overdue; it sends them at once and they all answer at
    // t=51ms. Measured from the actual send they would all take 1 ms; from their due times
    // they took 50 ms down to 1 ms, which is what a user arriving at a fixed rate saw.
    let t0 = Instant::now();
    let pacer = Pacer::new(t0, 1000.0);
    assert_eq!(pacer.due(0, t0), 0..1);
    assert_eq!(pacer.due(1, t0), 1..1, "request 1 is not due yet");
    let woke = t0 + 50 * MS;
    let overdue = pacer.due(1, woke);
    assert_eq!(overdue, 1..51);
    let mut recorder = Recorder::new(t0);
    let done = t0 + 51 * MS;
    for n in overdue {
        assert_eq!(pacer.due_at(n), t0 + n as u32 * MS);
        recorder.record(Sample {
            start: pacer.due_at(n),
            done,
            code: Code::Ok,
        });
    }
    let ok = recorder.ok().unwrap();
    assert_eq!(ok.len(), 50);
    assert_eq!(ok.max(), ok.highest_equivalent(50_000));
    assert_eq!(ok.min(), ok.lowest_equivalent(1_000));
    assert!((25_000..=26_100).contains(&ok.value_at_quantile(0.5)));
}

#[test]
fn pacer_agrees_with_due_times_exactly() {
    let t0 = Instant::now();
    for rate in [3.0, 7.0, 100.0, 333.3, 1000.0, 49_999.0] {
        let pacer = Pacer::new(t0, rate);
        for ms in 0..2_000 {
            let now = t0 + ms * MS;
            let due = pacer.due(0, now);
            assert!(pacer.due_at(due.end - 1) <= now, "rate {rate} at {ms} ms");
            assert!(pacer.due_at(due.end) > now, "rate {rate} at {ms} ms");
        }
        // At its own due time a request is due (the open loop relies on it to progress).
        for n in 0..5_000 {
            assert!(
                pacer.due(n, pacer.due_at(n)).contains(&n),
                "rate {rate}, {n}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn open_loop_charges_queueing_behind_a_stall_to_the_requests_that_waited() {
    // 100 req/s for 2 s against a one-slot server taking 2 ms, except request 100 (due at 1 s)
    // which takes 300 ms: the 29 requests due during the stall queue behind it.
    let server = SerialServer::new(2 * MS, 100, 300 * MS);
    let (rec, measured) = run_load(server, &open(100.0, 1000, Duration::ZERO, 2 * SEC)).await;
    assert_eq!(measured, 2 * SEC);
    assert_eq!(rec.answered(), 200);
    assert_eq!(rec.not_sent(), 0);
    let ok = rec.ok().unwrap();
    assert_eq!(ok.value_at_quantile(0.5), ok.highest_equivalent(2_000));
    assert_eq!(ok.max(), ok.highest_equivalent(300_000));
    let waited = ok.count_between(100_000, 300_000);
    assert!(
        waited >= 20,
        "{waited} requests waited ≥ 100 ms behind the stall"
    );
    // The series has two seconds plus the tail of answers after the window.
    assert!(rec.seconds().len() >= 2);
    assert_eq!(rec.send_lag().max(), 0, "a paused clock sends on time");
}

#[tokio::test(start_paused = true)]
async fn open_loop_counts_requests_over_max_in_flight_as_not_sent() {
    // Each answer takes 1 s; 10 may be outstanding; 100 are due in the first second.
    let server = ParallelServer {
        service: SEC,
        reject_every: 0,
    };
    let (rec, _) = run_load(server, &open(100.0, 10, Duration::ZERO, SEC)).await;
    assert_eq!(rec.answered(), 10);
    assert_eq!(rec.not_sent(), 90);
    assert_eq!(rec.seconds()[0].not_sent, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_open_loop_waits_for_a_free_slot_instead_of_spinning() {
    // On the real clock, with spinning (the default), far more due than may be outstanding:
    // 100k req/s, one in flight, each answer 200 ms. The pacer sleeps while the slot is out,
    // lets what runs beside it in the same task (kiln-loadtest reads the server's statistics and its own CPU there) go on
    // instead of holding it up until the run ends, and each freed slot goes to the next
    // request due.
    let server = ParallelServer {
        service: 200 * MS,
        reject_every: 0,
    };
    let mut load = open(100_000.0, 1, Duration::ZERO, SEC);
    load.spin = true;
    let started = Instant::now();
    let cpu = crate::client_cpu::process_time();
    let beside = async {
        tokio::time::sleep(20 * MS).await;
        started.elapsed()
    };
    let ((rec, _), beside) = tokio::join!(run_load(server, &load), beside);
    assert!(
        beside < 500 * MS,
        "the future beside the loop ran after {beside:?}"
    );
    if let (Some(before), Some(after)) = (cpu, crate::client_cpu::process_time()) {
        // nextest runs each test in its own process: this is the loop's CPU.
        let used = after - before;
        assert!(
            used < 500 * MS,
            "the pacer spun while the slot was out: {used:?} in 1 s"
        );
    }
    let sent = rec.answered();
    assert!((4..=5).contains(&sent), "one every 200 ms: {sent}");
    assert!(rec.not_sent() + sent > 90_000, "{}", rec.not_sent());
    assert!(
        rec.send_lag().max() < 50_000,
        "a freed slot takes the next request due, not an old one: {} µs",
        rec.send_lag().max()
    );
}

#[tokio::test(start_paused = true)]
async fn open_loop_spins_only_on_the_real_clock() {
    // With spinning on, a paused clock still advances (the busy wait is bounded in real time).
    let server = ParallelServer {
        service: MS,
        reject_every: 0,
    };
    let mut load = open(50.0, 100, Duration::ZERO, 200 * MS);
    load.spin = true;
    let (rec, _) = run_load(server, &load).await;
    assert_eq!(rec.answered(), 10);
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn closed_loop_keeps_concurrency_and_skips_the_warmup() {
    let server = ParallelServer {
        service: 10 * MS,
        reject_every: 0,
    };
    let (rec, measured) = run_load(server, &closed(4, 100 * MS, Some(SEC))).await;
    assert_eq!(measured, SEC);
    // Each worker sends at 0, 10, ..., 1090 ms; the first 10 are warm-up.
    assert_eq!(rec.answered(), 4 * 100);
    let ok = rec.ok().unwrap();
    assert_eq!(ok.max(), ok.highest_equivalent(10_000));
    assert_eq!(ok.min(), ok.lowest_equivalent(10_000));
}

#[tokio::test(start_paused = true)]
async fn request_limited_runs_send_exactly_n() {
    let server = ParallelServer {
        service: 3 * MS,
        reject_every: 5,
    };
    let mut load = closed(4, Duration::ZERO, None);
    load.requests = Some(50);
    let (rec, measured) = run_load(server.clone(), &load).await;
    assert_eq!(rec.answered(), 50);
    assert!(measured > Duration::ZERO);

    let mut load = open(1000.0, 100, 10 * MS, SEC);
    load.requests = Some(30);
    let (rec, _) = run_load(server, &load).await;
    assert_eq!(rec.answered() + rec.not_sent(), 30);
}

#[test]
fn window_admits_warmup_measured_then_stops() {
    let t0 = Instant::now();
    let mut load = closed(1, 100 * MS, Some(SEC));
    load.requests = Some(2);
    let w = Window::new(t0, &load);
    use load::Admit::*;
    assert_eq!(w.admit(t0), Warmup);
    assert_eq!(w.admit(t0 + 100 * MS), Measured);
    assert_eq!(w.admit(t0 + 200 * MS), Measured);
    assert_eq!(w.admit(t0 + 300 * MS), Stop, "request budget spent");
    assert_eq!(w.admit(t0 + 2 * SEC), Stop, "window over");
    assert_eq!(w.measured(t0 + 5 * SEC), SEC);
    assert_eq!(w.measured(t0 + 600 * MS), 500 * MS);
}

/// A report of `load` against a ParallelServer rejecting every 4th request.
async fn synthetic_report(load: LoadConfig) -> Report {
    let server = ParallelServer {
        service: 2 * MS,
        reject_every: 4,
    };
    let (rec, measured) = run_load(server, &load).await;
    let config = RunConfig {
        load,
        ..RunConfig::default()
    };
    Report::new(&config, &ModelPlan::default(), &rec, measured)
}

#[tokio::test(start_paused = true)]
async fn report_adds_up_round_trips_and_checks_assertions() {
    let report = synthetic_report(open(200.0, 100, 100 * MS, SEC)).await;
    assert_eq!(report.intended, 200);
    assert_eq!(report.sent, report.ok + report.errors);
    assert_eq!(report.errors, 50);
    assert_eq!(report.statuses["RESOURCE_EXHAUSTED"].count, 50);
    assert_eq!(
        report.statuses["RESOURCE_EXHAUSTED"].message.as_deref(),
        Some("queue full")
    );
    assert_eq!(report.statuses["OK"].message, None);
    assert_eq!(report.statuses["OK"].count, 150);
    assert_eq!(report.error_rate, 0.25);
    assert_eq!(report.throughput_rps, 150.0);
    let series_total: u64 = report.series.iter().flat_map(|s| s.counts.values()).sum();
    assert_eq!(series_total, report.sent);

    let json = report.to_json();
    assert!(json.contains(r#""schema": "kiln-loadtest/v1""#), "{json}");
    assert!(json.contains(r#""mode": "open""#), "{json}");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    let pass: Assertions = "p99<5ms, p50>=1ms, errors=50, error_rate<30%, rps>100, not_sent=0"
        .parse()
        .unwrap();
    assert_eq!(pass.check(&report), vec![]);
    let fail: Assertions = "p99<1ms,errors=0,rps>1000".parse().unwrap();
    let failures = fail.check(&report);
    let failed: Vec<_> = failures.iter().map(|f| f.condition.as_str()).collect();
    assert_eq!(failed, ["p99<1ms", "errors=0", "rps>1000"]);
    assert_eq!(failures[0].actual, "2.00ms");
    assert!(failures[1].to_string().contains("got 50"));

    let text = report.to_string();
    assert!(text.contains("RESOURCE_EXHAUSTED: queue full"), "{text}");
    assert!(text.contains("150.0 req/s"), "{text}");
}

#[test]
fn assertions_reject_nonsense() {
    for bad in [
        "p99<5",
        "p99",
        "latency<5ms",
        "errors<lots",
        "p99<5 parsecs",
    ] {
        assert!(bad.parse::<Assertions>().is_err(), "{bad}");
    }
}
