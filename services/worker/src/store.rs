//! The model versions this worker holds, shared by the control loop (which loads and unloads)
//! and the gRPC handlers (which look models up).
//!
//! A lookup hands out an `Arc<LoadedModel>`: unloading removes the entry at once, so no new
//! request reaches the version, while requests already holding it finish on its executor, whose
//! threads stop when the last `Arc` goes. Besides loaded versions the store remembers the state of
//! every assigned version (loading, failed with a reason) for `RepositoryIndex`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kiln_model::Manifest;

use crate::error::WorkerError;
use crate::executor::Executor;
use crate::metrics::ModelMetrics;
use crate::stats::ModelStats;
use crate::telemetry::VersionProfiler;

/// One model version ready to serve.
pub struct LoadedModel {
    /// The package manifest (name, version, signature, batching).
    pub manifest: Manifest,
    /// Its dynamic batcher: queue and compute threads.
    pub executor: Executor,
    /// Its ModelStatistics counters (shared with the batcher, which records executions).
    pub stats: Arc<ModelStats>,
    /// Its Prometheus series (shared likewise).
    pub metrics: Arc<ModelMetrics>,
    /// Compute threads serving it (reported as the instance count in ModelConfig).
    pub threads: usize,
    /// Its traffic profile, when telemetry is on.
    pub profiler: Option<Arc<VersionProfiler>>,
}

impl LoadedModel {
    /// Model name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Model version.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }
}

/// Where an assigned model version stands on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionState {
    /// The package is being verified and loaded.
    Loading,
    /// Loaded and serving.
    Ready,
    /// The load failed; the reason says why.
    Failed(String),
}

#[derive(Default)]
struct Inner {
    /// model → version → loaded model.
    loaded: BTreeMap<String, BTreeMap<String, Arc<LoadedModel>>>,
    /// (model, version) → state, for every assigned version.
    states: BTreeMap<(String, String), VersionState>,
}

/// The model versions of this worker.
#[derive(Default)]
pub struct ModelStore {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore").finish_non_exhaustive()
    }
}

/// Orders versions numerically when both are numbers ("10" > "9"), else as strings.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

impl ModelStore {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds a loaded version; an empty `version` means the highest loaded one.
    pub fn resolve(&self, model: &str, version: &str) -> Result<Arc<LoadedModel>, WorkerError> {
        let inner = self.read();
        let versions = inner.loaded.get(model);
        let found = match versions {
            Some(vs) if version.is_empty() => vs
                .iter()
                .max_by(|a, b| compare_versions(a.0, b.0))
                .map(|(_, m)| m.clone()),
            Some(vs) => vs.get(version).cloned(),
            None => None,
        };
        found.ok_or_else(|| WorkerError::ModelNotFound {
            model: model.to_string(),
            version: version.to_string(),
        })
    }

    /// Every loaded version of `model` (all models if empty), by name then version.
    pub fn loaded(&self, model: &str) -> Vec<Arc<LoadedModel>> {
        let inner = self.read();
        let mut out: Vec<_> = inner
            .loaded
            .iter()
            .filter(|(name, _)| model.is_empty() || name.as_str() == model)
            .flat_map(|(_, vs)| vs.values().cloned())
            .collect();
        out.sort_by(|a, b| {
            a.name()
                .cmp(b.name())
                .then_with(|| compare_versions(a.version(), b.version()))
        });
        out
    }

    /// Whether `model` (that `version` of it, or any if empty) is assigned here, loaded or not.
    pub fn knows(&self, model: &str, version: &str) -> bool {
        self.read()
            .states
            .keys()
            .any(|(m, v)| m == model && (version.is_empty() || v == version))
    }

    /// Every assigned version with its state, by name then version.
    pub fn states(&self) -> Vec<(String, String, VersionState)> {
        let mut out: Vec<_> = self
            .read()
            .states
            .iter()
            .map(|((m, v), s)| (m.clone(), v.clone(), s.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| compare_versions(&a.1, &b.1)));
        out
    }

    /// Records the state of an assigned version that is not (or no longer) loaded.
    pub fn set_state(&self, model: &str, version: &str, state: VersionState) {
        let mut inner = self.write();
        if let Some(vs) = inner.loaded.get_mut(model) {
            vs.remove(version);
            if vs.is_empty() {
                inner.loaded.remove(model);
            }
        }
        inner
            .states
            .insert((model.to_string(), version.to_string()), state);
    }

    /// Makes a loaded version servable.
    pub fn insert(&self, model: Arc<LoadedModel>) {
        let mut inner = self.write();
        let (name, version) = (model.name().to_string(), model.version().to_string());
        inner
            .states
            .insert((name.clone(), version.clone()), VersionState::Ready);
        inner.loaded.entry(name).or_default().insert(version, model);
    }

    /// Forgets a version: no new request reaches it. Returns it if it was loaded.
    pub fn remove(&self, model: &str, version: &str) -> Option<Arc<LoadedModel>> {
        let mut inner = self.write();
        inner
            .states
            .remove(&(model.to_string(), version.to_string()));
        let vs = inner.loaded.get_mut(model)?;
        let removed = vs.remove(version);
        if vs.is_empty() {
            inner.loaded.remove(model);
        }
        removed
    }

    /// Forgets everything (shutdown).
    pub fn clear(&self) {
        let mut inner = self.write();
        inner.loaded.clear();
        inner.states.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_when_they_can() {
        assert_eq!(compare_versions("10", "9"), Ordering::Greater);
        assert_eq!(compare_versions("2", "2"), Ordering::Equal);
        assert_eq!(compare_versions("b", "a"), Ordering::Greater);
    }

    #[test]
    fn unknown_models_are_not_found() {
        let store = ModelStore::default();
        store.set_state("m", "1", VersionState::Loading);
        assert!(store.knows("m", ""));
        assert!(store.knows("m", "1"));
        assert!(!store.knows("m", "2"));
        let err = store.resolve("m", "").err().unwrap();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(store.resolve("other", "1").is_err());
        assert_eq!(store.states()[0].2, VersionState::Loading);
        store.remove("m", "1");
        assert!(!store.knows("m", ""));
    }
}
