//! `HttpEndpoints`: the shared routes answer, and `serve_with` mounts a service's own beside them.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use kiln_telemetry::{HttpEndpoints, Registry};
use tokio::sync::watch;

async fn get_path(addr: std::net::SocketAddr, path: &str) -> String {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_mounts_extra_routes_beside_the_shared_ones() {
    let (_ready, ready_rx) = watch::channel(true);
    let extra = Router::new().route("/hello", get(|| async { "hi\n" }));
    let http = HttpEndpoints::serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Mutex::new(Registry::default())),
        ready_rx,
        extra,
    )
    .await
    .unwrap();
    let hello = get_path(http.addr, "/hello").await;
    assert!(
        hello.starts_with("HTTP/1.1 200") && hello.ends_with("hi\n"),
        "{hello}"
    );
    let ready = get_path(http.addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let missing = get_path(http.addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
