//! `kiln.v1.Telemetry`: workers push traffic profiles, the monitor keeps them for `DriftReport`.
//!
//! Every monitor instance (leader or not) accepts pushes: workers push to all monitors, so any
//! instance can answer a drift report. A push is all-or-nothing per batch: every profile is
//! decoded and validated first (a malformed one fails the batch with INVALID_ARGUMENT through
//! [`crate::error`]), then each is merged into the [`ProfileStore`] window its batch's
//! `window_start_unix_ms` falls in (see [`store`] for alignment and memory bounds).
//! [`report`] builds `DriftReport` answers from the store and the reference profiles.

pub mod report;
pub mod store;

use std::sync::Arc;

use kiln_proto::kiln::v1::telemetry_server::Telemetry;
use kiln_proto::kiln::v1::{ProfileBatch, PushAck};
use kiln_telemetry::profile::ModelProfile;
use prometheus_client::metrics::gauge::Gauge;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
pub use report::ReferenceCache;
pub use store::{Merged, ProfileStore};

/// The Telemetry API implementation over a shared [`ProfileStore`].
#[derive(Clone)]
pub struct TelemetryService {
    store: Arc<ProfileStore>,
    bytes: Gauge,
}

impl TelemetryService {
    /// A service merging pushes into `store`, publishing its estimated size in `bytes`.
    pub fn new(store: Arc<ProfileStore>, bytes: Gauge) -> Self {
        Self { store, bytes }
    }
}

/// Decodes and validates every profile of `batch`, then merges them; returns how many.
pub fn accept(store: &ProfileStore, batch: &ProfileBatch) -> Result<u32> {
    if batch.window_end_unix_ms != 0 && batch.window_end_unix_ms < batch.window_start_unix_ms {
        return Err(Error::InvalidArgument(format!(
            "window ends ({}) before it starts ({})",
            batch.window_end_unix_ms, batch.window_start_unix_ms
        )));
    }
    let profiles = batch
        .profiles
        .iter()
        .map(|p| {
            crate::admin::segment("model", &p.model)?;
            crate::admin::segment("version", &p.version)?;
            ModelProfile::try_from(p).map_err(|e| {
                Error::InvalidArgument(format!(
                    "profile of {}/{} from worker {:?}: {e}",
                    p.model, p.version, batch.worker_id
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for p in &profiles {
        store.push(batch.window_start_unix_ms, p)?;
    }
    Ok(u32::try_from(profiles.len()).unwrap_or(u32::MAX))
}

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    async fn push_profile(
        &self,
        req: Request<ProfileBatch>,
    ) -> std::result::Result<Response<PushAck>, Status> {
        let store = self.store.clone();
        let batch = req.into_inner();
        // Decoding sketches and merging is CPU work: keep it off the async workers.
        let accepted = tokio::task::spawn_blocking(move || accept(&store, &batch)).await;
        // Also after a failed batch: the profiles before the failing one were stored.
        self.bytes
            .set(i64::try_from(self.store.bytes()).unwrap_or(i64::MAX));
        let accepted =
            accepted.map_err(|e| Error::Internal(format!("profile merge panicked: {e}")))??;
        Ok(Response::new(PushAck { accepted }))
    }
}
