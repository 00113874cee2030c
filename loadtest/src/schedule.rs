//! Open-loop arrival schedules: when request `i` is due.
//!
//! The target rate is a piecewise-linear profile `r(t)`: constant (`--rate R`), or ramped
//! between stage targets like k6's ramping-arrival-rate (`--stages 10s:100,30s:500,10s:0`:
//! from the start rate to 100/s over 10 s, to 500/s over the next 30 s, down to 0 over the
//! last 10 s). The start rate is 0 unless leading zero-length stages set it (`0s:50,...`); it
//! also holds during the warm-up, and the stages start with the measured window. After the last
//! stage the schedule ends (the measured window is the stages' total length).
//!
//! Arrivals: with `u_i` the `i`-th point of a unit-rate process, request `i` is due at
//! `Λ⁻¹(u_i)`, where `Λ(t) = ∫₀ᵗ r` is the expected number of requests by `t`. Constant
//! arrivals use `u_i = i` (evenly spaced at a constant rate); Poisson arrivals use a sum of
//! seeded Exp(1) gaps, which makes exponential inter-arrival gaps at a constant rate and a
//! non-homogeneous Poisson process on a ramp. At a single constant rate, constant arrivals are
//! exactly [`crate::load::Pacer`]'s `start + i / R`.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::load::Pacer;
use crate::mix::SplitMix;

/// One ramp stage: reach `target` requests per second linearly over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Length of the ramp, seconds.
    pub duration_s: f64,
    /// Rate at its end, requests per second.
    pub target: f64,
}

/// Parses `10s:100,30s:500,10s:0` (durations as [`crate::cli::parse_duration`]).
pub fn parse_stages(s: &str) -> Result<Vec<Stage>, String> {
    let stages = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (d, r) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?}: expected DURATION:RATE"))?;
            let duration = crate::cli::parse_duration(d)?;
            let target = r
                .trim()
                .parse::<f64>()
                .map_err(|e| format!("{r:?} in {part:?}: {e}"))?;
            if !(target.is_finite() && target >= 0.0) {
                return Err(format!("{part:?}: the rate must be >= 0"));
            }
            Ok(Stage {
                duration_s: duration.as_secs_f64(),
                target,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if stages.iter().all(|s| s.duration_s == 0.0) {
        return Err(format!("{s:?}: the stages need a length"));
    }
    Ok(stages)
}

/// The stages' total length.
pub fn stages_length(stages: &[Stage]) -> Duration {
    Duration::from_secs_f64(stages.iter().map(|s| s.duration_s).sum())
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced (wrk2, perf_analyzer's `constant` request distribution).
    #[default]
    Constant,
    /// Exponential gaps (a Poisson process), seeded.
    Poisson,
}

impl FromStr for Arrival {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "poisson" => Ok(Self::Poisson),
            _ => Err(format!("{s:?}: expected constant or poisson")),
        }
    }
}

/// A piecewise-linear rate: `(t, r)` points (seconds from the start of the run, non-decreasing
/// `t`), linear in between, constant after the last point (0 ends the schedule).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    points: Vec<(f64, f64)>,
}

impl Profile {
    /// `stages` starting `offset` seconds into the run, holding the start rate before.
    pub fn of_stages(stages: &[Stage], offset: f64) -> Self {
        let mut rest = stages;
        let mut start = 0.0;
        while let Some((first, tail)) = rest.split_first()
            && first.duration_s == 0.0
        {
            start = first.target;
            rest = tail;
        }
        let mut points = vec![(0.0, start), (offset, start)];
        let mut t = offset;
        for stage in rest {
            t += stage.duration_s;
            points.push((t, stage.target));
        }
        Self { points }
    }

    /// `Λ⁻¹(u)`: when `u` requests are expected (the earliest such time with a positive rate, so
    /// request 0 of a ramp from 0 is due when the ramp starts); `None` if never (the rate ended
    /// at 0).
    pub fn inverse(&self, u: f64) -> Option<f64> {
        let mut area = 0.0;
        for pair in self.points.windows(2) {
            let ((t0, r0), (t1, r1)) = (pair[0], pair[1]);
            let length = t1 - t0;
            let segment = (r0 + r1) / 2.0 * length;
            if segment > 0.0 && area + segment >= u {
                // r0·x + a·x² = rest with a = (r1 − r0) / (2·length); the stable root.
                let rest = u - area;
                let a = (r1 - r0) / (2.0 * length);
                let root = r0 + (r0 * r0 + 4.0 * a * rest).max(0.0).sqrt();
                let x = if root > 0.0 { 2.0 * rest / root } else { 0.0 };
                return Some(t0 + x.min(length));
            }
            area += segment;
        }
        let &(t_last, r_last) = self.points.last()?;
        (r_last > 0.0).then(|| t_last + (u - area) / r_last)
    }
}

/// The due times of an open loop, in order.
#[derive(Debug, Clone)]
pub struct Arrivals {
    start: Instant,
    shape: Shape,
    arrival: Arrival,
    rng: SplitMix,
    /// The unit-rate point of the next request.
    u: f64,
    /// The index of the next request.
    i: u64,
}

#[derive(Debug, Clone)]
enum Shape {
    Constant(Pacer, f64),
    Ramp(Profile),
}

impl Arrivals {
    /// A constant `rate` from `start`.
    pub fn constant(start: Instant, rate: f64, arrival: Arrival, seed: u64) -> Self {
        Self::new(
            start,
            Shape::Constant(Pacer::new(start, rate), rate),
            arrival,
            seed,
        )
    }

    /// `stages` from `start + offset` (see the module doc).
    pub fn stages(
        start: Instant,
        stages: &[Stage],
        offset: Duration,
        arrival: Arrival,
        seed: u64,
    ) -> Self {
        let profile = Profile::of_stages(stages, offset.as_secs_f64());
        Self::new(start, Shape::Ramp(profile), arrival, seed)
    }

    fn new(start: Instant, shape: Shape, arrival: Arrival, seed: u64) -> Self {
        let mut arrivals = Self {
            start,
            shape,
            arrival,
            rng: SplitMix::new(seed),
            u: 0.0,
            i: 0,
        };
        if arrival == Arrival::Poisson {
            arrivals.u = arrivals.gap();
        }
        arrivals
    }

    fn gap(&mut self) -> f64 {
        // Exp(1) by inversion; 1 − U is in (0, 1], so the log is finite.
        -(1.0 - self.rng.unit()).ln()
    }

    /// The index of the next request.
    pub fn index(&self) -> u64 {
        self.i
    }

    /// When the next request is due; `None` when the schedule has ended.
    pub fn next_due(&self) -> Option<Instant> {
        match (&self.shape, self.arrival) {
            (Shape::Constant(pacer, _), Arrival::Constant) => Some(pacer.due_at(self.i)),
            (Shape::Constant(_, rate), Arrival::Poisson) => self.at(self.u / rate),
            (Shape::Ramp(profile), _) => self.at(profile.inverse(self.u)?),
        }
    }

    fn at(&self, secs: f64) -> Option<Instant> {
        Some(self.start + Duration::try_from_secs_f64(secs).ok()?)
    }

    /// Moves on to the following request.
    pub fn advance(&mut self) {
        self.i += 1;
        self.u += match self.arrival {
            Arrival::Constant => 1.0,
            Arrival::Poisson => self.gap(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs_of(a: &Arrivals) -> Option<f64> {
        a.next_due().map(|d| (d - a.start).as_secs_f64())
    }

    #[test]
    fn parses_stages() {
        let stages = parse_stages("10s:100, 30s:500,500ms:0").unwrap();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[2].duration_s, 0.5);
        assert_eq!(stages_length(&stages), Duration::from_millis(40_500));
        for bad in ["10s", "10s:x", "10s:-1", "0s:5", "soon:5"] {
            assert!(parse_stages(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_linear_ramp_sends_its_area() {
        // 0 → 100/s over 10 s: 500 requests, Λ(t) = 5t², so request i is due at √(i/5).
        let stages = parse_stages("10s:100,10s:0").unwrap();
        let mut a = Arrivals::stages(
            Instant::now(),
            &stages,
            Duration::ZERO,
            Arrival::Constant,
            0,
        );
        let mut due = Vec::new();
        while let Some(t) = secs_of(&a) {
            due.push(t);
            a.advance();
        }
        assert_eq!(due.len(), 1001, "500 up, 500 down, one at the very end");
        assert!((due[20] - 2.0).abs() < 1e-9, "{}", due[20]);
        assert!((due[500] - 10.0).abs() < 1e-9);
        assert!(due.windows(2).all(|w| w[0] <= w[1]));
        assert!(*due.last().unwrap() <= 20.0 + 1e-9);
    }

    #[test]
    fn start_rate_holds_through_the_warmup() {
        let stages = parse_stages("0s:10,1s:10").unwrap();
        let warmup = Duration::from_secs(2);
        let mut a = Arrivals::stages(Instant::now(), &stages, warmup, Arrival::Constant, 0);
        // 10/s through the warm-up and the stage, and on after the last stage (ends at 10/s).
        for i in 0..100 {
            let due = secs_of(&a).unwrap();
            assert!((due - i as f64 / 10.0).abs() < 1e-9, "{i}: {due}");
            a.advance();
        }
        let profile = Profile::of_stages(&stages, 2.0);
        assert_eq!(profile.inverse(25.0), Some(2.5));
    }

    #[test]
    fn constant_arrivals_match_the_pacer_and_poisson_gaps_are_exponential() {
        let t0 = Instant::now();
        let mut a = Arrivals::constant(t0, 333.3, Arrival::Constant, 0);
        let pacer = Pacer::new(t0, 333.3);
        for i in 0..1000 {
            assert_eq!(a.next_due(), Some(pacer.due_at(i)));
            a.advance();
        }
        let rate = 1000.0;
        let mut p = Arrivals::constant(t0, rate, Arrival::Poisson, 7);
        let mut gaps = Vec::new();
        let mut last = t0;
        for _ in 0..20_000 {
            let due = p.next_due().unwrap();
            gaps.push((due - last).as_secs_f64());
            last = due;
            p.advance();
        }
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 1e-3).abs() < 5e-5, "mean gap {mean}");
        // Exponential: P(gap > mean) = e⁻¹ ≈ 0.368.
        let above = gaps.iter().filter(|g| **g > 1e-3).count() as f64 / gaps.len() as f64;
        assert!((above - 0.368).abs() < 0.02, "{above}");
        let again = Arrivals::constant(t0, rate, Arrival::Poisson, 7);
        let first = Arrivals::constant(t0, rate, Arrival::Poisson, 7).next_due();
        assert_eq!(again.next_due(), first, "seeded");
        assert_ne!(
            Arrivals::constant(t0, rate, Arrival::Poisson, 8).next_due(),
            first
        );
    }
}
