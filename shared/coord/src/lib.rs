//! Coordination store for Kiln.
//!
//! Everything the cluster agrees on lives behind one trait, [`Coordinator`]: prefix reads, puts and
//! deletes, leases with keep-alive and expiry, watches that resume from a revision, transactions
//! that compare before they write, and leader election. Two implementations exist:
//!
//! - [`EtcdCoordinator`], the production one, over a real etcd cluster;
//! - [`MemoryCoordinator`], for the single-process embedded mode (`kiln up`).
//!
//! Both are checked by the same conformance suite (`conformance`, behind the `testing` feature),
//! so code written against the trait behaves the same on either. The key schema of DESIGN.md §4 is
//! in [`keys`]; the one value codec (JSON) is in [`codec`]. [`SessionMetrics`] exports a
//! [`LeaseSession`]'s state to Prometheus, the same way in every service that holds one.

mod args;
pub mod codec;
mod election;
mod error;
mod etcd;
pub mod keys;
mod memory;
pub mod metrics;
mod session;
mod types;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

pub use args::EtcdArgs;
pub use election::{Election, LeaderKey};
pub use error::{CoordError, Result};
pub use etcd::{EtcdConfig, EtcdCoordinator, EtcdTls};
pub use memory::MemoryCoordinator;
pub use metrics::SessionMetrics;
pub use session::{LeaseSession, SessionState};
pub use types::{
    Compare, Coordinator, EventKind, KeyValue, LeaseId, Listing, TxnOp, TxnOutcome, TxnRequest,
    WatchEvent, WatchStream,
};

use std::sync::Arc;

/// A shared handle to whichever coordinator the process runs with.
pub type SharedCoordinator = Arc<dyn Coordinator>;
