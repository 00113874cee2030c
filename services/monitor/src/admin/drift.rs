//! DriftReport: resolves the version (the most recently pushed one when the request names none)
//! and its record, loads the reference profile (cached) and builds the report off the async
//! workers (see [`crate::telemetry::report`]).

use std::sync::Arc;

use kiln_coord::SharedCoordinator;
use kiln_coord::codec::{self, ModelVersionRecord};
use kiln_proto::kiln::v1::{DriftReportRequest, DriftReportResponse};

use super::{optional_segment, segment};
use crate::error::{Error, Result};
use crate::telemetry::{ProfileStore, ReferenceCache, report};

pub(super) async fn report(
    coord: &SharedCoordinator,
    profiles: &Arc<ProfileStore>,
    references: &Arc<ReferenceCache>,
    req: DriftReportRequest,
) -> Result<DriftReportResponse> {
    segment("model", &req.model)?;
    optional_segment("version", &req.version)?;
    let version = match req.version.as_str() {
        "" => profiles.latest_version(&req.model).ok_or_else(|| {
            Error::NotFound(format!(
                "no live traffic profile of {}: name a version",
                req.model
            ))
        })?,
        v => v.to_string(),
    };
    let key = kiln_coord::keys::model_version(&req.model, &version);
    let record: ModelVersionRecord = codec::get(coord.as_ref(), &key).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "model version {}/{version} is not registered",
            req.model
        ))
    })?;
    let (profiles, references) = (profiles.clone(), references.clone());
    tokio::task::spawn_blocking(move || {
        let reference = references.of_uri(&record.reference_profile_uri)?;
        report::build(
            &profiles,
            &record.model,
            &record.version,
            req.window_secs,
            reference.as_deref(),
        )
    })
    .await
    .map_err(|e| Error::Internal(format!("drift report panicked: {e}")))?
}
