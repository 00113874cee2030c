//! Input drift over time (`--drift shift=0.5,scale=1.5,noise=0.1,over=60s[,features=0-9]`),
//! for exercising drift monitors: every floating-point input value `x` (FP32, FP64) of a request
//! sent at time `t` becomes
//!
//! ```text
//! x' = x · (1 + (scale − 1) · f) + shift · f + N(0, (noise · f)²),   f = clamp((t − t₀) / over, 0, 1)
//! ```
//!
//! where `t₀` is the start of the measured window (so the warm-up is undrifted and the drift is
//! complete `over` into the measurement). `features` limits it to some positions of each item
//! (index within one batch row, C order): `0-9`, or several separated by `;` (`0-3;7`).
//! Defaults: shift 0, scale 1, noise 0, over 60 s, every feature. The noise is seeded by the
//! run's seed and the request number. Other input types are sent unchanged. With drift the
//! request is rebuilt at every send (without, the pre-built requests are sent as they are).

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use kiln_proto::inference::ModelInferRequest;
use serde::{Deserialize, Serialize};

use crate::mix::SplitMix;

/// The drift's parameters (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Added to each value once the drift is complete.
    pub shift: f64,
    /// Each value's scale once the drift is complete.
    pub scale: f64,
    /// Standard deviation of the added Gaussian noise once the drift is complete.
    pub noise: f64,
    /// How long the drift takes to complete, seconds.
    pub over_s: f64,
    /// The drifted positions within an item (empty: all).
    pub features: Vec<(usize, usize)>,
}

impl Default for Drift {
    fn default() -> Self {
        Self {
            shift: 0.0,
            scale: 1.0,
            noise: 0.0,
            over_s: 60.0,
            features: Vec::new(),
        }
    }
}

fn parse_features(s: &str) -> Result<Vec<(usize, usize)>, String> {
    s.split(';')
        .map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let parse = |v: &str| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|e| format!("{part:?}: {e}"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo <= hi {
                Ok((lo, hi))
            } else {
                Err(format!("{part:?}: need lo <= hi"))
            }
        })
        .collect()
}

impl FromStr for Drift {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut drift = Drift::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
            let number = || {
                value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("{part:?}: expected a number"))
            };
            match key.trim() {
                "shift" => drift.shift = number()?,
                "scale" => drift.scale = number()?,
                "noise" => drift.noise = number()?.abs(),
                "over" => {
                    drift.over_s = crate::cli::parse_duration(value)?.as_secs_f64();
                }
                "features" => drift.features = parse_features(value)?,
                other => {
                    return Err(format!(
                        "{other:?}: expected shift, scale, noise, over or features"
                    ));
                }
            }
        }
        Ok(drift)
    }
}

impl Drift {
    /// How complete the drift is `elapsed` after the start of the measured window (0 to 1).
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if self.over_s <= 0.0 {
            return 1.0;
        }
        (elapsed.as_secs_f64() / self.over_s).clamp(0.0, 1.0)
    }

    fn drifts(&self, feature: usize) -> bool {
        self.features.is_empty()
            || self
                .features
                .iter()
                .any(|&(lo, hi)| RangeInclusive::new(lo, hi).contains(&feature))
    }

    /// `request` with its FP32/FP64 inputs drifted by factor `f`; `batching` says whether the
    /// first dimension is the batch; `seed` seeds the noise.
    pub fn apply(
        &self,
        request: &ModelInferRequest,
        batching: bool,
        f: f64,
        seed: u64,
    ) -> ModelInferRequest {
        let mut out = request.clone();
        if f == 0.0 {
            return out;
        }
        let mut rng = SplitMix::new(seed);
        for (input, raw) in out.inputs.iter().zip(out.raw_input_contents.iter_mut()) {
            let item: i64 = input.shape[usize::from(batching).min(input.shape.len())..]
                .iter()
                .product();
            let item = item.max(1) as usize;
            let mut shift = |i: usize, x: f64| {
                if !self.drifts(i % item) {
                    return x;
                }
                let noise = if self.noise > 0.0 {
                    rng.normal() * self.noise * f
                } else {
                    0.0
                };
                x * (1.0 + (self.scale - 1.0) * f) + self.shift * f + noise
            };
            *raw = match input.datatype.as_str() {
                "FP32" => Bytes::from_iter(raw.chunks_exact(4).enumerate().flat_map(|(i, c)| {
                    let x = f32::from_le_bytes(c.try_into().unwrap()) as f64;
                    (shift(i, x) as f32).to_le_bytes()
                })),
                "FP64" => Bytes::from_iter(raw.chunks_exact(8).enumerate().flat_map(|(i, c)| {
                    shift(i, f64::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                })),
                _ => continue,
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use kiln_proto::inference::model_infer_request::InferInputTensor;

    use super::*;

    fn request(values: &[f32]) -> ModelInferRequest {
        ModelInferRequest {
            inputs: vec![
                InferInputTensor {
                    name: "x".into(),
                    datatype: "FP32".into(),
                    shape: vec![2, values.len() as i64 / 2],
                    ..Default::default()
                },
                InferInputTensor {
                    name: "n".into(),
                    datatype: "INT64".into(),
                    shape: vec![2, 1],
                    ..Default::default()
                },
            ],
            raw_input_contents: vec![
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                [5i64, 6].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ],
            ..Default::default()
        }
    }

    fn floats(r: &ModelInferRequest) -> Vec<f32> {
        r.raw_input_contents[0]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn parses_specs() {
        let d: Drift = "shift=0.5,scale=1.5,noise=0.1,over=60s,features=0-9"
            .parse()
            .unwrap();
        assert_eq!((d.shift, d.scale, d.noise, d.over_s), (0.5, 1.5, 0.1, 60.0));
        assert_eq!(d.features, [(0, 9)]);
        let d: Drift = "shift=1,features=0-1;5".parse().unwrap();
        assert_eq!(d.features, [(0, 1), (5, 5)]);
        for bad in ["shift", "tilt=1", "scale=x", "features=3-1", "over=soon"] {
            assert!(bad.parse::<Drift>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ramps_shift_and_scale_over_time_on_chosen_features() {
        let d: Drift = "shift=1,scale=3,over=10s,features=1".parse().unwrap();
        assert_eq!(d.factor(Duration::ZERO), 0.0);
        assert_eq!(d.factor(Duration::from_secs(5)), 0.5);
        assert_eq!(d.factor(Duration::from_secs(60)), 1.0);
        let r = request(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(floats(&d.apply(&r, true, 0.0, 0)), [1.0, 2.0, 3.0, 4.0]);
        // f = 0.5: x·(1 + 2·0.5) + 0.5 on feature 1 of each row.
        assert_eq!(floats(&d.apply(&r, true, 0.5, 0)), [1.0, 4.5, 3.0, 8.5]);
        let drifted = d.apply(&r, true, 1.0, 0);
        assert_eq!(floats(&drifted), [1.0, 7.0, 3.0, 13.0]);
        assert_eq!(
            drifted.raw_input_contents[1], r.raw_input_contents[1],
            "INT64 unchanged"
        );
    }

    #[test]
    fn noise_is_seeded_and_scaled() {
        let d: Drift = "noise=2".parse().unwrap();
        let r = request(&[0.0; 2000]);
        let a = floats(&d.apply(&r, true, 1.0, 7));
        assert_eq!(a, floats(&d.apply(&r, true, 1.0, 7)));
        assert_ne!(a, floats(&d.apply(&r, true, 1.0, 8)));
        let sd = (a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((sd - 2.0).abs() < 0.15, "{sd}");
    }
}
