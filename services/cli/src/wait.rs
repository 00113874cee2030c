//! Waits for the cluster to follow a change, polling the Admin API with a deadline and showing a
//! progress bar on a terminal: a deployment settling after promote or rollback
//! ([`wait_settled`]) and a cordoned worker emptying ([`wait_drained`]). Both fail with a message
//! that says what is still missing and where to look.

use std::time::Duration;

use anyhow::Context;
use kiln_proto::kiln::v1::{
    DeploymentRecord, ListDeploymentsRequest, ListReplicasRequest, ReplicaRecord, ReplicaState,
};

use crate::admin::{Admin, progress};
use crate::commands::status::ready_count;

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(200);

/// How long a FAILED replica may stand with nothing loading before a wait gives up on it: the
/// controller tries a load that failed once on each other fitting worker (LOADING again there),
/// and one worker's failure (a missing mount, no memory) is not the deployment's.
pub const FAILED_GRACE: Duration = Duration::from_secs(5);

/// Decides when the FAILED replicas a wait sees end it (see [`FAILED_GRACE`]).
#[derive(Debug, Default)]
pub struct Failures {
    since: Option<tokio::time::Instant>,
}

impl Failures {
    /// Looks at one poll's records: the FAILED one that ends the wait, once one has stood for
    /// [`FAILED_GRACE`] while none of `replicas` was LOADING.
    pub fn judge<'r>(
        &mut self,
        replicas: impl IntoIterator<Item = &'r ReplicaRecord>,
        now: tokio::time::Instant,
    ) -> Option<&'r ReplicaRecord> {
        let (mut failed, mut loading) = (None, false);
        for r in replicas {
            if r.state == ReplicaState::Failed as i32 {
                failed = failed.or(Some(r));
            }
            loading |= r.state == ReplicaState::Loading as i32;
        }
        if failed.is_none() || loading {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        failed.filter(|_| now.duration_since(since) >= FAILED_GRACE)
    }
}

/// What a deployment still lacks before it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settling {
    /// READY replicas of the versions with traffic (each counted up to its desired count).
    pub ready: usize,
    /// Desired replicas of the versions with traffic.
    pub want: usize,
    /// Versions still marked retiring.
    pub retiring: usize,
}

impl Settling {
    /// Measures `d` against the replica records of its model.
    pub fn of(d: &DeploymentRecord, replicas: &[kiln_proto::kiln::v1::ReplicaRecord]) -> Self {
        let mut s = Settling::default();
        for v in &d.versions {
            if v.retiring {
                s.retiring += 1;
            } else if v.traffic_weight > 0 {
                let want = v.replicas as usize;
                s.want += want;
                s.ready += ready_count(replicas, &d.model, &v.version).min(want);
            }
        }
        s
    }

    /// True when nothing retires any more and every version with traffic is fully ready.
    pub fn settled(&self) -> bool {
        self.retiring == 0 && self.ready >= self.want
    }
}

/// Polls ListDeployments and ListReplicas until the deployment of `model` has no retiring
/// versions and all its versions with weight > 0 have their replicas READY; returns the record
/// then. Fails at once when the deployment disappears, when a replica of a version with traffic
/// FAILED and nothing loads any more ([`Failures`]), and after `within`.
pub async fn wait_settled(
    admin: &mut Admin,
    model: &str,
    within: Duration,
) -> anyhow::Result<DeploymentRecord> {
    let bar = progress(0, model, "ready");
    let deadline = tokio::time::Instant::now() + within;
    let mut failures = Failures::default();
    let result = loop {
        let deployment = admin
            .list_deployments(ListDeploymentsRequest {
                model: model.into(),
            })
            .await
            .context("ListDeployments")?
            .into_inner()
            .deployments
            .into_iter()
            .find(|d| d.model == model);
        let Some(d) = deployment else {
            break Err(anyhow::anyhow!("model {model} is no longer deployed"));
        };
        let replicas = admin
            .list_replicas(ListReplicasRequest {
                model: model.into(),
                ..Default::default()
            })
            .await
            .context("ListReplicas")?
            .into_inner()
            .replicas;
        let s = Settling::of(&d, &replicas);
        bar.set_length(s.want as u64);
        bar.set_position(s.ready as u64);
        bar.set_message(if s.retiring > 0 {
            format!("({} retiring)", s.retiring)
        } else {
            String::new()
        });
        let serving = |version: &str| {
            d.versions
                .iter()
                .any(|v| v.version == version && v.traffic_weight > 0 && !v.retiring)
        };
        let of_serving = replicas.iter().filter(|r| serving(&r.version));
        if let Some(failed) = failures.judge(of_serving, tokio::time::Instant::now()) {
            break Err(anyhow::anyhow!(
                "replica of {model}/{} on {} FAILED: {}",
                failed.version,
                failed.worker_id,
                failed.reason
            ));
        }
        if s.settled() {
            break Ok(d);
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "{model} not settled after {within:?}: {}/{} replicas with traffic ready, {} \
                 version(s) still retiring; see `kiln status`",
                s.ready,
                s.want,
                s.retiring
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    result
}

/// Polls ListReplicas filtered to `worker` until it holds no replica; `initial` is the count
/// when the cordon was written (the bar's length).
pub async fn wait_drained(
    admin: &mut Admin,
    worker: &str,
    initial: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let bar = progress(initial as u64, worker, "moved");
    let deadline = tokio::time::Instant::now() + within;
    let result = loop {
        let left = admin
            .list_replicas(ListReplicasRequest {
                worker_id: worker.into(),
                ..Default::default()
            })
            .await
            .context("ListReplicas")?
            .into_inner()
            .replicas
            .len();
        let total = initial.max(left);
        bar.set_length(total as u64);
        bar.set_position((total - left) as u64);
        if left == 0 {
            break Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "{left} replica(s) still on {worker} after {within:?}: each moves once its \
                 replacement is ready elsewhere; see `kiln status` (is there another worker \
                 that fits?)"
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::kiln::v1::{DeploymentVersion, ReplicaRecord};

    #[test]
    fn settles_when_nothing_retires_and_traffic_is_ready() {
        let v = |version: &str, weight, retiring| DeploymentVersion {
            version: version.into(),
            replicas: 2,
            traffic_weight: weight,
            retiring,
            ..Default::default()
        };
        let ready = |version: &str, worker: &str| ReplicaRecord {
            model: "m".into(),
            version: version.into(),
            worker_id: worker.into(),
            state: ReplicaState::Ready as i32,
            ..Default::default()
        };
        let mut d = DeploymentRecord {
            model: "m".into(),
            versions: vec![v("1", 0, true), v("2", 100, false)],
            ..Default::default()
        };
        let replicas = vec![ready("1", "a"), ready("2", "a")];
        let s = Settling::of(&d, &replicas);
        assert_eq!(
            s,
            Settling {
                ready: 1,
                want: 2,
                retiring: 1
            }
        );
        assert!(!s.settled());
        d.versions.remove(0);
        let replicas = vec![ready("2", "a"), ready("2", "b"), ready("2", "c")];
        assert!(Settling::of(&d, &replicas).settled());
    }
}
