//! The etcd key schema (DESIGN.md §4). Every key Kiln reads or writes is built here.
//!
//! ```text
//! /kiln/v1/workers/{worker_id}                        lease=worker  WorkerRecord
//! /kiln/v1/models/{model}/{version}                   -             ModelVersionRecord
//! /kiln/v1/deployments/{model}                        -             DeploymentRecord
//! /kiln/v1/assignments/{worker_id}/{model}/{version}  -             AssignmentRecord (controller only)
//! /kiln/v1/replicas/{model}/{version}/{worker_id}     lease=worker  ReplicaRecord
//! /kiln/v1/drains/{worker_id}                         -             cordon (Admin DrainWorker)
//! /kiln/v1/election/controller                        election      controller leader
//! ```
//! Model names, versions and worker ids must not contain `/` ([`valid_segment`]).

/// Root of every Kiln key.
pub const ROOT: &str = "/kiln/v1/";
/// Prefix of worker registrations.
pub const WORKERS: &str = "/kiln/v1/workers/";
/// Prefix of registered model versions.
pub const MODELS: &str = "/kiln/v1/models/";
/// Prefix of deployments.
pub const DEPLOYMENTS: &str = "/kiln/v1/deployments/";
/// Prefix of assignments.
pub const ASSIGNMENTS: &str = "/kiln/v1/assignments/";
/// Prefix of replica states.
pub const REPLICAS: &str = "/kiln/v1/replicas/";
/// Prefix of cordons: a worker whose key exists here takes no new replicas and is emptied.
/// Not lease-bound, so a cordon outlives the worker's restarts until it is lifted.
pub const DRAINS: &str = "/kiln/v1/drains/";
/// The controller's election.
pub const CONTROLLER_ELECTION: &str = "/kiln/v1/election/controller";

/// Whether `s` may be used as one key segment (model, version, worker id).
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

/// `/kiln/v1/workers/{worker_id}`
pub fn worker(worker_id: &str) -> String {
    format!("{WORKERS}{worker_id}")
}

/// `/kiln/v1/models/{model}/{version}`
pub fn model_version(model: &str, version: &str) -> String {
    format!("{MODELS}{model}/{version}")
}

/// `/kiln/v1/deployments/{model}`
pub fn deployment(model: &str) -> String {
    format!("{DEPLOYMENTS}{model}")
}

/// `/kiln/v1/drains/{worker_id}`
pub fn drain(worker_id: &str) -> String {
    format!("{DRAINS}{worker_id}")
}

/// `/kiln/v1/assignments/{worker_id}/` — everything assigned to one worker.
pub fn assignments_of(worker_id: &str) -> String {
    format!("{ASSIGNMENTS}{worker_id}/")
}

/// `/kiln/v1/assignments/{worker_id}/{model}/{version}`
pub fn assignment(worker_id: &str, model: &str, version: &str) -> String {
    format!("{ASSIGNMENTS}{worker_id}/{model}/{version}")
}

/// `/kiln/v1/replicas/{model}/{version}/{worker_id}`
pub fn replica(model: &str, version: &str, worker_id: &str) -> String {
    format!("{REPLICAS}{model}/{version}/{worker_id}")
}

/// Splits a key under `prefix` into its segments: `("/a/", "/a/x/y")` → `["x", "y"]`.
pub fn segments<'a>(prefix: &str, key: &'a str) -> Option<Vec<&'a str>> {
    key.strip_prefix(prefix)
        .map(|rest| rest.split('/').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_splits_keys() {
        assert_eq!(
            replica("digits", "1", "w1"),
            "/kiln/v1/replicas/digits/1/w1"
        );
        assert_eq!(
            segments(REPLICAS, &replica("digits", "1", "w1")),
            Some(vec!["digits", "1", "w1"])
        );
        assert_eq!(
            segments(ASSIGNMENTS, &assignment("w", "m", "2")),
            Some(vec!["w", "m", "2"])
        );
        assert!(assignment("w", "m", "2").starts_with(&assignments_of("w")));
        assert_eq!(segments(WORKERS, "/other/x"), None);
    }

    #[test]
    fn rejects_unsafe_segments() {
        assert!(valid_segment("digits-v2_a.b"));
        for bad in ["", "a/b", "..", ".", "a b", "ü"] {
            assert!(!valid_segment(bad), "{bad:?}");
        }
    }
}
