//! Test harness: a real single-node `etcd` (from PATH, or `KILN_ETCD_BIN`) on free loopback
//! ports in a temporary directory, killed when dropped ([`EtcdServer`]); and the in-memory store
//! with faults a test switches on and off ([`Faulty`]).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use crate::{
    CoordError, Coordinator, EtcdConfig, EtcdCoordinator, EtcdTls, KeyValue, LeaseId, Listing,
    MemoryCoordinator, Result, TxnOutcome, TxnRequest, WatchStream,
};

/// The in-memory store with faults a test switches on and off:
/// - [`Faulty::cut`]: listings and watches fail and open watches end with an error, as when the
///   store is unreachable. Writes go through: they stand for other processes that still reach
///   it.
/// - [`Faulty::stall_keep_alives`]: keep-alives hang, as with a store that stopped answering
///   without closing the connection.
pub struct Faulty {
    /// The store behind the faults (reach it directly to see what really holds).
    pub inner: MemoryCoordinator,
    cut: watch::Sender<bool>,
    stall: AtomicBool,
}

impl Default for Faulty {
    fn default() -> Self {
        Self {
            inner: MemoryCoordinator::new(),
            cut: watch::channel(false).0,
            stall: AtomicBool::new(false),
        }
    }
}

impl Faulty {
    /// Cuts the store off (`true`) or reconnects it.
    pub fn cut(&self, on: bool) {
        self.cut.send_replace(on);
    }

    /// Makes keep-alives hang (`true`) or answer again.
    pub fn stall_keep_alives(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    fn unavailable() -> CoordError {
        CoordError::Unavailable("cut by the test".into())
    }

    fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

#[async_trait]
impl Coordinator for Faulty {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        if self.is_cut() {
            return Err(Self::unavailable());
        }
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.delete_prefix(prefix).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        if self.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn watch_prefix(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        if self.is_cut() {
            return Err(Self::unavailable());
        }
        let mut cut = self.cut.subscribe();
        let stream = self
            .inner
            .watch_prefix(prefix, from_revision)
            .await?
            .take_until(async move {
                let _ = cut.wait_for(|c| *c).await;
            })
            .chain(futures::stream::once(async { Err(Faulty::unavailable()) }));
        Ok(Box::pin(stream))
    }
    async fn txn(&self, txn: TxnRequest) -> Result<TxnOutcome> {
        self.inner.txn(txn).await
    }
    fn kind(&self) -> &'static str {
        "faulty"
    }
}

/// A running etcd server owned by a test.
pub struct EtcdServer {
    child: Child,
    /// How it was started, to start it again on the same data ([`Self::restart`]).
    command: Vec<std::ffi::OsString>,
    /// Client URL, `http://127.0.0.1:{port}` (`https://` with TLS).
    pub endpoint: String,
    /// The client TLS files its readiness probe and [`Self::connect`] use.
    tls: Option<EtcdTls>,
    _dir: tempfile::TempDir,
}

/// PEM files of a TLS etcd: its certificate and key, and the CA its clients' certificates must
/// chain to (`--client-cert-auth`).
pub struct EtcdServerTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl EtcdServer {
    /// Starts etcd and waits (up to 20 s) until it answers.
    pub async fn start() -> Self {
        Self::start_with(None, None, &[]).await
    }

    /// Starts etcd with extra command-line flags (e.g. `--auth-token-ttl 1`).
    pub async fn start_with_flags(flags: &[&str]) -> Self {
        Self::start_with(None, None, flags).await
    }

    /// Starts etcd serving TLS and requiring client certificates from `server.ca`; `client`
    /// (files of a certificate it accepts) probes readiness and serves [`Self::connect`].
    pub async fn start_tls(server: &EtcdServerTls, client: EtcdTls) -> Self {
        Self::start_with(Some(server), Some(client), &[]).await
    }

    async fn start_with(
        server_tls: Option<&EtcdServerTls>,
        tls: Option<EtcdTls>,
        flags: &[&str],
    ) -> Self {
        let bin = std::env::var("KILN_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(&bin);
        if let Some(t) = server_tls {
            command
                .arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        command
            .args(["--name", "kiln-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("kiln-test={peer_url}")])
            .args(["--log-level", "error"])
            .args(flags);
        let argv: Vec<std::ffi::OsString> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(ToOwned::to_owned)
            .collect();
        let child = spawn(&argv);
        let server = Self {
            child,
            command: argv,
            endpoint,
            tls,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = server.try_connect().await
                && crate::Coordinator::get(&c, "/probe").await.is_ok()
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_connect(&self) -> crate::Result<EtcdCoordinator> {
        let mut config = EtcdConfig::new([self.endpoint.clone()]);
        config.tls = self.tls.clone();
        EtcdCoordinator::connect(&config).await
    }

    /// A coordinator connected to this server.
    pub async fn connect(&self) -> EtcdCoordinator {
        self.try_connect().await.expect("connect to test etcd")
    }

    /// Stops the server (SIGKILL), for outage tests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again on the same data and ports (what it held only in
    /// memory, such as its auth tokens, is gone); returns once its client port accepts.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.command);
        let addr = self
            .endpoint
            .rsplit_once("://")
            .map_or(self.endpoint.as_str(), |(_, a)| a)
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "etcd did not restart in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `argv` (the program, then its arguments) with no output.
fn spawn(argv: &[std::ffi::OsString]) -> Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{:?}` (install etcd-server): {e}", argv[0]))
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
