//! [`FeatureProfile`]: the mergeable distribution summary of one input feature or one output.
//!
//! A numeric feature keeps exact [`Moments`] and a KLL [`QuantileSketch`]; a categorical one
//! keeps exact moments of its numeric codes (if any) and bounded [`CategoryCounts`]. NaN and
//! ±infinity are counted as missing and enter neither.

use super::categories::{CategoryCounts, CategoryLabel};
use super::moments::Moments;
use super::sketch::QuantileSketch;
use super::{ProfileError, SketchConfig};

/// How a feature's values are summarized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureKind {
    /// Continuous values: quantile sketch (KS, Wasserstein, PSI in the monitor).
    #[default]
    Numeric,
    /// Category codes or labels: bounded counts (chi-square, Jensen–Shannon).
    Categorical,
}

/// The distribution summary of one feature over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureProfile {
    name: String,
    kind: FeatureKind,
    missing: u64,
    moments: Moments,
    sketch: Option<QuantileSketch>,
    categories: Option<CategoryCounts>,
}

impl FeatureProfile {
    /// Memory held, estimated (the struct, its name, sketch and category counts).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.len()
            + self.sketch.as_ref().map_or(0, QuantileSketch::heap_bytes)
            + self
                .categories
                .as_ref()
                .map_or(0, CategoryCounts::heap_bytes)
    }

    /// An empty profile of `kind` named `name`.
    pub fn new(
        name: impl Into<String>,
        kind: FeatureKind,
        config: &SketchConfig,
    ) -> Result<Self, ProfileError> {
        let (sketch, categories) = match kind {
            FeatureKind::Numeric => (Some(QuantileSketch::new(config.kll_k)?), None),
            FeatureKind::Categorical => (None, Some(CategoryCounts::new(config.category_cap))),
        };
        Ok(Self {
            name: name.into(),
            kind,
            missing: 0,
            moments: Moments::default(),
            sketch,
            categories,
        })
    }

    /// Rebuilds a profile from its parts (wire decoding); the sketch/categories must fit `kind`.
    pub(crate) fn from_parts(
        name: String,
        kind: FeatureKind,
        missing: u64,
        moments: Moments,
        sketch: Option<QuantileSketch>,
        categories: Option<CategoryCounts>,
    ) -> Self {
        Self {
            name,
            kind,
            missing,
            moments,
            sketch,
            categories,
        }
    }

    /// Folds in one value: non-finite → missing; numeric → moments + sketch; categorical →
    /// moments + the integer category (a non-integral code counts as "other"). No allocation
    /// except when a categorical feature admits a new category.
    #[inline]
    pub fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            self.missing += 1;
            return;
        }
        self.moments.add(value);
        if let Some(s) = &mut self.sketch {
            s.add(value as f32);
        } else if let Some(c) = &mut self.categories {
            if value.fract() == 0.0 && value.abs() < 9.2e18 {
                c.add_int(value as i64);
            } else {
                c.add_other();
            }
        }
    }

    /// Folds in one `f32` value (same rules as [`FeatureProfile::observe`]).
    #[inline]
    pub fn observe_f32(&mut self, value: f32) {
        self.observe(f64::from(value));
    }

    /// Folds in one string category (categorical profiles; a numeric profile counts it as
    /// missing). String values have no moments.
    pub fn observe_label(&mut self, label: &str) {
        match &mut self.categories {
            Some(c) => c.add_str(label),
            None => self.missing += 1,
        }
    }

    /// Folds in one integer category (categorical profiles; numeric ones sketch the value).
    #[inline]
    pub fn observe_int(&mut self, label: i64) {
        match &mut self.categories {
            Some(c) => {
                self.moments.add(label as f64);
                c.add_int(label);
            }
            None => self.observe(label as f64),
        }
    }

    /// Folds in `other` (same kind required).
    pub fn merge(&mut self, other: &FeatureProfile) -> Result<(), ProfileError> {
        if self.kind != other.kind {
            return Err(ProfileError::Mismatch(format!(
                "feature {:?} is {:?} here and {:?} in the other profile",
                self.name, self.kind, other.kind
            )));
        }
        self.missing += other.missing;
        self.moments.merge(&other.moments);
        match (&mut self.sketch, &other.sketch) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, Some(b)) => self.sketch = Some(b.clone()),
            _ => {}
        }
        match (&mut self.categories, &other.categories) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.categories = Some(b.clone()),
            _ => {}
        }
        Ok(())
    }

    /// Empties the profile, keeping name, kind and configuration.
    pub fn reset(&mut self) {
        self.missing = 0;
        self.moments = Moments::default();
        if let Some(s) = &mut self.sketch {
            s.reset();
        }
        if let Some(c) = &mut self.categories {
            c.reset();
        }
    }

    /// The feature name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Numeric or categorical.
    pub fn kind(&self) -> FeatureKind {
        self.kind
    }

    /// Values observed that were not missing.
    pub fn count(&self) -> u64 {
        match &self.categories {
            Some(c) => c.total(),
            None => self.moments.count(),
        }
    }

    /// NaN or infinite values observed.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Exact count/min/max/mean/variance of the finite numeric values.
    pub fn moments(&self) -> &Moments {
        &self.moments
    }

    /// The quantile sketch (numeric features).
    pub fn sketch(&self) -> Option<&QuantileSketch> {
        self.sketch.as_ref()
    }

    /// The category counts (categorical features).
    pub fn categories(&self) -> Option<&CategoryCounts> {
        self.categories.as_ref()
    }

    /// The approximate `q`-quantile (numeric features; `None` when empty or categorical).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.as_ref()?.quantile(q)
    }

    /// The approximate fraction of values `<= x` (numeric features; `None` when empty).
    pub fn cdf(&self, x: f64) -> Option<f64> {
        self.sketch.as_ref()?.cdf(x)
    }

    /// The approximate quantiles at `qs`, one sorted view for all (numeric features).
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        self.sketch.as_ref()?.quantiles(qs)
    }

    /// The approximate CDF at strictly increasing `xs`, one sorted view (numeric features).
    pub fn cdfs(&self, xs: &[f64]) -> Option<Vec<f64>> {
        self.sketch.as_ref()?.cdfs(xs)
    }

    /// The count of one category (categorical features; 0 otherwise).
    pub fn category_count(&self, label: &CategoryLabel) -> u64 {
        self.categories.as_ref().map_or(0, |c| c.get(label))
    }
}
