//! The Admin API client and the one wait every command shares: replicas becoming READY.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_proto::kiln::v1::admin_client::AdminClient;
use kiln_proto::kiln::v1::{ListReplicasRequest, ReplicaRecord, ReplicaState};
use tonic::transport::{Channel, Endpoint};

use crate::output::state_name;

/// A connected Admin client.
pub type Admin = AdminClient<Channel>;

/// Connects to the Admin API at `url` (`http://host:port`; a bare `host:port` works too).
pub async fn connect(url: &str) -> anyhow::Result<Admin> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let channel = Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad Admin address {url}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach the monitor's Admin API at {url} (is the cluster up? see --admin)"
            )
        })?;
    Ok(AdminClient::new(channel))
}

/// A spinner with a count on stderr, drawn only when stderr is a terminal.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner:.cyan} {prefix} [{bar:20.cyan/blue}] {pos}/{len} ready {msg} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Polls ListReplicas until `want` replicas of `model/version` are READY, with a progress bar on
/// a terminal. Fails at once when a replica FAILED (its reason is the message), or after `within`.
pub async fn wait_ready(
    admin: &mut Admin,
    model: &str,
    version: &str,
    want: usize,
    within: Duration,
) -> anyhow::Result<Vec<ReplicaRecord>> {
    let bar = progress(want as u64, &format!("{model}/{version}"));
    let deadline = tokio::time::Instant::now() + within;
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
        if let Some(failed) = replicas
            .iter()
            .find(|r| r.state == ReplicaState::Failed as i32)
        {
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
