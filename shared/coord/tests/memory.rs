//! The conformance suite against the in-memory coordinator.

use std::sync::Arc;

use kiln_coord::{MemoryCoordinator, SharedCoordinator};

async fn setup() -> (SharedCoordinator, ()) {
    (Arc::new(MemoryCoordinator::new()), ())
}

kiln_coord::conformance_tests!(setup());
