//! Dashboard pages against an in-memory store: empty cluster, a populated one (with hostile
//! strings), a version page with traffic, and the routes over real HTTP.

use std::sync::{Arc, Mutex};

use kiln_coord::codec::{
    self, DeploymentRecord, DeploymentVersion, ReplicaRecord, ReplicaState, WorkerRecord,
};
use kiln_coord::{MemoryCoordinator, SharedCoordinator, keys};
use kiln_telemetry::profile::{ModelProfile, ProfileSchema};
use kiln_telemetry::{HttpEndpoints, Registry};

use super::*;

fn dashboard() -> Dashboard {
    Dashboard {
        coord: Arc::new(MemoryCoordinator::new()),
        profiles: Arc::new(ProfileStore::new(10_000, 10, 4)),
        references: Arc::default(),
        watch: Arc::default(),
    }
}

async fn populate(coord: &SharedCoordinator) {
    let c = coord.as_ref();
    let worker = WorkerRecord {
        id: "w1".into(),
        address: "127.0.0.1:9001".into(),
        backend: "flex".into(),
        device: "<cpu>".into(),
        capacity_bytes: 1 << 30,
        ..Default::default()
    };
    codec::put(c, &keys::worker("w1"), &worker, 0)
        .await
        .unwrap();
    let dep = DeploymentRecord {
        model: "digits".into(),
        versions: vec![
            DeploymentVersion {
                version: "1".into(),
                replicas: 1,
                traffic_weight: 90,
                ..Default::default()
            },
            DeploymentVersion {
                version: "2".into(),
                replicas: 1,
                traffic_weight: 10,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    codec::put(c, &keys::deployment("digits"), &dep, 0)
        .await
        .unwrap();
    for (v, state, reason) in [
        ("1", ReplicaState::Ready, ""),
        ("2", ReplicaState::Failed, "<script>alert(1)</script>"),
    ] {
        let r = ReplicaRecord {
            model: "digits".into(),
            version: v.into(),
            worker_id: "w1".into(),
            address: "127.0.0.1:9001".into(),
            state: state as i32,
            reason: reason.into(),
            ..Default::default()
        };
        codec::put(c, &keys::replica("digits", v, "w1"), &r, 0)
            .await
            .unwrap();
    }
}

fn traffic(store: &ProfileStore, version: &str, start_ms: u64, requests: u64) {
    let mut p = ModelProfile::new("digits", version, &ProfileSchema::numeric("x", 2)).unwrap();
    for i in 0..requests {
        p.observe_row(&[i as f64, 1.0]).unwrap();
        p.record_request(std::time::Duration::from_micros(500 + i * 10), i % 10 != 0);
    }
    store.push(start_ms, &p).unwrap();
}

#[tokio::test]
async fn an_empty_cluster_renders_every_section() {
    let d = dashboard();
    let now = now_ms();
    let html = cluster::render(&cluster::gather(&d, now).await.unwrap(), now);
    for id in ["deployments", "workers", "replicas", "alerts"] {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    assert!(html.contains("Nothing is deployed") && html.contains("No worker is registered."));
    assert!(html.contains("has not judged a window yet"));
}

#[tokio::test]
async fn the_overview_lists_workers_replicas_and_the_split_escaped() {
    let d = dashboard();
    populate(&d.coord).await;
    let now = now_ms();
    traffic(&d.profiles, "1", now - 20_000, 50);
    let html = cluster::render(&cluster::gather(&d, now).await.unwrap(), now);
    assert!(html.contains("<span class=\"worker-id\">w1</span>"));
    assert!(html.contains("&lt;cpu&gt;") && !html.contains("<cpu>"));
    assert!(html.contains("&lt;script&gt;alert(1)") && !html.contains("<script>alert"));
    assert!(html.contains("href=\"/models/digits/1\"") && html.contains("90.0 %"));
    assert!(html.contains("canary") && html.contains("FAILED"));
    // 50 requests in the last closed 10 s window.
    assert!(html.contains("5.00/s"), "{html}");
}

#[tokio::test]
async fn a_version_page_embeds_its_series_and_says_why_drift_is_not_judged() {
    let d = dashboard();
    populate(&d.coord).await;
    let now = now_ms();
    traffic(&d.profiles, "1", now - 20_000, 50);
    traffic(&d.profiles, "1", now - 10_000, 30);
    let view = version::gather(&d, "digits", "1").await.unwrap();
    assert_eq!(view.series.len(), 2);
    let html = version::render(&view, now);
    assert!(html.contains("id=\"series-data\"") && html.contains("id=\"latency-chart\""));
    assert!(html.contains("/assets/uplot.min.js"));
    assert!(html.contains("<section id=\"drift\">") && html.contains("<section id=\"alerts\">"));
    let data = version::chart_data(&view.series, view.window_ms, now);
    assert_eq!(data.t.len(), 2);
    assert!(
        data.p99[0] > 0.0 && (data.rps[0] - 5.0).abs() < 1e-9,
        "{data:?}"
    );

    let empty = version::gather(&d, "digits", "2").await.unwrap();
    let html = version::render(&empty, now);
    assert!(html.contains("No traffic profile of this version"));
    assert!(matches!(
        version::gather(&d, "digits", "9").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        version::gather(&d, "digits", "a b").await,
        Err(Error::InvalidArgument(_))
    ));
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_serve_pages_and_assets() {
    let d = dashboard();
    populate(&d.coord).await;
    let (_ready, ready_rx) = tokio::sync::watch::channel(true);
    let http = HttpEndpoints::serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Mutex::new(Registry::default())),
        ready_rx,
        router(d),
    )
    .await
    .unwrap();
    let status = |r: &str| r.lines().next().unwrap_or_default().to_string();
    let home = http_get(http.addr, "/").await;
    assert_eq!(status(&home), "HTTP/1.1 200 OK");
    assert!(home.contains("text/html") && home.contains("Workers"));
    let js = http_get(http.addr, "/assets/uplot.min.js").await;
    assert_eq!(status(&js), "HTTP/1.1 200 OK");
    assert!(js.contains("text/javascript") && js.len() > 40_000);
    for path in [
        "/assets/dashboard.js",
        "/assets/dashboard.css",
        "/assets/uplot.min.css",
    ] {
        assert_eq!(status(&http_get(http.addr, path).await), "HTTP/1.1 200 OK");
    }
    let page = http_get(http.addr, "/models/digits/2").await;
    assert_eq!(status(&page), "HTTP/1.1 200 OK");
    assert!(page.contains("digits/2"));
    let missing = http_get(http.addr, "/models/digits/9").await;
    assert_eq!(status(&missing), "HTTP/1.1 404 Not Found");
    let bad = http_get(http.addr, "/models/digits/%3Cb%3E").await;
    assert_eq!(status(&bad), "HTTP/1.1 400 Bad Request");
    assert!(bad.contains("&lt;b&gt;") && !bad.contains("<b>"));
    assert_eq!(
        status(&http_get(http.addr, "/healthz").await),
        "HTTP/1.1 200 OK"
    );
}
