//! etcd over mutual TLS through Kiln's own connector: the conformance suite, failover past a
//! dead member, and a client certificate rotated without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_coord::testing::{EtcdServer, EtcdServerTls};
use kiln_coord::{Coordinator, EtcdConfig, EtcdCoordinator, EtcdTls, SharedCoordinator};
use kiln_security::devcerts::{self, DevCerts};

/// A development CA with certificates for etcd and a client, in a directory kept alive by the
/// returned guard.
fn certs() -> (DevCerts, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let certs = devcerts::write(dir.path(), &["etcd", "client"], &[]).unwrap();
    (certs, dir)
}

fn client_tls(ca: PathBuf, cert: PathBuf, key: PathBuf) -> EtcdTls {
    EtcdTls {
        ca: Some(ca),
        cert: Some(cert),
        key: Some(key),
        reload: Duration::from_millis(100),
    }
}

async fn tls_server(certs: &DevCerts) -> EtcdServer {
    let server = EtcdServerTls {
        cert: certs.cert("etcd"),
        key: certs.key("etcd"),
        ca: certs.ca(),
    };
    let client = client_tls(certs.ca(), certs.cert("client"), certs.key("client"));
    EtcdServer::start_tls(&server, client).await
}

async fn setup() -> (SharedCoordinator, (EtcdServer, tempfile::TempDir)) {
    let (certs, dir) = certs();
    let server = tls_server(&certs).await;
    let coord = server.connect().await;
    (Arc::new(coord), (server, dir))
}

kiln_coord::conformance_tests!(setup());

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

#[tokio::test]
async fn fails_over_past_a_dead_member_and_follows_a_rotated_client_certificate() {
    let (certs, dir) = certs();
    let server = tls_server(&certs).await;
    // The client starts with a certificate from another CA, which etcd refuses.
    let rogue = devcerts::write(&dir.path().join("rogue"), &["client"], &[]).unwrap();
    let (cert, key) = (dir.path().join("mine.pem"), dir.path().join("mine.key"));
    copy(&rogue.cert("client"), &cert);
    copy(&rogue.key("client"), &key);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("https://127.0.0.1:{}", dead.local_addr().unwrap().port());
    let mut config = EtcdConfig::new([dead, server.endpoint.clone()]);
    config.tls = Some(client_tls(certs.ca(), cert.clone(), key.clone()));
    let coord = EtcdCoordinator::connect(&config).await.unwrap();
    assert!(
        coord.get("/k").await.is_err(),
        "etcd accepted a certificate of another CA"
    );

    // Rotate the files in place: the next connection presents the new certificate.
    copy(&certs.cert("client"), &cert);
    copy(&certs.key("client"), &key);
    let deadline = Instant::now() + Duration::from_secs(20);
    while coord.put("/k", b"v".to_vec(), 0).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(coord.get("/k").await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn tls_needs_https_endpoints_and_a_ca() {
    let (certs, _dir) = certs();
    let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
    config.tls = Some(client_tls(
        certs.ca(),
        certs.cert("client"),
        certs.key("client"),
    ));
    let err = EtcdCoordinator::connect(&config).await.err().unwrap();
    assert!(err.to_string().contains("https://"), "{err}");
    config.endpoints = vec!["https://127.0.0.1:2379".into()];
    config.tls = Some(EtcdTls::default());
    let err = EtcdCoordinator::connect(&config).await.err().unwrap();
    assert!(err.to_string().contains("--etcd-ca"), "{err}");
}
