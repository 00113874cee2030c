//! The one place where failures become what an operator reads: every command returns an
//! `anyhow::Error`, and `main` prints [`explain`] of it and exits non-zero.
//!
//! gRPC statuses from the Admin API are mapped here and nowhere else, each with the fix to try:
//! a monitor that cannot be reached, a version that is not registered, a precondition the server
//! refused (its own message), an invalid argument (the message), an RPC the monitor does not
//! have yet. Contexts added by the commands ("deploying digits/1") stay in front.

use tonic::Code;

/// The Admin API could not be reached at all (connection refused, no route, bad address...).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {url}: {source}")]
pub struct Unreachable {
    /// The Admin URL tried.
    pub url: String,
    /// What the transport said.
    #[source]
    pub source: tonic::transport::Error,
}

/// The fix to try when the monitor cannot be reached at `url`, after what the transport said
/// (`why`: a refused connection, a TLS handshake or a name that did not resolve read alike
/// otherwise).
pub fn unreachable_message(url: &str, why: &str) -> String {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    format!(
        "cannot reach the monitor at {url}{why}: start a cluster with `kiln up` or point --admin / \
         KILN_ADMIN at a monitor"
    )
}

/// `first` and the sources from `next` on as one line, repeats left out (transport errors nest
/// the same text).
fn chain(first: String, mut next: Option<&dyn std::error::Error>) -> String {
    let mut parts: Vec<String> = vec![first];
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

/// What a transport error says, with its causes.
fn transport_chain(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e.to_string(), e.source())
}

/// What a client-side status says, with its causes (not tonic's debug rendering of it).
fn status_chain(status: &tonic::Status) -> String {
    chain(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
}

/// `url` as the CLI dials it (`http://` added to a bare `host:port`).
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// True when `status` was produced by the client's transport (the request never reached a
/// monitor), rather than returned by a monitor.
fn client_side(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        || status.message().contains("transport error")
        || status.message().contains("tcp connect error")
}

/// The operator-facing message of one gRPC status from the monitor at `url`.
pub fn status_message(status: &tonic::Status, url: &str) -> String {
    let msg = status.message();
    match status.code() {
        Code::Unavailable if client_side(status) || msg.is_empty() => {
            unreachable_message(url, &status_chain(status))
        }
        Code::Unavailable => {
            format!("the monitor at {url} cannot serve this now: {msg} (is its etcd up? try again)")
        }
        Code::NotFound if msg.contains("register it first") => {
            format!("{msg}; register it by adding `--package DIR` (the package directory)")
        }
        Code::NotFound => format!("{msg} (see `kiln status` for what exists)"),
        Code::FailedPrecondition if msg.contains("ready") && !msg.contains("kiln status") => {
            format!("{msg}; wait for `kiln status` to show it ready, then try again")
        }
        Code::FailedPrecondition | Code::InvalidArgument | Code::AlreadyExists => msg.to_string(),
        Code::PermissionDenied if msg.contains("needs role") => {
            format!("permission denied: {msg} (use an admin token: --token / KILN_TOKEN)")
        }
        Code::PermissionDenied => {
            format!("{msg} (packages must lie under the monitor's --package-root)")
        }
        Code::Unauthenticated => format!(
            "unauthenticated: {msg} (pass --tls-ca/--tls-cert/--tls-key and --token, or KILN_TLS_* and KILN_TOKEN)"
        ),
        Code::Aborted => format!("{msg} (others changed the same deployment: try again)"),
        Code::Unimplemented => {
            format!("the monitor at {url} does not implement this yet ({msg}): upgrade the monitor")
        }
        Code::DeadlineExceeded | Code::Cancelled => {
            format!("the monitor at {url} did not answer in time: {msg}")
        }
        code => format!("{code:?}: {msg}"),
    }
}

/// An error chain as one line for an operator. `admin` is the Admin URL when the command talks
/// to the monitor: statuses are then mapped by [`status_message`] and transport failures read
/// "cannot reach the monitor". Other commands (`up`, `predict`) get statuses as `CODE: message`.
pub fn explain(err: &anyhow::Error, admin: Option<&str>) -> String {
    let Some(admin) = admin else {
        return crate::describe(err);
    };
    let url = normalize_url(admin);
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(u) = cause.downcast_ref::<Unreachable>() {
            parts.push(unreachable_message(&u.url, &transport_chain(&u.source)));
            break;
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            parts.push(status_message(status, &url));
            break;
        }
        if let Some(transport) = cause.downcast_ref::<tonic::transport::Error>() {
            parts.push(unreachable_message(&url, &transport_chain(transport)));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:8101";

    fn explained(status: tonic::Status) -> String {
        explain(&anyhow::Error::new(status).context("doing it"), Some(URL))
    }

    #[test]
    fn maps_statuses_to_fixes() {
        let m = explained(tonic::Status::unavailable(""));
        assert!(m.starts_with("doing it: cannot reach the monitor at http://127.0.0.1:8101: start a cluster with `kiln up`"), "{m}");
        assert!(m.contains("KILN_ADMIN"), "{m}");
        let m = explained(tonic::Status::not_found(
            "model version digits/9 is not registered; register it first",
        ));
        assert!(m.contains("--package DIR"), "{m}");
        let m = explained(tonic::Status::failed_precondition(
            "version 2 has no ready replicas",
        ));
        assert!(m.contains("version 2 has no ready replicas"), "{m}");
        assert!(m.contains("wait for `kiln status` to show it ready"), "{m}");
        let m = explained(tonic::Status::invalid_argument("replicas must be 1-64"));
        assert_eq!(m, "doing it: replicas must be 1-64");
        let m = explained(tonic::Status::unimplemented("DrainWorker arrives later"));
        assert!(m.contains("does not implement"), "{m}");
    }

    #[tokio::test]
    async fn what_the_transport_said_stays_in_the_message() {
        // A refused port, a TLS handshake and a name that does not resolve must not all read
        // the same: the cause is kept in front of the usual advice.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // bound, then closed: nothing listens there
        let url = format!("http://127.0.0.1:{port}");
        let source = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        let err = anyhow::Error::new(Unreachable {
            url: url.clone(),
            source,
        });
        let m = explain(&err, Some(&url));
        assert!(m.contains("cannot reach the monitor at"), "{m}");
        assert!(m.to_lowercase().contains("connection refused"), "{m}");
        assert!(m.contains("start a cluster with `kiln up`"), "{m}");
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalize_url("h:1"), "http://h:1");
        assert_eq!(normalize_url("https://h:1"), "https://h:1");
        assert_eq!(
            explain(&anyhow::anyhow!("plain"), Some("h:1")),
            "plain",
            "other errors pass through"
        );
        let e = anyhow::Error::new(tonic::Status::unavailable("no replica")).context("predict");
        assert_eq!(explain(&e, None), "predict: Unavailable: no replica");
    }
}
