//! Request limits the gateway enforces before routing: tensor sizes, and per-client rate and
//! concurrency.
//!
//! - [`check_shapes`]: every input's element count (the product of its shape, overflow-checked)
//!   is at most `--max-tensor-elements`, and its leading dimension at most `--max-batch`;
//!   negative dimensions are refused. INVALID_ARGUMENT naming the input and the limit.
//! - [`ClientLimitLayer`]: per client (the bearer token's name when tokens are on, else the
//!   peer IP), a token bucket of `--client-rate-limit` requests per second with
//!   `--client-burst`, and at most `--client-max-inflight` requests in flight. Over either:
//!   RESOURCE_EXHAUSTED. Each message of a ModelStreamInfer stream counts as one request: the
//!   layer admits no stream as a whole but hands the service a [`ClientGate`], which admits the
//!   messages one by one (an open stream holds no slot). The table of clients is bounded ([`MAX_CLIENTS`]): entries that are idle
//!   with a full bucket are dropped first (they are the same as new ones); when every slot is
//!   busy, further unknown clients share one overflow entry. Health checks are not limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{BoxFuture, Either, Ready, ready};
use kiln_proto::inference::ModelInferRequest;
use kiln_security::Caller;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::config::Config;
use crate::error::Error;

/// Distinct clients tracked at once.
pub const MAX_CLIENTS: usize = 4096;

/// Checks every input's shape against the element and batch limits.
pub fn check_shapes(
    request: &ModelInferRequest,
    max_elements: u64,
    max_batch: u64,
) -> Result<(), Error> {
    for input in &request.inputs {
        let mut elements: u64 = 1;
        for &dim in &input.shape {
            let dim = u64::try_from(dim).map_err(|_| {
                Error::InvalidRequest(format!(
                    "input {:?}: negative dimension {dim} in shape {:?}",
                    input.name, input.shape
                ))
            })?;
            elements = elements.saturating_mul(dim);
        }
        if elements > max_elements {
            return Err(Error::InvalidRequest(format!(
                "input {:?}: shape {:?} holds {elements} elements, over the gateway's limit of {max_elements} (--max-tensor-elements)",
                input.name, input.shape
            )));
        }
        if let Some(&batch) = input.shape.first()
            && batch as u64 > max_batch
        {
            return Err(Error::InvalidRequest(format!(
                "input {:?}: batch dimension {batch} over the gateway's limit of {max_batch} (--max-batch)",
                input.name
            )));
        }
    }
    Ok(())
}

/// Per-client limits (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Requests per second (0: none).
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
    /// In-flight cap (0: none).
    pub max_inflight: usize,
}

impl ClientLimits {
    /// The limits `config` asks for, or `None` when there are none.
    pub fn from_config(config: &Config) -> Option<Self> {
        let burst = if config.client_burst > 0 {
            f64::from(config.client_burst)
        } else {
            config.client_rate_limit.ceil().max(1.0)
        };
        (config.client_rate_limit > 0.0 || config.client_max_inflight > 0).then_some(Self {
            rate: config.client_rate_limit,
            burst,
            max_inflight: config.client_max_inflight,
        })
    }
}

struct Client {
    tokens: f64,
    refilled: Instant,
    inflight: Arc<AtomicUsize>,
}

/// The clients' state, shared by every connection.
pub struct ClientTable {
    limits: ClientLimits,
    clients: Mutex<HashMap<String, Client>>,
}

/// A client's in-flight slot, given back when dropped (when the answer is done).
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const OVERFLOW: &str = "_overflow";

impl ClientTable {
    pub fn new(limits: ClientLimits) -> Self {
        Self {
            limits,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `client` at `now`, or says which limit it is over.
    fn admit(&self, client: &str, now: Instant) -> Result<Slot, Error> {
        let limits = self.limits;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(client) && clients.len() >= MAX_CLIENTS {
            clients.retain(|_, c| {
                c.inflight.load(Ordering::Relaxed) > 0
                    || c.tokens + limits.rate * now.duration_since(c.refilled).as_secs_f64()
                        < limits.burst
            });
        }
        let key = if clients.contains_key(client) || clients.len() < MAX_CLIENTS {
            client
        } else {
            OVERFLOW
        };
        let entry = clients.entry(key.to_owned()).or_insert_with(|| Client {
            tokens: limits.burst,
            refilled: now,
            inflight: Arc::new(AtomicUsize::new(0)),
        });
        if limits.rate > 0.0 {
            let elapsed = now.duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * limits.rate).min(limits.burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(Error::ClientLimited {
                    client: key.to_owned(),
                    limit: format!(
                        "rate limit of {} requests/s (--client-rate-limit)",
                        limits.rate
                    ),
                });
            }
            entry.tokens -= 1.0;
        }
        let inflight = entry.inflight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(entry.inflight.clone());
        if limits.max_inflight > 0 && inflight >= limits.max_inflight {
            return Err(Error::ClientLimited {
                client: key.to_owned(),
                limit: format!(
                    "cap of {} requests in flight (--client-max-inflight)",
                    limits.max_inflight
                ),
            });
        }
        Ok(slot)
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Who a request is from, for the limits: the token's client name, else the peer IP.
fn client_of(extensions: &http::Extensions) -> String {
    if let Some(name) = extensions.get::<Caller>().and_then(|c| c.client.clone()) {
        return name;
    }
    let ip: Option<IpAddr> = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip());
    ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// The path of the streaming RPC, whose messages are admitted one by one.
const STREAM_PATH: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// Admits the messages of one client's stream under its limits (in the request's extensions
/// when per-client limits are on).
#[derive(Clone)]
pub struct ClientGate {
    table: Arc<ClientTable>,
    client: String,
}

impl ClientGate {
    /// Admits one message now, or says which limit the client is over.
    pub fn admit(&self) -> Result<Slot, Error> {
        self.table.admit(&self.client, Instant::now())
    }
}

/// The tower layer applying a [`ClientTable`] (placed after the auth layer, which names the
/// client).
#[derive(Clone)]
pub struct ClientLimitLayer {
    table: Option<Arc<ClientTable>>,
}

impl ClientLimitLayer {
    pub fn new(limits: Option<ClientLimits>) -> Self {
        Self {
            table: limits.map(|l| Arc::new(ClientTable::new(l))),
        }
    }
}

impl<S> tower::Layer<S> for ClientLimitLayer {
    type Service = ClientLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientLimitService {
            inner,
            table: self.table.clone(),
        }
    }
}

/// See [`ClientLimitLayer`].
#[derive(Clone)]
pub struct ClientLimitService<S> {
    inner: S,
    table: Option<Arc<ClientTable>>,
}

type Limited<F, R, E> = Either<Either<F, BoxFuture<'static, Result<R, E>>>, Ready<Result<R, E>>>;

impl<S, B, RB> tower::Service<http::Request<B>> for ClientLimitService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Limited<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(table) = &self.table else {
            return Either::Left(Either::Left(self.inner.call(req)));
        };
        if req.uri().path().starts_with("/grpc.health.v1.Health/") {
            return Either::Left(Either::Left(self.inner.call(req)));
        }
        if req.uri().path() == STREAM_PATH {
            let gate = ClientGate {
                table: table.clone(),
                client: client_of(req.extensions()),
            };
            req.extensions_mut().insert(gate);
            return Either::Left(Either::Left(self.inner.call(req)));
        }
        match table.admit(&client_of(req.extensions()), Instant::now()) {
            Ok(slot) => {
                let response = self.inner.call(req);
                Either::Left(Either::Right(Box::pin(async move {
                    let r = response.await;
                    drop(slot);
                    r
                })))
            }
            Err(e) => Either::Right(ready(Ok(Status::from(e).into_http()))),
        }
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
