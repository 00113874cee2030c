//! The reference outlier model of a package: read from the package's `reference.profile.pb`
//! (written by `kiln profile`) when a replica loads, so the profiling thread can score every
//! profiled row against it (see [`kiln_telemetry::profile::outlier`]).
//!
//! Guarantees: reading never fails a load. A missing file, an older profile without an outlier
//! model or a malformed one leaves the version unscored (logged at debug / warn level); the
//! file is read on the blocking pool, once per load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_proto::kiln::v1 as pb;
use kiln_telemetry::profile::{OutlierModel, REFERENCE_PROFILE_FILE};
use prost::Message;

/// The outlier model in `dir/reference.profile.pb`, if there is a valid one (blocking).
pub fn read_outlier_model(dir: &Path) -> Option<Arc<OutlierModel>> {
    let path = dir.join(REFERENCE_PROFILE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no reference profile; rows are not scored for outliers");
            return None;
        }
    };
    let decoded = pb::ModelProfile::decode(&bytes[..])
        .map_err(|e| e.to_string())
        .and_then(|p| {
            p.outlier
                .as_ref()
                .map(|o| OutlierModel::try_from(o).map_err(|e| e.to_string()))
                .transpose()
        });
    match decoded {
        Ok(Some(m)) => Some(Arc::new(m)),
        Ok(None) => {
            tracing::info!(path = %path.display(), "the reference profile has no outlier model (re-run `kiln profile`); rows are not scored");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable reference profile; rows are not scored for outliers");
            None
        }
    }
}

/// [`read_outlier_model`] on the blocking pool.
pub async fn load_outlier_model(dir: PathBuf) -> Option<Arc<OutlierModel>> {
    tokio::task::spawn_blocking(move || read_outlier_model(&dir))
        .await
        .ok()
        .flatten()
}
