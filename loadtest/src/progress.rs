//! Live progress on stderr while a run goes: on a terminal an indicatif bar over the run's
//! expected length, elsewhere (CI logs, pipes) one plain line every [`PLAIN_EVERY`]. Each
//! shows the phase (warm-up or measuring), the answer rate of the last second, OK and error
//! counts so far and the OK p50/p99 of the last second.
//!
//! The numbers come from a [`Live`] tally fed by [`Observed`], a [`Call`] wrapper, so the load
//! loops are untouched. They are a live view, not the report: they include the warm-up, and
//! latency counts from the actual send (the report's open-loop latency counts from the due
//! time).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::RunConfig;
use crate::load::{Answer, Call};
use crate::record::{Live, LiveState};
use crate::report::fmt_us;

/// How often a plain progress line is written.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always the bar.
    Bar,
    /// Always plain lines.
    Lines,
    /// Nothing.
    Off,
}

/// A [`Call`] that also counts every answer into a [`Live`] tally.
#[derive(Clone)]
pub struct Observed<C> {
    inner: C,
    live: Option<Arc<Live>>,
}

impl<C> Observed<C> {
    /// `inner`, counted into `live` (if any).
    pub fn new(inner: C, live: Option<Arc<Live>>) -> Self {
        Self { inner, live }
    }
}

impl<C: Call> Call for Observed<C> {
    async fn call(&self, n: u64) -> Answer {
        let sent = Instant::now();
        let answer = self.inner.call(n).await;
        if let Some(live) = &self.live {
            live.record(answer.result.is_ok(), sent.elapsed());
        }
        answer
    }

    fn begin(&self, measure_from: Instant) {
        self.inner.begin(measure_from);
    }
}

/// One progress line: phase, rate since the previous line, totals, recent OK latency.
pub fn status_line(elapsed: Duration, warmup: Duration, rate: f64, state: &LiveState) -> String {
    let phase = if elapsed < warmup {
        "warm-up"
    } else {
        "measuring"
    };
    let recent = &state.recent;
    let p = |q: f64| {
        if recent.is_empty() {
            "-".to_string()
        } else {
            fmt_us(recent.value_at_quantile(q))
        }
    };
    format!(
        "{:>5.0}s {phase:<9} {rate:>9.1} req/s  ok {}  errors {}  p50 {}  p99 {}",
        elapsed.as_secs_f64(),
        state.ok,
        state.errors,
        p(0.5),
        p(0.99)
    )
}

/// A running progress display; [`Progress::finish`] stops it.
pub struct Progress {
    live: Option<Arc<Live>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of `config` (nothing for [`ProgressMode::Off`]).
    pub fn start(mode: ProgressMode, config: &RunConfig) -> Self {
        let bar = match mode {
            ProgressMode::Off => {
                return Self {
                    live: None,
                    stop: None,
                    task: None,
                };
            }
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Bar => true,
            ProgressMode::Lines => false,
        };
        let live = Arc::new(Live::default());
        let (stop, stopped) = oneshot::channel();
        let warmup = config.load.warmup;
        let length = config.load.duration.map(|d| warmup + d);
        let task = tokio::spawn(show(live.clone(), bar, warmup, length, stopped));
        Self {
            live: Some(live),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The tally to count answers into.
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.clone()
    }

    /// Stops the display and clears the bar.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn progress_bar(length: Option<Duration>) -> ProgressBar {
    let bar = match length {
        Some(l) => ProgressBar::new(l.as_secs().max(1)),
        None => ProgressBar::no_length(),
    };
    let template = if length.is_some() {
        "{bar:30} {msg}"
    } else {
        "{spinner} {msg}"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar
}

async fn show(
    live: Arc<Live>,
    bar: bool,
    warmup: Duration,
    length: Option<Duration>,
    mut stopped: oneshot::Receiver<()>,
) {
    let start = Instant::now();
    let bar = bar.then(|| progress_bar(length));
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_total, mut last_at, mut last_line) = (0, start, start);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        let state = live.take();
        let total = state.ok + state.errors;
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let rate = (total - last_total) as f64 / secs;
        (last_total, last_at) = (total, now);
        let line = status_line(now - start, warmup, rate, &state);
        match &bar {
            Some(bar) => {
                bar.set_position((now - start).as_secs());
                bar.set_message(line);
            }
            None if now - last_line >= PLAIN_EVERY => {
                last_line = now;
                eprintln!("{line}");
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    #[derive(Clone)]
    struct Flaky;

    impl Call for Flaky {
        async fn call(&self, n: u64) -> Answer {
            tokio::time::sleep(Duration::from_millis(3)).await;
            if n % 3 == 2 {
                Err(Status::unavailable("down")).into()
            } else {
                Ok(()).into()
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn observed_calls_count_into_the_live_tally() {
        let live = Arc::new(Live::default());
        let call = Observed::new(Flaky, Some(live.clone()));
        for n in 0..6 {
            let answer = call.call(n).await;
            assert_eq!(answer.result.is_ok(), n % 3 != 2);
        }
        let state = live.take();
        assert_eq!((state.ok, state.errors), (4, 2));
        assert_eq!(state.recent.len(), 4);
        assert_eq!(state.recent.min(), state.recent.lowest_equivalent(3_000));
        let unobserved = Observed::new(Flaky, None);
        assert!(unobserved.call(0).await.result.is_ok());
    }

    #[test]
    fn lines_show_phase_rate_counts_and_recent_latency() {
        let live = Live::default();
        live.record(true, Duration::from_millis(2));
        live.record(false, Duration::from_millis(1));
        let state = live.take();
        let warm = status_line(
            Duration::from_secs(1),
            Duration::from_secs(2),
            123.0,
            &state,
        );
        assert!(warm.contains("warm-up"), "{warm}");
        assert!(warm.contains("123.0 req/s"), "{warm}");
        assert!(warm.contains("ok 1  errors 1"), "{warm}");
        assert!(warm.contains("p50 2.00ms"), "{warm}");
        let empty = live.take();
        let measuring = status_line(Duration::from_secs(3), Duration::from_secs(2), 0.0, &empty);
        assert!(measuring.contains("measuring"), "{measuring}");
        assert!(measuring.contains("p99 -"), "{measuring}");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_stops_when_asked() {
        let config = RunConfig::default();
        let progress = Progress::start(ProgressMode::Lines, &config);
        let live = progress.live().unwrap();
        live.record(true, Duration::from_millis(1));
        tokio::time::sleep(Duration::from_secs(3)).await;
        progress.finish().await;
        let bar = Progress::start(ProgressMode::Bar, &config);
        bar.live().unwrap().record(false, Duration::from_millis(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        bar.finish().await;
        assert!(Progress::start(ProgressMode::Off, &config).live().is_none());
    }
}
