//! The Admin API client, the progress bar of every wait, and the wait `kiln deploy` and
//! `kiln up` share: replicas becoming READY (the other waits are in [`crate::wait`]).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_proto::kiln::v1::admin_client::AdminClient;
use kiln_proto::kiln::v1::{ListReplicasRequest, ReplicaRecord, ReplicaState};
use kiln_security::Bearer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::errors::{Unreachable, normalize_url};
use crate::output::state_name;
use kiln_security::ClientArgs;

/// A connected Admin client (sending `--token` on every call).
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Connects to the Admin API at `url` (`http://host:port`; a bare `host:port` works too) with
/// `remote`'s TLS and token. A monitor that cannot be reached is an [`Unreachable`] error.
pub async fn connect(url: &str, remote: &ClientArgs) -> anyhow::Result<Admin> {
    let url = normalize_url(url);
    let tls = remote.tls()?;
    let endpoint = Endpoint::from_shared(kiln_security::wire_url(&url))
        .with_context(|| format!("bad Admin address {url} (see --admin)"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = kiln_security::connect(endpoint, tls.as_ref())
        .await
        .map_err(|source| Unreachable { url, source })?;
    Ok(AdminClient::with_interceptor(channel, remote.bearer()?))
}

/// A spinner with a count of `unit` (`ready`, `moved`) on stderr, drawn only when stderr is a
/// terminal.
pub fn progress(len: u64, what: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner:.cyan}} {{prefix}} [{{bar:20.cyan/blue}}] {{pos}}/{{len}} {unit} {{msg}} ({{elapsed}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Polls ListReplicas until `want` replicas of `model/version` are READY, with a progress bar on
/// a terminal. Fails when a replica FAILED and nothing loads any more
/// ([`crate::wait::Failures`]; its reason is the message), or after `within`.
pub async fn wait_ready(
    admin: &mut Admin,
    model: &str,
    version: &str,
    want: usize,
    within: Duration,
) -> anyhow::Result<Vec<ReplicaRecord>> {
    let bar = progress(want as u64, &format!("{model}/{version}"), "ready");
    let deadline = tokio::time::Instant::now() + within;
    let mut failures = crate::wait::Failures::default();
    let result = loop {
        let replicas = admin
            .list_replicas(ListReplicasRequest {
                model: model.into(),
                version: version.into(),
                worker_id: String::new(),
            })
            .await
            .context("ListReplicas")?
            .into_inner()
            .replicas;
        let ready: Vec<ReplicaRecord> = replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Ready as i32)
            .cloned()
            .collect();
        bar.set_position(ready.len().min(want) as u64);
        let loading = replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Loading as i32)
            .count();
        bar.set_message(if loading > 0 {
            format!("({loading} loading)")
        } else {
            String::new()
        });
        if let Some(failed) = failures.judge(&replicas, tokio::time::Instant::now()) {
            break Err(anyhow::anyhow!(
                "replica of {model}/{version} on {} is {}: {}",
                failed.worker_id,
                state_name(failed.state),
                failed.reason
            ));
        }
        if ready.len() >= want {
            break Ok(ready);
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "{}/{want} replicas of {model}/{version} ready after {within:?} ({loading} loading); see `kiln status`",
                ready.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    result
}
