//! Sending one request to a worker: deadlines, attempts, retry classification and budget.
//!
//! Guarantees (DESIGN.md §4, "Retries"):
//! - Every attempt carries the caller's remaining time as its `grpc-timeout`, and the gateway
//!   stops waiting at the caller's deadline (kept back by a small margin so the caller hears
//!   DEADLINE_EXCEEDED from the gateway before giving up by itself). No `grpc-timeout` from the
//!   caller: `--request-timeout-ms` applies.
//! - An attempt that failed WITHOUT an answer (connection refused or reset, worker gone,
//!   transport error) or that was answered UNAVAILABLE is retried on another ready replica
//!   (the same one when it is the only one left), while the deadline, `--max-attempts` and the
//!   [`RetryBudget`] allow. So is a NOT_FOUND from a worker: the gateway routes only versions
//!   its table says the replica holds, so it means the table is stale (the worker restarted
//!   under the same id, or unloaded the version before the gateway saw it withdrawn) and nothing
//!   was computed; when no other replica is left, the caller gets UNAVAILABLE. Any other
//!   answer, success or application error (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...), is final.
//! - Retries draw on a token bucket: each request deposits `ratio` tokens, a retry costs one, and
//!   `floor_per_sec` tokens trickle in per second, so a sick cluster sees at most about
//!   `ratio` extra load (plus the floor), never a retry storm.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::balancer::{Backend, Backends};
use crate::error::Error;
use crate::routing::Route;

/// When the gateway must have answered: the caller's `grpc-timeout` (or `default`) from now,
/// less `margin` (at most a tenth of the timeout) so the answer reaches the caller in time.
pub fn deadline_of(metadata: &MetadataMap, default: Duration, margin: Duration) -> Instant {
    let timeout = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(kiln_proto::edge::parse_grpc_timeout)
        .unwrap_or(default);
    Instant::now() + timeout - margin.min(timeout / 10)
}

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered with a status: final, passed to the caller.
    Answered,
    /// No answer (transport failure) or UNAVAILABLE: another replica may be tried.
    NoAnswer,
    /// The caller's deadline passed.
    DeadlinePassed,
}

/// Classifies a failed attempt. A status built by tonic from a transport error carries its
/// cause as `source`; one a worker sent does not.
pub fn classify(status: &Status, deadline_passed: bool) -> Outcome {
    let code = status.code();
    if deadline_passed && matches!(code, Code::Cancelled | Code::DeadlineExceeded) {
        Outcome::DeadlinePassed
    } else if code == Code::Unavailable || std::error::Error::source(status).is_some() {
        Outcome::NoAnswer
    } else {
        Outcome::Answered
    }
}

/// The retry token bucket (see the module docs).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor_per_sec: f64,
    cap: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: f64,
    refilled_at: std::time::Instant,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request plus `floor_per_sec` per second; it holds
    /// at most ten seconds of floor (at least 10 tokens) and starts with one second of floor.
    pub fn new(ratio: f64, floor_per_sec: f64) -> Self {
        Self::new_at(ratio, floor_per_sec, std::time::Instant::now())
    }

    fn new_at(ratio: f64, floor_per_sec: f64, now: std::time::Instant) -> Self {
        Self {
            ratio,
            floor_per_sec,
            cap: (floor_per_sec * 10.0).max(10.0),
            state: Mutex::new(BudgetState {
                tokens: floor_per_sec,
                refilled_at: now,
            }),
        }
    }

    /// Credits one request.
    pub fn deposit(&self) {
        let mut s = self.lock();
        s.tokens = (s.tokens + self.ratio).min(self.cap);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(std::time::Instant::now())
    }

    fn withdraw_at(&self, now: std::time::Instant) -> bool {
        let mut s = self.lock();
        let elapsed = now.saturating_duration_since(s.refilled_at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.floor_per_sec).min(self.cap);
        s.refilled_at = now;
        // The epsilon forgives the rounding of many small deposits (0.1 × 10 < 1.0 in f64).
        if s.tokens >= 1.0 - 1e-9 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends requests to the replicas of a route, retrying as the module docs say.
#[derive(Debug)]
pub struct Forwarder {
    backends: Arc<Backends>,
    budget: RetryBudget,
    max_attempts: usize,
    retries: Counter,
}

impl Forwarder {
    /// A forwarder over `backends`, counting retries in `retries`.
    pub fn new(
        backends: Arc<Backends>,
        budget: RetryBudget,
        max_attempts: usize,
        retries: Counter,
    ) -> Self {
        Self {
            backends,
            budget,
            max_attempts: max_attempts.max(1),
            retries,
        }
    }

    /// The connection pool.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// Runs `send(client, remaining_time)` against a replica of `route`, and again on another
    /// replica after an attempt without answer, until an answer, the deadline, the attempt limit
    /// or the budget ends it. `send` must put `remaining_time` on its request as its timeout.
    pub async fn call<T, F, Fut>(
        &self,
        route: Route<'_>,
        deadline: Instant,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(GrpcInferenceServiceClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.budget.deposit();
        let mut tried: Vec<Arc<Backend>> = Vec::with_capacity(self.max_attempts);
        let mut last = String::from("no replica left to try");
        while tried.len() < self.max_attempts {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::DeadlineExceeded {
                    attempts: tried.len(),
                });
            }
            // Another replica if there is one; else the same again (a single replica may have
            // only lost its connection, e.g. to a GOAWAY race).
            let picked = self
                .backends
                .pick(route.replicas, &tried, &mut rand::rng())
                .or_else(|| self.backends.pick(route.replicas, &[], &mut rand::rng()));
            let Some(backend) = picked else {
                break;
            };
            if !tried.is_empty() {
                if !self.budget.withdraw() {
                    last = format!("{last} (retry budget spent)");
                    break;
                }
                self.retries.inc();
            }
            tried.push(backend.clone());
            let guard = backend.begin();
            let result = tokio::time::timeout_at(deadline, send(backend.client(), remaining)).await;
            drop(guard);
            let status = match result {
                Ok(Ok(response)) => {
                    backend.record_answer();
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_elapsed) => {
                    return Err(Error::DeadlineExceeded {
                        attempts: tried.len(),
                    });
                }
            };
            if status.code() == Code::NotFound {
                // The worker does not hold the version the routing table says it does (it
                // restarted under the same id, or unloaded it before this gateway saw the
                // withdrawal). Nothing was computed: another replica may answer. It will say
                // the same until this gateway's table catches up, so it is avoided for a while
                // like one that did not answer.
                backend.record_failure();
                last = format!("{} does not hold it: {}", backend.address, status.message());
                if self
                    .backends
                    .pick(route.replicas, &tried, &mut rand::rng())
                    .is_none()
                {
                    break; // no other replica: asking the same one again would not help
                }
                continue;
            }
            match classify(&status, Instant::now() >= deadline) {
                Outcome::Answered => {
                    backend.record_answer();
                    return Err(Error::Upstream(status));
                }
                Outcome::DeadlinePassed => {
                    return Err(Error::DeadlineExceeded {
                        attempts: tried.len(),
                    });
                }
                Outcome::NoAnswer => {
                    tracing::debug!(
                        address = %backend.address,
                        code = ?status.code(),
                        message = status.message(),
                        "attempt got no answer"
                    );
                    backend.record_failure();
                    last = format!("{}: {}", backend.address, status.message());
                }
            }
        }
        Err(Error::Unreachable {
            model: route.model.to_owned(),
            version: route.version.to_owned(),
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_uses_header_or_default_less_margin() {
        let margin = Duration::from_millis(5);
        let mut md = MetadataMap::new();
        let default = Duration::from_secs(30);
        let start = Instant::now();
        assert_eq!(deadline_of(&md, default, margin), start + default - margin);
        md.insert("grpc-timeout", "200m".parse().unwrap());
        assert_eq!(
            deadline_of(&md, default, margin),
            start + Duration::from_millis(195)
        );
        md.insert("grpc-timeout", "20m".parse().unwrap());
        assert_eq!(
            deadline_of(&md, default, margin),
            start + Duration::from_millis(18),
            "at most a tenth is kept back"
        );
    }

    #[test]
    fn only_attempts_without_answer_are_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let transport = Status::from_error(Box::new(io));
        assert_eq!(classify(&transport, false), Outcome::NoAnswer);
        assert_eq!(
            classify(&Status::unavailable("worker draining"), false),
            Outcome::NoAnswer
        );
        for answered in [
            Status::invalid_argument("input x: bad shape"),
            Status::not_found("no model"),
            Status::resource_exhausted("queue full"),
            Status::internal("bug"),
            Status::deadline_exceeded("worker gave up"),
        ] {
            assert_eq!(
                classify(&answered, false),
                Outcome::Answered,
                "{answered:?}"
            );
        }
        assert_eq!(
            classify(&Status::cancelled("Timeout expired"), true),
            Outcome::DeadlinePassed
        );
        assert_eq!(
            classify(&Status::deadline_exceeded("late"), true),
            Outcome::DeadlinePassed
        );
    }

    #[test]
    fn budget_allows_ratio_plus_floor() {
        let t0 = std::time::Instant::now();
        let budget = RetryBudget::new_at(0.1, 2.0, t0);
        // Starts with one second of floor.
        assert!(budget.withdraw_at(t0));
        assert!(budget.withdraw_at(t0));
        assert!(!budget.withdraw_at(t0));
        // 100 requests earn 10 retries.
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..20).filter(|_| budget.withdraw_at(t0)).count();
        assert_eq!(granted, 10);
        // The floor trickles back with time, up to the cap (10 s of floor, at least 10).
        assert!(budget.withdraw_at(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(1000);
        let granted = (0..100).filter(|_| budget.withdraw_at(later)).count();
        assert_eq!(granted, 20);
    }
}
