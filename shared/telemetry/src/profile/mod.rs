//! Traffic profiles: what a worker pushes to the monitor instead of requests (DESIGN.md §7).
//!
//! Per model version and window a worker keeps one [`ModelProfile`]: request and error
//! counts, an HDR latency histogram, one [`FeatureProfile`] per flattened input feature and one
//! [`OutputProfile`] per output. Every part is **mergeable**: the monitor merges the profiles
//! of all workers (and of consecutive windows) and gets the profile of the union stream, with
//! the same accuracy guarantees. [`ProfileWindow`] rolls profiles every N seconds and keeps a
//! bounded history. Profiles travel as `kiln.v1.ModelProfile` (see [`proto`]).
//! A reference profile may also carry an [`OutlierModel`] (squared Mahalanobis distance against
//! the reference rows, see [`outlier`]); live profiles count the rows scored against it and the
//! outliers among them ([`ModelProfile::scored_rows()`], [`ModelProfile::outlier_count()`]).
//!
//! # The quantile sketch: KLL (Apache DataSketches), not DDSketch or t-digest
//!
//! The monitor's drift tests (Evidently's defaults) need, per numeric feature, CDF values (KS
//! statistic = the largest CDF gap), quantiles (Wasserstein distance / std, PSI on reference
//! deciles). Candidates, as of 2026-11:
//!
//! | crate | sketch | last release | merge | serialization | guarantee |
//! |---|---|---|---|---|---|
//! | `datasketches` 0.6 (Apache DataSketches) | KLL | 2026-10 (every ~2 months) | yes | compact binary, same as the Java/C++/Python ports | **rank** error ≤ ε (k=1024: 0.27 %), exact up to k values |
//! | `sketches-ddsketch` 0.4 | DDSketch | 2026-10 | yes | own / Java-compatible | **relative value** error α |
//! | `tdigest` 1.0 | t-digest | 2026-09 | yes (not associative) | serde | none proven (good tails) |
//!
//! DDSketch's guarantee is relative to the value's magnitude: a feature at 2000 ± 3 (a year,
//! a Kelvin temperature) falls into one or two 1 % buckets, so its CDF and quantiles carry no
//! information about the spread, and Wasserstein/std and KS become meaningless (the crate does
//! handle negatives, with a second store, and its memory is ≤ 2 × max_bins × 8 bytes: 32 KiB at
//! its default 2048 bins, collapsing the smallest magnitudes beyond). KLL's error is
//! on ranks, hence independent of location and scale: every CDF value is within ε of the truth
//! (bounding the KS error by ε), every quantile is a value whose rank is within ε (bounding the
//! PSI bin error and, for continuous data, the Wasserstein error). t-digest has no proven bound
//! and merges depend on order. KLL handles negative values, zeros and infinities natively (it
//! only needs a total order); NaN and ±∞ are counted as missing before the sketch.
//! Cost: KLL is slower per value than DDSketch: a 64-feature row takes ≈ 2.6-2.9 µs through
//! [`ModelProfile::observe_batch`]/[`ModelProfile::observe_row`] (≈ 40-45 ns per value, moments
//! included; `benches/profile.rs`) where a bare DDSketch insert measured ≈ 20 ns per value on
//! the same 2-core machine. The observe path of this module allocates nothing per row, but
//! KLL's compactions (one every ~100 values of a feature) allocate ~12-15 small buffers each:
//! ≈ 0.15 allocations per value, ≈ 9 per 64-feature row (`tests/profile_alloc.rs`). A worker
//! that must keep its request path allocation free should copy rows into a buffer and fold
//! them into the profile off that path.
//! Items are stored as `f32` (the inputs' type; f64 inputs are rounded, ~1e-7 relative, far
//! below ε).
//!
//! # Memory bounds (defaults: k = [`DEFAULT_K`] = 1024 live, [`REFERENCE_K`] = 8192 reference)
//!
//! - Numeric feature, live: the KLL sketch retains at most [`max_retained`]`(k, n)` items of 4
//!   bytes, and exactly `n` while `n ≤ k` (a window of up to 1024 rows is held exactly, so the
//!   drift rule sees the raw sample: 500 rows = 2,000 bytes of items). After that: ≤ 3076
//!   items after 10⁴ values (2,348 measured), ≤ 3124 after 10⁶ (3,004 measured), 3476 for any
//!   n < 2⁶⁴. Heap ≤ 2 × 4 × retained (Vec growth slack) + 24 bytes per level ⇒ **≤ 8 KiB for
//!   a window of ≤ 1024 rows, ≤ 25 KiB after 10⁶ values, ≤ 29 KiB ever** (~10-12 KiB
//!   typical for a compacted window), plus ~150 bytes of fixed fields (name, moments,
//!   counts). Serialized (what a worker pushes per feature and window): 4 bytes per value up
//!   to 1024 values (2,032 bytes for 500), ~9.4 KiB for 10⁴ values (a 5 s window at the
//!   workers' default cap of 2 000 rows/s), 12,084 bytes after 10⁶. (With k = 200: ≤ 10 KiB
//!   heap, ~2.5 KiB serialized, but windows of more than 200 rows were compacted and their
//!   drift verdicts noisier than Evidently's; see [`DEFAULT_K`].)
//! - Numeric feature, reference (one per model version, built by `kiln profile`): exact up to
//!   8192 rows (4 bytes per row), ≤ 24 594 items after 10⁶ rows, 24 946 ever ⇒ **≤ 98 KiB**
//!   per feature (a 64-feature reference of a large training set ≈ 6 MiB, in memory and on
//!   disk).
//! - Categorical feature / label output: at most `cap` ([`DEFAULT_CATEGORY_CAP`] = 64)
//!   categories (others go to an "other" bucket): ≤ 64 × (16 bytes + label ≤ [`MAX_LABEL_BYTES`] + 40) with hash slack < 2× ⇒
//!   **≤ 14 KiB** with string labels, ~2 KiB with integer labels.
//! - Latency: one fixed HDR histogram, 1 µs .. 1 h at 2 significant digits: 3,328 u64 counters
//!   = **26 KiB** per profile (larger latencies clamp to 1 h).
//! - Outlier model ([`outlier`], reference profiles only): ≤ 256 × 256 `f64` = 512 KiB (64
//!   features: 32 KiB), diagonal above 256 features; live profiles carry two counters.
//! - [`ProfileWindow`]: at most `max_closed + 1` profiles. E.g. 64 numeric features, 2 label
//!   outputs, 12 windows kept: ≤ 13 × (64 × 29 + 2 × 14 + 26) KiB ≈ 24 MiB per model version
//!   worst case, ~11 MiB with windows of 10⁴ rows, ~4-7 MiB with windows of ≤ 1024 rows.

mod categories;
mod feature;
mod model;
mod moments;
pub mod outlier;
pub mod proto;
mod signature;
mod sketch;
mod window;

pub use categories::{CategoryCounts, CategoryLabel, DEFAULT_CATEGORY_CAP, MAX_LABEL_BYTES};
pub use feature::{FeatureKind, FeatureProfile};
pub use model::{
    FeatureSpec, LATENCY_MAX_MICROS, LATENCY_SIGFIG, ModelProfile, OutputKind, OutputProfile,
    OutputSpec, ProfileSchema, latency_histogram,
};
pub use moments::Moments;
pub use outlier::{CoMoments, MAX_FULL_COVARIANCE_FEATURES, OutlierFit, OutlierModel};
pub use signature::{MAX_FEATURES, SignatureLayout, TensorSig, layout};
pub use sketch::{DEFAULT_K, QuantileSketch, REFERENCE_K, max_retained};
pub use window::{ClosedWindow, ProfileWindow};

/// File name of a package's reference profile (`kiln profile` writes it; workers read its
/// outlier model when they load the package).
pub const REFERENCE_PROFILE_FILE: &str = "reference.profile.pb";

/// Most categories accepted per feature when decoding a peer's profile.
pub const MAX_DECODED_CATEGORIES: usize = 4096;

/// Sketch parameters of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SketchConfig {
    /// KLL accuracy parameter (8..=65535): exact up to k values, then rank error ≈ 2.3 / k^0.97
    /// (k = 1024: 0.27 %).
    pub kll_k: u16,
    /// Most categories tracked per categorical feature or label output.
    pub category_cap: usize,
}

impl Default for SketchConfig {
    fn default() -> Self {
        Self {
            kll_k: DEFAULT_K,
            category_cap: DEFAULT_CATEGORY_CAP,
        }
    }
}

/// What can go wrong building, observing into, merging or decoding profiles.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// An invalid sketch parameter.
    #[error("invalid profile configuration: {0}")]
    Config(String),
    /// Observed data does not fit the profile's shape.
    #[error("data does not fit the profile: {0}")]
    Shape(String),
    /// Two profiles of different models, versions or shapes.
    #[error("profiles do not match: {0}")]
    Mismatch(String),
    /// A sketch refused to merge (e.g. a count overflow).
    #[error("merge failed: {0}")]
    Merge(String),
    /// A wire profile is malformed.
    #[error("bad profile message: {0}")]
    Decode(String),
}
