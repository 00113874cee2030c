//! etcd with authentication on: a client that logged in keeps working once its auth token is
//! gone, because it expired (etcd's simple tokens live `--auth-token-ttl` after their last use)
//! or because the member restarted (they live in its memory).

use std::time::Duration;

use kiln_coord::conformance::eventually;
use kiln_coord::testing::EtcdServer;
use kiln_coord::{Coordinator, EtcdConfig, EtcdCoordinator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_client_outlives_its_auth_token() {
    let mut server = EtcdServer::start_with_flags(&["--auth-token-ttl", "1"]).await;
    let mut admin = etcd_client::Client::connect([server.endpoint.clone()], None)
        .await
        .unwrap();
    let _ = admin.role_add("root").await; // built in on some etcd versions
    admin.user_add("root", "secret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let mut config = EtcdConfig::new([server.endpoint.clone()]);
    config.credentials = Some(("root".into(), "secret".into()));
    let coord = EtcdCoordinator::connect(&config).await.unwrap();
    coord.put("/auth/k", b"v".to_vec(), 0).await.unwrap();
    let works = || async {
        coord.put("/auth/k2", b"v".to_vec(), 0).await.is_ok()
            && coord.get("/auth/k").await.is_ok_and(|v| v.is_some())
    };

    // Idle past the token's TTL: the next request finds it expired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eventually(
        Duration::from_secs(20),
        "requests after the token expired",
        works,
    )
    .await;

    server.restart().await;
    eventually(
        Duration::from_secs(20),
        "requests after etcd restarted",
        works,
    )
    .await;
    let lease = coord.grant_lease(Duration::from_secs(5)).await.unwrap();
    coord.keep_alive(lease).await.unwrap();
}
