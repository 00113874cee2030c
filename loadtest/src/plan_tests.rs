//! Tests of sweeps, stability windows, SLO searches, ramps and their flags, against fake
//! servers on a paused tokio clock.

use std::time::Duration;

use clap::Parser;
use tonic::Status;

use crate::cli::Args;
use crate::config::{LoadConfig, LoadMode, RunConfig};
use crate::load::{self, Answer, Call};
use crate::plan::{Plan, PlanOutcome, run_plan};
use crate::report::Report;
use crate::schedule::{Arrival, parse_stages};
use crate::slo::{Search, Slo};
use crate::stability::Stability;
use crate::target::ModelPlan;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// One execution slot taking `service` per request (so queueing starts at `1/service` req/s),
/// plus `slowdown` more for every request number (a server getting slower).
#[derive(Clone)]
struct Slot {
    slot: std::sync::Arc<tokio::sync::Mutex<()>>,
    service: Duration,
    slowdown: Duration,
}

impl Slot {
    fn new(service: Duration, slowdown: Duration) -> Self {
        Self {
            slot: Default::default(),
            service,
            slowdown,
        }
    }
}

impl Call for Slot {
    async fn call(&self, n: u64) -> Answer {
        let _slot = self.slot.lock().await;
        tokio::time::sleep(self.service + self.slowdown * n as u32).await;
        Ok::<(), Status>(()).into()
    }
}

fn config(mode: LoadMode, duration: Duration) -> RunConfig {
    RunConfig {
        load: LoadConfig {
            mode,
            connections: 1,
            warmup: Duration::ZERO,
            duration: Some(duration),
            spin: false,
            ..LoadConfig::default()
        },
        ..RunConfig::default()
    }
}

/// The report of `config` against `server` (no network).
async fn report(server: Slot, config: &RunConfig) -> Report {
    let outcome = load::run(server, &config.load).await;
    let mut report = Report::new(
        config,
        &ModelPlan::default(),
        &outcome.recorder,
        outcome.measured,
    );
    report.extras = crate::extras::RunExtras::of(config, &outcome);
    report
}

#[tokio::test(start_paused = true)]
async fn a_steady_server_is_stable_after_n_windows() {
    let mut steady = config(LoadMode::Closed { concurrency: 2 }, SEC);
    steady.load.stability = Some(Stability {
        windows: 3,
        window: 500 * MS,
        tolerance: 0.1,
        max_windows: 10,
        quantile: 0.99,
    });
    let report = report(Slot::new(5 * MS, Duration::ZERO), &steady).await;
    let s = report.extras.stability.clone().unwrap();
    assert!(s.stable, "{s:?}");
    assert_eq!(s.windows.len(), 3);
    assert_eq!(report.measured_s, 1.5, "ended at the third window");
    assert!((s.throughput_rps - 200.0).abs() <= 2.0, "{s:?}");
    let mut text = String::new();
    report.extras.write_table(&mut text).unwrap();
    assert!(text.contains("stable after 3 windows"), "{text}");
    let back: Report = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(back, report, "stability round-trips");
    let slo: Slo = "p99=1s".parse().unwrap();
    let probe = slo.judge(1.0, &report);
    assert!(probe.met && probe.stable, "{probe:?}");
    assert_eq!(
        probe.latency_us, s.latency_us,
        "judged on the stable windows"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slowing_server_is_never_stable_and_stops_at_max_windows() {
    let mut slowing = config(LoadMode::Closed { concurrency: 1 }, SEC);
    slowing.load.stability = Some(Stability {
        windows: 3,
        window: 200 * MS,
        tolerance: 0.05,
        max_windows: 6,
        quantile: 0.5,
    });
    let report = report(Slot::new(MS, 100 * Duration::from_micros(1)), &slowing).await;
    let s = report.extras.stability.clone().unwrap();
    assert!(!s.stable, "{s:?}");
    assert_eq!(s.windows.len(), 6);
    assert!(
        (report.measured_s - 1.2).abs() < 1e-9,
        "{}",
        report.measured_s
    );
    let probe = "p50=1h".parse::<Slo>().unwrap().judge(1.0, &report);
    assert!(
        !probe.met && !probe.stable,
        "unstable windows miss any SLO: {probe:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sweep_runs_each_level_in_order() {
    let base = config(LoadMode::Closed { concurrency: 1 }, SEC);
    let modes = [1, 2, 4].map(|concurrency| LoadMode::Closed { concurrency });
    let plan = Plan::Levels(crate::plan::levels(&base, &modes));
    let server = Slot::new(10 * MS, Duration::ZERO);
    let outcome = run_plan(&plan, async |c| Ok(report(server.clone(), c).await))
        .await
        .unwrap();
    let levels: Vec<_> = outcome.runs.iter().map(|r| r.load.mode).collect();
    assert_eq!(levels, modes);
    // One slot: more concurrency queues, the same throughput.
    for r in &outcome.runs {
        assert!((100.0..=103.0).contains(&r.throughput_rps), "{r:?}");
    }
    let json = outcome.to_json();
    let back: PlanOutcome = serde_json::from_str(&json).unwrap();
    assert_eq!(back, outcome);
    assert!(json.contains(r#""schema": "kiln-loadtest-plan/v1""#));

    let single = PlanOutcome {
        runs: outcome.runs[..1].to_vec(),
        ..outcome
    };
    assert_eq!(
        single.to_json(),
        single.runs[0].to_json(),
        "one level: unchanged JSON"
    );
}

#[tokio::test(start_paused = true)]
async fn the_slo_search_finds_the_servers_capacity() {
    // One slot taking 2 ms serves 500 req/s without queueing; above, the queue grows for
    // the whole second and p99 blows past 20 ms.
    let base = config(
        LoadMode::Open {
            rate: 1.0,
            max_in_flight: 10_000,
        },
        SEC,
    );
    let plan = Plan::Slo {
        base: Box::new(base),
        slo: "p99=20ms".parse().unwrap(),
        search: Search {
            lo: 50.0,
            hi: 1000.0,
            precision: 0.05,
        },
    };
    let server = Slot::new(2 * MS, Duration::ZERO);
    let outcome = run_plan(&plan, async |c| Ok(report(server.clone(), c).await))
        .await
        .unwrap();
    let slo = outcome.slo.clone().unwrap();
    assert_eq!(slo.best_rate, Some(500.0), "{:#?}", slo.probes);
    let rates: Vec<f64> = slo.probes.iter().map(|p| p.rate).collect();
    assert_eq!(&rates[..5], [50.0, 100.0, 200.0, 400.0, 800.0]);
    assert_eq!(outcome.runs.len(), slo.probes.len());
    assert!(slo.probes.iter().all(|p| p.met == (p.rate <= 500.0)));
    let summary = outcome.slo_summary();
    assert!(summary.contains("answer      500.0 req/s"), "{summary}");
}

#[tokio::test(start_paused = true)]
async fn stages_ramp_the_open_loop() {
    let mut ramp = config(
        LoadMode::Open {
            rate: 100.0,
            max_in_flight: 10_000,
        },
        SEC,
    );
    ramp.load.stages = parse_stages("1s:100,1s:100,1s:0").unwrap();
    ramp.load.warmup = SEC;
    let report = report(Slot::new(MS, Duration::ZERO), &ramp).await;
    // 50 + 100 + 50 in the window (the last one due exactly at its end is not sent); the
    // start rate 0 sends nothing in the warm-up.
    assert_eq!(report.intended, 200);
    assert_eq!(report.measured_s, 3.0);
    assert_eq!(report.series[1].counts["OK"], 100);
    assert_eq!(report.extras.stages.len(), 3);

    ramp.load.stages.clear();
    ramp.load.arrival = Arrival::Poisson;
    ramp.load.seed = 9;
    let report = report_of_rate(ramp).await;
    assert!((80..=120).contains(&report.intended), "{}", report.intended);
    assert_eq!(report.extras.arrival, Some(Arrival::Poisson));
}

async fn report_of_rate(config: RunConfig) -> Report {
    report(
        Slot::new(Duration::from_micros(10), Duration::ZERO),
        &config,
    )
    .await
}

#[test]
fn flags_make_plans() {
    let parse = |args: &str| Args::try_parse_from(format!("x --model m {args}").split_whitespace());
    let plan = parse("--concurrency 1,8,64").unwrap().plan().unwrap();
    let Plan::Levels(levels) = plan else {
        panic!("levels")
    };
    let got: Vec<_> = levels
        .iter()
        .map(|c| (c.load.mode, c.load.connections))
        .collect();
    let closed = |concurrency| LoadMode::Closed { concurrency };
    assert_eq!(got, [(closed(1), 1), (closed(8), 4), (closed(64), 4)]);

    let plan = parse("--rate 100,200 --connections 2")
        .unwrap()
        .plan()
        .unwrap();
    let Plan::Levels(levels) = plan else {
        panic!("levels")
    };
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[1].load.connections, 2);
    assert!(matches!(levels[1].load.mode, LoadMode::Open { rate, .. } if rate == 200.0));

    let args =
        "--slo p99=5ms --rate-range 10,1000 --stability-windows 3 --window 1s --stability 5%";
    let Plan::Slo { base, slo, search } = parse(args).unwrap().plan().unwrap() else {
        panic!("slo")
    };
    assert_eq!(slo.bound_us, 5000.0);
    assert_eq!(
        (search.lo, search.hi, search.precision),
        (10.0, 1000.0, 0.05)
    );
    let rule = base.load.stability.unwrap();
    assert_eq!((rule.windows, rule.window, rule.tolerance), (3, SEC, 0.05));

    let ramp = parse("--stages 10s:100,5s:0 --arrival poisson").unwrap();
    let config = ramp.run_config().unwrap();
    assert_eq!(config.load.stages.len(), 2);
    assert_eq!(config.load.arrival, Arrival::Poisson);
    assert_eq!(config.load.measured_limit(), Some(Duration::from_secs(15)));

    let windows = parse("--stability-windows 3 --window 1s --max-windows 7").unwrap();
    let config = windows.run_config().unwrap();
    assert_eq!(
        config.load.duration,
        Some(Duration::from_secs(7)),
        "the cap"
    );
    assert_eq!(config.load.stability.unwrap().quantile, 0.99);

    let mix = parse("--model b:2,c --model d:5")
        .unwrap()
        .run_config()
        .unwrap();
    assert_eq!(mix.target.model, "m");
    let names: Vec<_> = mix
        .target
        .mix()
        .into_iter()
        .map(|m| (m.name, m.weight))
        .collect();
    let expected = [("m", 1), ("b", 2), ("c", 1), ("d", 5)].map(|(n, w)| (n.to_string(), w));
    assert_eq!(names, expected);
    assert!(
        parse("")
            .unwrap()
            .run_config()
            .unwrap()
            .target
            .models
            .is_empty()
    );

    let content =
        "--input-data x.json --validate --validate-tolerance 0.01 --drift shift=1,over=5s";
    let config = parse(content).unwrap().run_config().unwrap();
    assert_eq!(config.target.validate, Some(0.01));
    assert_eq!(config.target.drift.unwrap().over_s, 5.0);
    assert!(parse("--validate").is_err(), "needs input data");
    assert!(parse("--drift tilt=1").is_err());

    assert!(parse("--slo p99=5ms").is_err(), "needs a range");
    assert!(parse("--stages 1s:5 --rate 5").is_err());
    assert!(parse("--concurrency 1,x").is_err());
    let unstable = parse("--stability-windows 5 --max-windows 3").unwrap();
    assert!(unstable.plan().is_err());
}
