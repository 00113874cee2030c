//! Conversions between profiles and the `kiln.v1` Telemetry messages.
//!
//! `ModelProfile` → proto is infallible; proto → `ModelProfile` validates everything (sketch
//! bytes, HDR bytes, kinds) and returns [`ProfileError::Decode`] rather than trusting a peer.
//! A round trip preserves every count, moment, category count, sketch and outlier model
//! exactly.

use std::sync::Arc;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use kiln_proto::kiln::v1 as pb;

use super::categories::{CategoryCounts, CategoryLabel};
use super::feature::{FeatureKind, FeatureProfile};
use super::model::{ModelProfile, OutputKind, OutputProfile, latency_histogram};
use super::moments::Moments;
use super::outlier::{MAX_FULL_COVARIANCE_FEATURES, OutlierFit, OutlierModel};
use super::sketch::QuantileSketch;
use super::{MAX_DECODED_CATEGORIES, ProfileError};

fn feature_to_proto(index: usize, f: &FeatureProfile) -> pb::FeatureSketch {
    let m = f.moments();
    let (sketch, sketch_format) = match f.sketch() {
        Some(s) => (s.to_bytes(), QuantileSketch::FORMAT.to_string()),
        None => (Vec::new(), String::new()),
    };
    let (categories, other_count) = match f.categories() {
        Some(c) => (
            c.counts()
                .into_iter()
                .map(|(label, count)| match label {
                    CategoryLabel::Int(i) => pb::CategoryCount {
                        label: None,
                        int_label: Some(i),
                        count,
                    },
                    CategoryLabel::Str(s) => pb::CategoryCount {
                        label: Some(s),
                        int_label: None,
                        count,
                    },
                })
                .collect(),
            c.other(),
        ),
        None => (Vec::new(), 0),
    };
    pb::FeatureSketch {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        count: f.count(),
        sketch,
        name: f.name().to_string(),
        missing: f.missing(),
        min: m.min().unwrap_or(0.0),
        max: m.max().unwrap_or(0.0),
        mean: m.mean().unwrap_or(0.0),
        m2: m.m2(),
        categorical: f.kind() == FeatureKind::Categorical,
        categories,
        other_count,
        sketch_format,
        numeric_count: m.count(),
        category_cap: f
            .categories()
            .map_or(0, |c| u32::try_from(c.cap()).unwrap_or(u32::MAX)),
    }
}

fn feature_from_proto(p: &pb::FeatureSketch) -> Result<FeatureProfile, ProfileError> {
    let bad = |what: &str| ProfileError::Decode(format!("feature {:?}: {what}", p.name));
    let moments = Moments::from_parts(p.numeric_count, p.min, p.max, p.mean, p.m2);
    if p.categorical {
        let cap = p.category_cap as usize;
        if cap > MAX_DECODED_CATEGORIES || p.categories.len() > cap {
            return Err(bad("more categories than the cap allows"));
        }
        let labels = p
            .categories
            .iter()
            .map(|c| match (&c.label, c.int_label) {
                (Some(s), None) => Ok((CategoryLabel::Str(s.clone()), c.count)),
                (None, Some(i)) => Ok((CategoryLabel::Int(i), c.count)),
                _ => Err(bad("a category needs exactly one of label and int_label")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cats = CategoryCounts::from_parts(cap, labels, p.other_count);
        if cats.total() != p.count {
            return Err(bad("category counts do not add up to count"));
        }
        return Ok(FeatureProfile::from_parts(
            p.name.clone(),
            FeatureKind::Categorical,
            p.missing,
            moments,
            None,
            Some(cats),
        ));
    }
    if p.sketch_format != QuantileSketch::FORMAT {
        return Err(bad(&format!("unknown sketch format {:?}", p.sketch_format)));
    }
    let sketch = QuantileSketch::from_bytes(&p.sketch)?;
    if sketch.count() != p.count || moments.count() != p.count {
        return Err(bad("sketch, moments and count disagree"));
    }
    Ok(FeatureProfile::from_parts(
        p.name.clone(),
        FeatureKind::Numeric,
        p.missing,
        moments,
        Some(sketch),
        None,
    ))
}

/// `hist` in HdrHistogram's V2 deflate format.
pub fn encode_latency(hist: &Histogram<u64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .expect("serializing into memory succeeds");
    bytes
}

/// A latency histogram (Kiln's bounds) holding the V2 or V2 deflate histogram in `bytes`;
/// empty bytes give an empty histogram.
pub fn decode_latency(bytes: &[u8]) -> Result<Histogram<u64>, ProfileError> {
    let mut hist = latency_histogram();
    if bytes.is_empty() {
        return Ok(hist);
    }
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| ProfileError::Decode(format!("latency histogram: {e:?}")))?;
    hist.add(&decoded)
        .map_err(|e| ProfileError::Decode(format!("latency histogram: {e:?}")))?;
    Ok(hist)
}

impl From<&ModelProfile> for pb::ModelProfile {
    fn from(p: &ModelProfile) -> Self {
        pb::ModelProfile {
            model: p.model.clone(),
            version: p.version.clone(),
            request_count: p.request_count,
            error_count: p.error_count,
            latency_hdr: encode_latency(&p.latency),
            features: p
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| feature_to_proto(i, f))
                .collect(),
            outputs: p
                .outputs
                .iter()
                .enumerate()
                .map(|(i, o)| pb::OutputSketch {
                    name: o.profile.name().to_string(),
                    kind: match o.kind {
                        OutputKind::Score => pb::OutputKind::Score,
                        OutputKind::Label => pb::OutputKind::Label,
                    } as i32,
                    sketch: Some(feature_to_proto(i, &o.profile)),
                })
                .collect(),
            row_count: p.row_count,
            outlier: p.outlier.as_deref().map(pb::OutlierModel::from),
            scored_rows: p.scored_rows,
            outlier_count: p.outlier_count,
        }
    }
}

impl From<&OutlierModel> for pb::OutlierModel {
    fn from(m: &OutlierModel) -> Self {
        let fit = m.fit();
        pb::OutlierModel {
            features: u32::try_from(m.features()).unwrap_or(u32::MAX),
            mean: m.mean().to_vec(),
            whitening: m.whitening().to_vec(),
            rank: u32::try_from(m.rank()).unwrap_or(u32::MAX),
            diagonal: m.is_diagonal(),
            threshold: fit.threshold,
            degrees_of_freedom: m.degrees_of_freedom(),
            quantile: fit.quantile,
            ridge: fit.ridge,
            count: fit.count,
        }
    }
}

impl TryFrom<&pb::OutlierModel> for OutlierModel {
    type Error = ProfileError;

    fn try_from(p: &pb::OutlierModel) -> Result<Self, ProfileError> {
        let bad = |what: &str| ProfileError::Decode(format!("outlier model: {what}"));
        let features = p.features as usize;
        if p.mean.len() != features {
            return Err(bad("the mean does not have one value per feature"));
        }
        let expected = if p.diagonal {
            features
        } else {
            if features > MAX_FULL_COVARIANCE_FEATURES {
                return Err(bad("a full model wider than 256 features"));
            }
            (p.rank as usize).saturating_mul(features)
        };
        if p.whitening.len() != expected {
            return Err(bad("the whitening matrix does not match rank × features"));
        }
        let fit = OutlierFit {
            threshold: p.threshold,
            quantile: p.quantile,
            ridge: p.ridge,
            count: p.count,
        };
        let m = if p.diagonal {
            OutlierModel::diagonal(p.mean.clone(), p.whitening.clone(), fit)
        } else {
            OutlierModel::full(p.mean.clone(), p.whitening.clone(), fit)
        }
        .map_err(|e| bad(&e.to_string()))?;
        if m.rank() != p.rank as usize || m.degrees_of_freedom() != p.degrees_of_freedom {
            return Err(bad("rank and degrees of freedom disagree with the matrix"));
        }
        Ok(m)
    }
}

impl TryFrom<&pb::ModelProfile> for ModelProfile {
    type Error = ProfileError;

    fn try_from(p: &pb::ModelProfile) -> Result<Self, ProfileError> {
        let mut features = Vec::with_capacity(p.features.len());
        for (i, f) in p.features.iter().enumerate() {
            if f.index as usize != i {
                return Err(ProfileError::Decode(format!(
                    "feature {:?} has index {}, expected {i}",
                    f.name, f.index
                )));
            }
            features.push(feature_from_proto(f)?);
        }
        let outputs = p
            .outputs
            .iter()
            .map(|o| {
                let kind = match pb::OutputKind::try_from(o.kind) {
                    Ok(pb::OutputKind::Score) => OutputKind::Score,
                    Ok(pb::OutputKind::Label) => OutputKind::Label,
                    _ => {
                        return Err(ProfileError::Decode(format!(
                            "output {:?} has kind {}",
                            o.name, o.kind
                        )));
                    }
                };
                let sketch = o.sketch.as_ref().ok_or_else(|| {
                    ProfileError::Decode(format!("output {:?} has no sketch", o.name))
                })?;
                let profile = feature_from_proto(sketch)?;
                let expected = match kind {
                    OutputKind::Score => FeatureKind::Numeric,
                    OutputKind::Label => FeatureKind::Categorical,
                };
                if profile.kind() != expected {
                    return Err(ProfileError::Decode(format!(
                        "output {:?}: {kind:?} with a {:?} sketch",
                        o.name,
                        profile.kind()
                    )));
                }
                Ok(OutputProfile { kind, profile })
            })
            .collect::<Result<_, _>>()?;
        Ok(ModelProfile {
            model: p.model.clone(),
            version: p.version.clone(),
            request_count: p.request_count,
            error_count: p.error_count,
            row_count: p.row_count,
            scored_rows: p.scored_rows,
            outlier_count: p.outlier_count,
            outlier: p
                .outlier
                .as_ref()
                .map(|o| OutlierModel::try_from(o).map(Arc::new))
                .transpose()?,
            latency: decode_latency(&p.latency_hdr)?,
            features,
            outputs,
        })
    }
}
