//! A spawned task that is aborted when its owner drops it, so no background work outlives the
//! [`crate::Running`] that started it, even when `shutdown` is never called.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A task handle that aborts the task on drop.
pub(crate) struct Task(Option<JoinHandle<()>>);

impl Task {
    /// Spawns `fut` on the current runtime.
    pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(fut)))
    }

    /// Takes ownership of an already spawned task.
    pub(crate) fn from_handle(handle: JoinHandle<()>) -> Self {
        Self(Some(handle))
    }

    /// Waits up to `within` for the task to end by itself, then aborts it.
    pub(crate) async fn join(mut self, within: Duration) {
        if let Some(mut handle) = self.0.take()
            && tokio::time::timeout(within, &mut handle).await.is_err()
        {
            tracing::warn!("task did not stop within {within:?}; aborting it");
            handle.abort();
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
