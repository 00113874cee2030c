//! The auth layer: per gRPC method, what a call must carry.
//!
//! Checked in this order, each failure answered before the call reaches a service:
//! 1. the method's [`Requirement`] ([`AuthPolicy::rule`] maps the HTTP/2 path to it); health
//!    checks are [`Requirement::Open`] so probes and load balancers need no credential;
//! 2. a verified client certificate when the server requires one → else UNAUTHENTICATED (the
//!    handshake already refused certificates that do not chain to the CA);
//! 3. with a token book: `authorization: Bearer <token>` → UNAUTHENTICATED when missing or
//!    unknown, PERMISSION_DENIED when the token's role is below the method's.
//!
//! The caller's identity ([`Caller`]) goes into the request's extensions for later layers
//! (per-client limits). Nothing here logs a token.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::token_reload::Tokens;
use crate::tokens::Role;

/// What one gRPC method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing (health checks).
    Open,
    /// A client certificate when required; never a token (service-to-service calls that mTLS
    /// authenticates, such as workers pushing telemetry).
    Peer,
    /// A client certificate when required, and a token of at least this role when tokens are on.
    Role(Role),
}

/// Who made a call, as far as the auth layer could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's client name, when tokens are on.
    pub client: Option<String>,
    pub role: Option<Role>,
}

/// What a server enforces.
#[derive(Clone)]
pub struct AuthPolicy {
    pub client_cert_required: bool,
    /// The accepted tokens (following `--tokens-file`), or `None` when tokens are off.
    pub tokens: Option<Tokens>,
    /// Maps a gRPC path (`/package.Service/Method`) to its requirement.
    pub rule: fn(&str) -> Requirement,
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("client_cert_required", &self.client_cert_required)
            .field("tokens", &self.tokens.as_ref().map(|t| t.current().len()))
            .finish()
    }
}

/// Health checks are open; everything else needs `role`.
pub fn open_health_else(path: &str, role: Role) -> Requirement {
    if path.starts_with("/grpc.health.v1.Health/") {
        Requirement::Open
    } else {
        Requirement::Role(role)
    }
}

/// Health checks are open; everything else needs a client certificate when the server requires
/// one, and no token (servers only Kiln's own processes call).
pub fn open_health_else_peer(path: &str) -> Requirement {
    if path.starts_with("/grpc.health.v1.Health/") {
        Requirement::Open
    } else {
        Requirement::Peer
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AuthPolicy {
    /// Whether this policy checks anything at all.
    pub fn enforces(&self) -> bool {
        self.client_cert_required || self.tokens.is_some()
    }

    /// The caller of a request with these parts, or the status that refuses it.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, Status> {
        let anonymous = Caller {
            client: None,
            role: None,
        };
        let needed = match (self.rule)(path) {
            Requirement::Open => return Ok(anonymous),
            Requirement::Peer => None,
            Requirement::Role(role) => Some(role),
        };
        if self.client_cert_required {
            let verified = extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs())
                .is_some_and(|certs| !certs.is_empty());
            if !verified {
                return Err(Status::unauthenticated(
                    "a client certificate issued by the cluster CA is required",
                ));
            }
        }
        let (Some(book), Some(needed)) = (&self.tokens, needed) else {
            return Ok(anonymous);
        };
        let token = bearer(headers).ok_or_else(|| {
            Status::unauthenticated(
                "missing bearer token (metadata `authorization: Bearer <token>`)",
            )
        })?;
        let book = book.current();
        let entry = book
            .verify(token)
            .ok_or_else(|| Status::unauthenticated("invalid bearer token"))?;
        if entry.role < needed {
            return Err(Status::permission_denied(format!(
                "client '{}' has role {} but {path} needs role {}",
                entry.client,
                entry.role.name(),
                needed.name()
            )));
        }
        Ok(Caller {
            client: Some(entry.client.clone()),
            role: Some(entry.role),
        })
    }
}

/// A tower layer enforcing an [`AuthPolicy`] on every request of a tonic server.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policy: Arc<AuthPolicy>,
}

impl AuthLayer {
    pub fn new(policy: AuthPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.policy.enforces() {
            return Either::Left(self.inner.call(req));
        }
        match self
            .policy
            .check(req.uri().path(), req.headers(), req.extensions())
        {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Either::Left(self.inner.call(req))
            }
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{TokenBook, new_token};

    fn admin_only(path: &str) -> Requirement {
        if path.starts_with("/kiln.v1.Admin/") {
            Requirement::Role(Role::Admin)
        } else {
            open_health_else(path, Role::Infer)
        }
    }

    fn headers(token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = token {
            h.insert(http::header::AUTHORIZATION, t.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_and_roles_map_to_statuses() {
        let (client, client_line) = new_token("app", Role::Infer);
        let (admin, admin_line) = new_token("ops", Role::Admin);
        let policy = AuthPolicy {
            client_cert_required: false,
            tokens: Some(Tokens::fixed(
                TokenBook::parse(&format!("{client_line}\n{admin_line}")).unwrap(),
            )),
            rule: admin_only,
        };
        let ext = http::Extensions::new();
        let infer = "/inference.GRPCInferenceService/ModelInfer";
        let deploy = "/kiln.v1.Admin/Deploy";
        let code = |path, token: Option<String>| {
            policy
                .check(path, &headers(token.as_deref()), &ext)
                .map_err(|s| s.code())
        };
        assert_eq!(
            code(infer, Some(format!("Bearer {client}")))
                .unwrap()
                .client
                .as_deref(),
            Some("app")
        );
        assert!(code(infer, Some(format!("bearer {admin}"))).is_ok());
        assert!(code(deploy, Some(format!("Bearer {admin}"))).is_ok());
        assert_eq!(
            code(deploy, Some(format!("Bearer {client}"))),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(infer, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            code(infer, Some("Bearer kiln_nope".into())),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(infer, Some(format!("Basic {client}"))),
            Err(tonic::Code::Unauthenticated)
        );
        assert!(code("/grpc.health.v1.Health/Check", None).is_ok());
    }

    #[test]
    fn a_required_client_certificate_is_checked_before_tokens() {
        let policy = AuthPolicy {
            client_cert_required: true,
            tokens: None,
            rule: admin_only,
        };
        let err = policy
            .check(
                "/kiln.v1.Admin/Deploy",
                &headers(None),
                &http::Extensions::new(),
            )
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("client certificate"));
        assert!(
            policy
                .check(
                    "/grpc.health.v1.Health/Watch",
                    &headers(None),
                    &http::Extensions::new()
                )
                .is_ok()
        );
    }
}
