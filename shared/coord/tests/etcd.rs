//! The conformance suite against a real etcd started for each test.

use std::sync::Arc;

use kiln_coord::SharedCoordinator;
use kiln_coord::testing::EtcdServer;

async fn setup() -> (SharedCoordinator, EtcdServer) {
    let server = EtcdServer::start().await;
    let coord = server.connect().await;
    (Arc::new(coord), server)
}

kiln_coord::conformance_tests!(setup());
