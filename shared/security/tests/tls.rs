//! Real TLS servers on port 0: mutual TLS, refusal of clients without a certificate, of
//! certificates from another CA and of missing or wrong tokens, and certificate reload.

use std::path::Path;
use std::time::Duration;

use kiln_security::auth::{AuthLayer, AuthPolicy, open_health_else};
use kiln_security::tls::{TlsFiles, TlsReloader};
use kiln_security::tokens::{Role, TokenBook, new_token};
use kiln_security::{ClientAuth, devcerts};
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

fn files(dir: &Path, name: Option<&str>, client_auth: ClientAuth) -> TlsFiles {
    TlsFiles {
        cert: name.map(|n| dir.join(format!("{n}.pem"))),
        key: name.map(|n| dir.join(format!("{n}.key"))),
        ca: Some(dir.join("ca.pem")),
        client_auth,
    }
}

fn infer_only(path: &str) -> kiln_security::Requirement {
    open_health_else(path, Role::Infer)
}

/// Starts a TLS server (health service) under `rule` and returns its address.
async fn serve(
    tls: TlsReloader,
    tokens: Option<TokenBook>,
    rule: fn(&str) -> kiln_security::Requirement,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("kiln", tonic_health::ServingStatus::Serving)
        .await;
    let policy = AuthPolicy {
        client_cert_required: tls.requires_client_cert(),
        tokens: tokens.map(kiln_security::Tokens::fixed),
        rule,
    };
    let incoming = kiln_security::incoming::incoming(listener, tls);
    tokio::spawn(async move {
        let _keep = reporter;
        Server::builder()
            .layer(AuthLayer::new(policy))
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

async fn check(
    addr: std::net::SocketAddr,
    tls: &TlsReloader,
    service: &str,
    token: Option<&str>,
) -> Result<i32, tonic::Status> {
    let endpoint = Endpoint::from_shared(format!("http://localhost:{}", addr.port()))
        .unwrap()
        .timeout(Duration::from_secs(5));
    let channel = kiln_security::connect(endpoint, Some(tls))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.check(request).await.map(|r| r.into_inner().status)
}

#[tokio::test]
async fn mutual_tls_refuses_strangers_and_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let rogue = tempfile::tempdir().unwrap();
    devcerts::write(dir.path(), &["server", "client"], &[]).unwrap();
    devcerts::write(rogue.path(), &["client"], &[]).unwrap();

    let server_tls = TlsReloader::start(
        files(dir.path(), Some("server"), ClientAuth::Required),
        Duration::from_millis(50),
    )
    .unwrap();
    let addr = serve(server_tls.clone(), None, infer_only).await;
    let client = TlsReloader::start(
        files(dir.path(), Some("client"), ClientAuth::None),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(
        check(addr, &client, "kiln", None).await.unwrap(),
        ServingStatus::Serving as i32
    );

    // No client certificate: the handshake passes and open methods (health) answer; protected
    // ones are refused (next test).
    let anonymous =
        TlsReloader::start(files(dir.path(), None, ClientAuth::None), Duration::ZERO).unwrap();
    assert!(check(addr, &anonymous, "kiln", None).await.is_ok());

    // A certificate from another CA fails the handshake (and the rogue client does not trust
    // our server either).
    let mut stranger = files(rogue.path(), Some("client"), ClientAuth::None);
    stranger.ca = Some(dir.path().join("ca.pem"));
    let stranger = TlsReloader::start(stranger, Duration::ZERO).unwrap();
    // (TLS 1.3: the client's certificate is checked after the client's side of the handshake
    // completed, so the refusal arrives as an alert on the first call.)
    let err = check(addr, &stranger, "kiln", None).await.unwrap_err();
    assert!(format!("{err:?}").contains("alert"), "{err:?}");

    // Rotation: reissue the server's certificate; the reloader picks it up and new
    // connections still verify.
    let before = server_tls.current().generation;
    std::thread::sleep(Duration::from_millis(20));
    devcerts::write(dir.path(), &["server"], &["rotated.example".into()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server_tls.current().generation == before {
        assert!(tokio::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(check(addr, &client, "kiln", None).await.is_ok());
}

fn everything_protected(path: &str) -> kiln_security::Requirement {
    let _ = path;
    kiln_security::Requirement::Role(Role::Admin)
}

#[tokio::test]
async fn protected_methods_need_a_certificate_and_a_token_of_the_right_role() {
    let dir = tempfile::tempdir().unwrap();
    devcerts::write(dir.path(), &["server", "client"], &[]).unwrap();
    let (admin, admin_line) = new_token("ops", Role::Admin);
    let (app, app_line) = new_token("app", Role::Infer);
    let book = TokenBook::parse(&format!("{admin_line}\n{app_line}")).unwrap();

    let server_tls = TlsReloader::start(
        files(dir.path(), Some("server"), ClientAuth::Required),
        Duration::ZERO,
    )
    .unwrap();
    let addr = serve(server_tls, Some(book), everything_protected).await;

    let client = TlsReloader::start(
        files(dir.path(), Some("client"), ClientAuth::None),
        Duration::ZERO,
    )
    .unwrap();
    let anonymous =
        TlsReloader::start(files(dir.path(), None, ClientAuth::None), Duration::ZERO).unwrap();
    assert!(check(addr, &client, "", Some(&admin)).await.is_ok());
    let code = |r: Result<i32, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(check(addr, &client, "", Some(&app)).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(check(addr, &client, "", None).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(check(addr, &client, "", Some("kiln_forged")).await),
        tonic::Code::Unauthenticated
    );
    let err = check(addr, &anonymous, "", Some(&admin)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("client certificate"), "{err:?}");
}
