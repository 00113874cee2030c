use kiln_coord::codec::{ReplicaRecord, encode};
use kiln_coord::{KeyValue, keys};

use super::*;
use crate::routing::RoutingState;

fn replica(version: &str, worker: &str, state: ReplicaState) -> KeyValue {
    let record = ReplicaRecord {
        model: "digits".into(),
        version: version.into(),
        worker_id: worker.into(),
        address: format!("{worker}.local:9001"),
        state: state as i32,
        ..Default::default()
    };
    KeyValue {
        key: keys::replica("digits", version, worker),
        value: encode(&record),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }
}

fn scrape(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

#[test]
fn routing_table_series_are_read_at_scrape_time() {
    let mut registry = Registry::default();
    let m = Metrics::register(&mut registry);
    let (tx, rx) = watch::channel(Arc::new(RoutingTable::default()));
    m.register_table(&mut registry, rx);
    let text = scrape(&registry);
    assert!(!text.contains("kiln_routing_table_age_seconds "), "{text}");

    let mut state = RoutingState::default();
    state.reset_replicas(&[
        replica("1", "w1", ReplicaState::Ready),
        replica("1", "w2", ReplicaState::Ready),
        replica("2", "w1", ReplicaState::Loading),
        replica("2", "w3", ReplicaState::Failed),
    ]);
    tx.send_replace(Arc::new(state.table()));
    m.touch_table();
    let text = scrape(&registry);
    has(
        &text,
        r#"kiln_routing_replicas{model="digits",version="1",state="ready"} 2"#,
    );
    has(
        &text,
        r#"kiln_routing_replicas{model="digits",version="2",state="ready"} 0"#,
    );
    has(
        &text,
        r#"kiln_routing_replicas{model="digits",version="2",state="loading"} 1"#,
    );
    has(
        &text,
        r#"kiln_routing_replicas{model="digits",version="2",state="failed"} 1"#,
    );
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kiln_routing_table_age_seconds "))
        .expect("age exported after a sync")
        .parse()
        .unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");

    // A version gone from the table is gone from the scrape.
    tx.send_replace(Arc::new(RoutingTable::default()));
    assert!(!scrape(&registry).contains("version=\"1\""));
}

#[test]
fn routed_requests_are_counted_under_tritons_names() {
    let mut registry = Registry::default();
    let m = Metrics::register(&mut registry);
    let ms = Duration::from_millis(3);
    m.observe_request("digits", Some("1"), Code::Ok, ms);
    m.observe_request("digits", Some("1"), Code::Ok, ms);
    m.observe_request("digits", Some("1"), Code::ResourceExhausted, ms);
    m.observe_request("digits", Some("1"), Code::Unavailable, ms);
    m.observe_request("_unknown", None, Code::NotFound, ms);
    let text = scrape(&registry);
    has(&text, "# TYPE nv_inference_request_success unknown");
    has(
        &text,
        r#"nv_inference_request_success{model="digits",version="1"} 2"#,
    );
    has(
        &text,
        r#"nv_inference_request_duration_us{model="digits",version="1"} 6000"#,
    );
    has(
        &text,
        r#"nv_inference_request_failure{model="digits",version="1",reason="REJECTED"} 1"#,
    );
    has(
        &text,
        r#"nv_inference_request_failure{model="digits",version="1",reason="BACKEND"} 1"#,
    );
    // Unrouted requests only reach the gateway's own counters.
    assert!(
        !text.contains("nv_inference_request_failure{model=\"_unknown\""),
        "{text}"
    );
    has(
        &text,
        r#"kiln_gateway_requests_total{model="_unknown",code="NOT_FOUND"} 1"#,
    );
}

#[test]
fn series_of_versions_gone_from_the_table_are_dropped() {
    let mut registry = Registry::default();
    let m = Metrics::register(&mut registry);
    let mut state = RoutingState::default();
    state.reset_replicas(&[
        replica("1", "w1", ReplicaState::Ready),
        replica("2", "w1", ReplicaState::Ready),
    ]);
    let both = state.table();
    let ms = Duration::from_millis(3);
    for version in ["1", "2"] {
        m.observe_request("digits", Some(version), Code::Ok, ms);
        m.observe_request("digits", Some(version), Code::Cancelled, ms);
    }
    state.reset_replicas(&[replica("2", "w1", ReplicaState::Ready)]);
    let only_2 = state.table();
    m.forget_removed(&both, &only_2);
    let text = scrape(&registry);
    assert!(!text.contains(r#"version="1""#), "{text}");
    has(
        &text,
        r#"nv_inference_request_success{model="digits",version="2"} 1"#,
    );
    has(
        &text,
        r#"kiln_gateway_requests_total{model="digits",code="CANCELLED"} 2"#,
    );
    // The model gone altogether: its own series go too.
    m.forget_removed(&only_2, &RoutingTable::default());
    let text = scrape(&registry);
    assert!(!text.contains(r#"model="digits""#), "{text}");
}
