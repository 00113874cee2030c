//! The [`Coordinator`] trait and the plain data types it speaks in.
//!
//! The shapes follow etcd's v3 API (revisions, leases, compare-then-write transactions) because
//! etcd is the production store; the in-memory implementation reproduces the same semantics.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::Result;

/// Identifier of a lease. Keys attached to a lease vanish when it expires or is revoked.
pub type LeaseId = i64;

/// One stored key with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, UTF-8 (all Kiln keys are).
    pub key: String,
    /// The raw value bytes.
    pub value: Vec<u8>,
    /// Revision at which the key was created (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after the first put).
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

/// The answer to a prefix listing: the keys in key order and the store revision they were read at.
/// A watch started at `revision + 1` sees every change after the listing, none twice.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Matching keys, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The store's revision at the time of the read.
    pub revision: i64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated; `kv` holds the new value.
    Put,
    /// Deleted (explicitly or by lease expiry); `kv` holds the key and the deletion revision.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for deletes: key, empty value, `mod_revision` = deletion revision).
    pub kv: KeyValue,
}

/// A stream of watch batches. An `Err` ends the stream: the caller lists again and re-watches
/// from the listing's revision (this is how compaction and lost connections are survived).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Vec<WatchEvent>>> + Send>>;

/// A condition checked atomically before a transaction's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists with exactly this mod revision.
    ModRevision(String, i64),
    /// The key exists with exactly this value.
    Value(String, Vec<u8>),
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Put `value` at `key`, attached to `lease` (0 for none).
    Put {
        /// Key to write.
        key: String,
        /// Value to store.
        value: Vec<u8>,
        /// Lease to attach, 0 for none.
        lease: LeaseId,
    },
    /// Delete one key.
    Delete(String),
}

/// A compare-and-swap transaction: if every `compare` holds, apply `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Writes applied when they hold.
    pub success: Vec<TxnOp>,
    /// Writes applied when they do not.
    pub failure: Vec<TxnOp>,
}

/// The result of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the comparisons held (and `success` was applied).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: i64,
}

/// The coordination store. Implementations: etcd ([`crate::EtcdCoordinator`]) and in-memory
/// ([`crate::MemoryCoordinator`]); both pass the same conformance suite.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Reads every key under `prefix`, sorted, with the revision of the read.
    async fn list(&self, prefix: &str) -> Result<Listing>;
    /// Writes a key, optionally attached to a lease (0 = none). Returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64>;
    /// Deletes one key. Returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Deletes every key under `prefix`. Returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64>;
    /// Grants a lease that expires `ttl` after the last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Refreshes a lease once. Fails with [`crate::CoordError::LeaseExpired`] if it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;
    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// Watches every key under `prefix`, starting at `from_revision` (inclusive; 0 = from now).
    async fn watch_prefix(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;
    /// Runs a compare-and-swap transaction.
    async fn txn(&self, txn: TxnRequest) -> Result<TxnOutcome>;
    /// A short name of the implementation, for logs and metrics (`etcd`, `memory`).
    fn kind(&self) -> &'static str;
}
