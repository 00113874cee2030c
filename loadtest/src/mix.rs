//! Several models in one run (`--model digits:3 --model digits_cnn:1`): each request picks a
//! model by weight, as a pure function of the seed and the request number (so a run is
//! repeatable and any task can tell which model request `n` went to), and a [`Tally`] of the
//! answers per model (counts by status, OK latency, validation failures) for the report.

use std::collections::BTreeMap;
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::record::{OK, Sample, code_name, latency_histogram};
use crate::report::Latency;

/// SplitMix64: a tiny, fast, seedable generator (also a good hash of a counter).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal value (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A model and its share of the requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedModel {
    /// Model name.
    pub name: String,
    /// Relative weight (≥ 1).
    pub weight: u32,
}

impl FromStr for WeightedModel {
    type Err = String;

    /// `name` (weight 1) or `name:weight`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, weight) = match s.rsplit_once(':') {
            Some((name, w)) => {
                let weight = w
                    .parse::<u32>()
                    .map_err(|e| format!("{s:?}: weight {w:?}: {e}"))?;
                (name, weight)
            }
            None => (s, 1),
        };
        if name.is_empty() || weight == 0 {
            return Err(format!("{s:?}: expected NAME or NAME:WEIGHT (weight ≥ 1)"));
        }
        Ok(Self {
            name: name.to_string(),
            weight,
        })
    }
}

/// Parses `--model` values: each may list several (`digits:3,digits_cnn:1`).
pub fn parse_models<S: AsRef<str>>(values: &[S]) -> Result<Vec<WeightedModel>, String> {
    values
        .iter()
        .flat_map(|v| v.as_ref().split(','))
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// The weighted choice of a model per request.
#[derive(Debug, Clone)]
pub struct Mix {
    seed: u64,
    /// Cumulative weights.
    cumulative: Vec<u64>,
}

impl Mix {
    /// A mix of `models` (at least one) seeded with `seed`.
    pub fn new(models: &[WeightedModel], seed: u64) -> Self {
        let mut total = 0;
        let cumulative = models
            .iter()
            .map(|m| {
                total += u64::from(m.weight);
                total
            })
            .collect();
        Self { seed, cumulative }
    }

    /// The model (index) of request `n`.
    pub fn pick(&self, n: u64) -> usize {
        let total = *self.cumulative.last().expect("at least one model");
        if self.cumulative.len() == 1 {
            return 0;
        }
        let r = SplitMix::new(self.seed ^ n.wrapping_mul(0xd6e8_feb8_6659_fd93)).next_u64() % total;
        self.cumulative.partition_point(|&c| c <= r)
    }
}

/// The answers of one model.
#[derive(Debug, Clone)]
pub struct ModelTally {
    counts: BTreeMap<&'static str, u64>,
    ok_latency: Histogram<u64>,
    validation_failed: u64,
    mismatch: Option<String>,
}

impl Default for ModelTally {
    fn default() -> Self {
        Self {
            counts: BTreeMap::new(),
            ok_latency: latency_histogram(),
            validation_failed: 0,
            mismatch: None,
        }
    }
}

/// Measured answers per model (index into the run's models).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    models: Vec<ModelTally>,
}

impl Tally {
    /// Records `sample` as an answer of model `model`; `mismatch` says why its outputs failed
    /// validation.
    pub fn record(&mut self, model: usize, sample: &Sample, mismatch: Option<&str>) {
        if self.models.len() <= model {
            self.models.resize_with(model + 1, ModelTally::default);
        }
        let t = &mut self.models[model];
        *t.counts.entry(code_name(sample.code)).or_default() += 1;
        if sample.code == Code::Ok {
            let us = u64::try_from(sample.latency().as_micros()).unwrap_or(u64::MAX);
            if t.ok_latency.record(us.max(1)).is_err() {
                t.ok_latency.saturating_record(us);
            }
        }
        if let Some(why) = mismatch {
            t.validation_failed += 1;
            t.mismatch
                .get_or_insert_with(|| why.chars().take(200).collect());
        }
    }

    /// Adds another tally's answers.
    pub fn merge(&mut self, other: Tally) {
        if self.models.len() < other.models.len() {
            self.models
                .resize_with(other.models.len(), ModelTally::default);
        }
        for (mine, theirs) in self.models.iter_mut().zip(other.models) {
            for (name, n) in theirs.counts {
                *mine.counts.entry(name).or_default() += n;
            }
            mine.ok_latency
                .add(&theirs.ok_latency)
                .expect("auto-resizing histograms merge");
            mine.validation_failed += theirs.validation_failed;
            if mine.mismatch.is_none() {
                mine.mismatch = theirs.mismatch;
            }
        }
    }

    /// Validation failures over every model.
    pub fn validation_failed(&self) -> u64 {
        self.models.iter().map(|m| m.validation_failed).sum()
    }

    /// The per-model reports of `models` (the run's models, in index order).
    pub fn reports(&self, models: &[WeightedModel]) -> BTreeMap<String, ModelReport> {
        let empty = ModelTally::default();
        models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let t = self.models.get(i).unwrap_or(&empty);
                let sent: u64 = t.counts.values().sum();
                let ok = t.counts.get(OK).copied().unwrap_or(0);
                let report = ModelReport {
                    weight: m.weight,
                    sent,
                    ok,
                    errors: sent - ok,
                    validation_failed: t.validation_failed,
                    counts: t.counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    latency_us: Latency::of(&t.ok_latency),
                    mismatch: t.mismatch.clone(),
                };
                (m.name.clone(), report)
            })
            .collect()
    }
}

/// One model's share of a run (the `models` entries of the JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Its weight in the mix.
    pub weight: u32,
    /// Requests sent to it (`ok + errors`).
    pub sent: u64,
    /// OK answers (validation failures included: they are OK at the gRPC level).
    pub ok: u64,
    /// Non-OK answers.
    pub errors: u64,
    /// OK answers whose outputs did not match the expected ones (`--validate`).
    pub validation_failed: u64,
    /// Answers by status name.
    pub counts: BTreeMap<String, u64>,
    /// OK latency, µs.
    pub latency_us: Option<Latency>,
    /// The first validation mismatch seen.
    pub mismatch: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weighted_models() {
        let models = parse_models(&["digits:3,digits_cnn", "other:2"]).unwrap();
        let names: Vec<_> = models.iter().map(|m| (m.name.as_str(), m.weight)).collect();
        assert_eq!(names, [("digits", 3), ("digits_cnn", 1), ("other", 2)]);
        for bad in ["digits:0", ":3", "digits:x"] {
            assert!(parse_models(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn picks_follow_the_weights_and_the_seed() {
        let models = parse_models(&["a:3,b:1"]).unwrap();
        let mix = Mix::new(&models, 42);
        let picks: Vec<usize> = (0..40_000).map(|n| mix.pick(n)).collect();
        let b = picks.iter().filter(|&&p| p == 1).count() as f64 / picks.len() as f64;
        assert!((b - 0.25).abs() < 0.01, "{b}");
        let again: Vec<usize> = (0..40_000).map(|n| Mix::new(&models, 42).pick(n)).collect();
        assert_eq!(picks, again);
        let other: Vec<usize> = (0..100).map(|n| Mix::new(&models, 43).pick(n)).collect();
        assert_ne!(&picks[..100], &other[..]);
        assert_eq!(Mix::new(&models[..1], 1).pick(5), 0);
    }

    #[test]
    fn normal_values_look_normal() {
        let mut rng = SplitMix::new(3);
        let xs: Vec<f64> = (0..50_000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
