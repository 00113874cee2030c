//! Leader election over any [`Coordinator`], with etcd's election algorithm.
//!
//! Each candidate writes `{name}/{lease:x}` attached to its lease (create-if-absent). The
//! candidate whose key has the lowest create revision leads; the others wait, watching the
//! prefix, until the keys before theirs are gone. A leader's key vanishes with its lease, so a
//! dead leader is replaced within the lease TTL. This is the layout of etcd's own v3election
//! service, so etcd tools read the same leader.

use futures::StreamExt;

use crate::types::{Compare, LeaseId, TxnOp, TxnRequest};
use crate::{CoordError, Result, SharedCoordinator};

/// Proof of leadership: the key the leader holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// The full key written for this candidate.
    pub key: String,
    /// The lease the key is attached to.
    pub lease: LeaseId,
    /// Its create revision (the candidate's place in line).
    pub create_revision: i64,
}

/// One named election.
#[derive(Clone)]
pub struct Election {
    coord: SharedCoordinator,
    prefix: String,
}

impl Election {
    /// The election stored under `name` (e.g. [`crate::keys::CONTROLLER_ELECTION`]).
    pub fn new(coord: SharedCoordinator, name: &str) -> Self {
        Self {
            coord,
            prefix: format!("{}/", name.trim_end_matches('/')),
        }
    }

    /// Enters the election with `value` (e.g. the candidate's address) and waits until elected.
    /// Cancel-safe: dropping the future leaves the key in line until its lease ends.
    pub async fn campaign(&self, value: &str, lease: LeaseId) -> Result<LeaderKey> {
        let key = format!("{}{lease:x}", self.prefix);
        let txn = TxnRequest {
            compare: vec![Compare::Absent(key.clone())],
            success: vec![TxnOp::Put {
                key: key.clone(),
                value: value.as_bytes().to_vec(),
                lease,
            }],
            failure: vec![],
        };
        self.coord.txn(txn).await?;
        loop {
            let listing = self.coord.list(&self.prefix).await?;
            let mine = listing
                .kvs
                .iter()
                .find(|kv| kv.key == key)
                .ok_or(CoordError::LeaseExpired(lease))?
                .clone();
            let first = listing.kvs.iter().min_by_key(|kv| kv.create_revision);
            if first.is_some_and(|kv| kv.key == key) {
                return Ok(LeaderKey {
                    key,
                    lease,
                    create_revision: mine.create_revision,
                });
            }
            // Wait for any change under the prefix, then look again.
            let mut watch = self
                .coord
                .watch_prefix(&self.prefix, listing.revision + 1)
                .await?;
            match watch.next().await {
                Some(Ok(_)) | Some(Err(CoordError::Compacted { .. })) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(CoordError::Unavailable("election watch ended".into())),
            }
        }
    }

    /// The current leader's value, or `None` when nobody leads.
    pub async fn leader(&self) -> Result<Option<String>> {
        let listing = self.coord.list(&self.prefix).await?;
        Ok(listing
            .kvs
            .iter()
            .min_by_key(|kv| kv.create_revision)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Whether `key` still leads.
    pub async fn is_leader(&self, key: &LeaderKey) -> Result<bool> {
        let listing = self.coord.list(&self.prefix).await?;
        Ok(listing
            .kvs
            .iter()
            .min_by_key(|kv| kv.create_revision)
            .is_some_and(|kv| kv.key == key.key && kv.create_revision == key.create_revision))
    }

    /// Steps down: deletes the leader key so the next candidate takes over at once.
    pub async fn resign(&self, key: &LeaderKey) -> Result<()> {
        let txn = TxnRequest {
            compare: vec![Compare::ModRevision(key.key.clone(), key.create_revision)],
            success: vec![TxnOp::Delete(key.key.clone())],
            failure: vec![],
        };
        self.coord.txn(txn).await?;
        Ok(())
    }
}
