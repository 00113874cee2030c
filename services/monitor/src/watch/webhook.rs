//! The alert webhook: Alertmanager-compatible JSON POSTed to a URL, off the watch loop.
//!
//! Batches of transitions queue in a bounded channel ([`QUEUE`] batches; a full queue drops the
//! new batch with a warning rather than grow); each is POSTed with a [`TIMEOUT`] and retried
//! [`ATTEMPTS`] times with a doubling back-off. A receiver answering 2xx has it.

use std::time::Duration;

use tokio::sync::mpsc;

use super::alerts::{Transition, alertmanager_payload};

/// Batches waiting to be sent.
pub const QUEUE: usize = 64;
/// Time one POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per batch.
pub const ATTEMPTS: u32 = 3;

/// Handle of the sending task (it ends when the handle is dropped).
#[derive(Debug)]
pub struct Webhook {
    tx: mpsc::Sender<Vec<Transition>>,
}

impl Webhook {
    /// Starts the task POSTing to `url`.
    pub fn spawn(url: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(url, rx));
        Self { tx }
    }

    /// Queues a batch; drops it (with a warning) when the queue is full.
    pub fn send(&self, transitions: Vec<Transition>) {
        if self.tx.try_send(transitions).is_err() {
            tracing::warn!("alert webhook queue full: a batch of alert transitions was dropped");
        }
    }
}

async fn deliver(url: String, mut rx: mpsc::Receiver<Vec<Transition>>) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert webhook client");
            return;
        }
    };
    while let Some(batch) = rx.recv().await {
        let body = alertmanager_payload(&batch, "");
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    tracing::warn!(%url, status = %r.status(), attempt, "alert webhook refused")
                }
                Err(e) => tracing::warn!(%url, error = %e, attempt, "alert webhook unreachable"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}
