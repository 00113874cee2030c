//! Kiln's gateway: the front door of the cluster.
//!
//! Clients speak the Open Inference Protocol v2 (`inference.GRPCInferenceService`, Triton's
//! wire format) to the gateway; it routes each request by model name and version to a ready
//! replica on some worker and forwards the same message there, tensor bytes untouched
//! (DESIGN.md §1, §3). What it learns of the cluster comes from etcd (§4): replica states and
//! deployments, watched into a [`RoutingTable`]. It never links the model runtime.
//!
//! - [`config`]: flags and defaults.
//! - [`routing`]: the routing table and version choice (traffic weights);
//!   [`watcher`]: the task that keeps it in step with etcd.
//! - [`balancer`]: one channel per worker, power-of-two-choices on in-flight requests.
//! - [`forward`]: deadlines, retries on another replica, the retry budget.
//! - [`service`]: the gRPC service; [`stats`]: cluster-wide ModelStatistics.
//! - [`repository`]: Triton's repository extension (load/unload/index) mapped onto the
//!   monitor's Admin API, reached through [`admin`] (`--admin`, or the controller leader).
//! - [`error`]: the one mapping to gRPC statuses; [`edge`]: the codes of tonic's own
//!   statuses (size limits); [`metrics`]: Prometheus metrics.
//! - [`server`]: [`start`] and [`Running::shutdown`].

pub mod admin;
pub mod balancer;
pub mod config;
pub mod error;
pub mod forward;
pub mod limits;
pub mod metrics;
pub mod repository;
pub mod routing;
pub mod server;
pub mod service;
pub mod shm;
pub mod stats;
pub mod watcher;

pub use config::Config;
pub use error::Error;
pub use routing::RoutingTable;
pub use server::{Running, start};
