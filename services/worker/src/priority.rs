//! The scheduling split between request intake and compute (`--intake-nice`).
//!
//! Under a flood (a closed loop far beyond capacity) the async runtime's threads (HTTP/2,
//! decoding, admission, refusing the excess with RESOURCE_EXHAUSTED) can keep every CPU busy,
//! and the batches already admitted then wait for a CPU at every step: their latency grows with
//! the flood although the queue is bounded. With an intake nice value N > 0 the runtime's
//! threads run N above the process's nice value and the compute threads at its own, so the kernel's scheduler
//! gives compute the CPU first and intake the rest (at nice 10 against 0, CFS weights 110 vs
//! 1024). Idle, nothing changes: a nice value only matters while threads compete for a CPU.
//!
//! Linux keeps a nice value per thread, and a new thread inherits its creator's; raising one's
//! own nice value needs no privilege, lowering it back does. So the runtime's threads raise
//! theirs as they start ([`runtime`], `on_thread_start`), and the threads that must keep the
//! process's priority are created by a spawner thread started before the runtime ([`spawn`]):
//! the compute threads, and the threads that load models (a GPU backend starts its own driver
//! threads from the thread that first uses the device, which then inherit that thread's value).
//! With a split the runtime also looks at its global queue every other task, where tasks woken
//! by compute threads (finished batches) land, rather than after ~200 µs of local work (new
//! requests): answering what was computed comes before taking more in.
//! Without a split (N = 0, or no [`runtime`] in the process, as in tests) [`spawn`] is
//! `std::thread::Builder::spawn`.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::{Builder, JoinHandle};

/// The intake nice value when none is given: 10 for a GPU, where compute needs little CPU but
/// needs it at once (every GPU sync), 0 (no split) for the CPU backends, whose compute would
/// otherwise starve the intake that feeds it (measured in docs/BENCHMARKS.md).
pub fn default_intake_nice(backend: kiln_model::Backend) -> i32 {
    if !cfg!(target_os = "linux") {
        return 0; // nice values are per process elsewhere: no split to make
    }
    match backend {
        kiln_model::Backend::Wgpu => 10,
        kiln_model::Backend::Flex | kiln_model::Backend::Ndarray | kiln_model::Backend::WgpuCpu => {
            0
        }
    }
}

/// With a split, how many tasks a runtime thread polls between looks at its global queue.
const COMPLETIONS_EVERY_TICKS: u32 = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The split, once [`runtime`] made one: the spawner thread's queue and the runtime threads'
/// nice value.
static SPLIT: OnceLock<Split> = OnceLock::new();

struct Split {
    spawner: mpsc::Sender<Job>,
    intake: i32,
}

/// Builds the process's multi-thread runtime. With `intake_nice > 0` its threads (workers and
/// blocking pool) run that much above the process's nice value (at most 19), and [`spawn`]
/// creates threads at the caller's own. Call it from the main thread, before any other runtime
/// exists.
pub fn runtime(intake_nice: i32) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if intake_nice > 0 {
        // Absolute: the blocking pool's threads are created by runtime threads, already raised.
        let intake = (current_thread_nice()? + intake_nice).min(19);
        start_split(intake)?;
        // A request whose batch completes is woken from a compute thread, so its task goes to
        // the global queue, which a busy runtime thread reads only every ~200 µs of local work
        // (tokio's self-tuned interval): under a flood, that is refusals served first.
        builder.global_queue_interval(COMPLETIONS_EVERY_TICKS);
        builder.on_thread_start(move || {
            if let Err(e) = set_current_thread_nice(intake) {
                tracing::warn!(error = %e, "cannot lower a runtime thread's priority");
            }
        });
    }
    builder.build()
}

/// Moves the calling thread to the intake's nice value, if [`runtime`] made a split: for
/// background work that must not take the CPU from compute either (traffic profiling).
pub fn background() {
    if let Some(split) = SPLIT.get()
        && let Err(e) = set_current_thread_nice(split.intake)
    {
        tracing::warn!(error = %e, "cannot lower a background thread's priority");
    }
}

fn start_split(intake: i32) -> io::Result<()> {
    if SPLIT.get().is_some() {
        return Ok(());
    }
    let (spawner, rx) = mpsc::channel::<Job>();
    Builder::new()
        .name("kiln-spawner".into())
        .spawn(move || rx.into_iter().for_each(|job| job()))?;
    // A second caller racing here keeps its own spawner idle: both run at the same priority.
    let _ = SPLIT.set(Split { spawner, intake });
    Ok(())
}

/// Spawns a thread that keeps the process's priority, even when called from a runtime thread
/// at the intake nice value.
pub fn spawn<F, T>(builder: Builder, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(split) = SPLIT.get() else {
        return builder.spawn(f);
    };
    // Blocks the caller (maybe a runtime thread) for one thread creation: only at model load.
    let (tx, rx) = mpsc::sync_channel(1);
    let gone = || io::Error::other("the spawner thread has stopped");
    split
        .spawner
        .send(Box::new(move || {
            let _ = tx.send(builder.spawn(f));
        }))
        .map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// Runs blocking work on a new thread of the process's priority ([`spawn`]) and awaits it: for
/// model loading, where a GPU backend may start its driver threads.
pub async fn run_blocking<F, T>(name: String, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(Builder::new().name(name), move || {
        let _ = tx.send(f());
    })?;
    rx.await
        .map_err(|_| io::Error::other("the blocking thread panicked"))
}

/// Sets the calling thread's nice value (Linux: per thread).
#[cfg(target_os = "linux")]
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions; on Linux, PRIO_PROCESS with
    // who = 0 addresses the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's nice value (Linux: per thread).
#[cfg(target_os = "linux")]
pub fn current_thread_nice() -> io::Result<i32> {
    // getpriority returns the value itself, so -1 is an error only if errno says so.
    // SAFETY: errno is thread-local; getpriority has no memory-safety preconditions.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        match io::Error::last_os_error() {
            e if nice == -1 && e.raw_os_error() != Some(0) => Err(e),
            _ => Ok(nice),
        }
    }
}

/// Elsewhere nice values are per process: no split (the runtime's threads keep their priority).
#[cfg(not(target_os = "linux"))]
pub fn set_current_thread_nice(_nice: i32) -> io::Result<()> {
    Err(io::Error::other("a per-thread nice value needs Linux"))
}

/// Elsewhere: 0.
#[cfg(not(target_os = "linux"))]
pub fn current_thread_nice() -> io::Result<i32> {
    Ok(0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// One test owns the process-wide spawner (nextest runs each test in its own process; under
    /// `cargo test` the other tests just spawn through it, at the same priority).
    #[test]
    fn runtime_threads_run_at_the_intake_nice_value_and_spawned_threads_at_the_callers() {
        let base = current_thread_nice().unwrap();
        let rt = runtime(7).unwrap();
        let (intake, spawned, loaded, blocking) = rt.block_on(async {
            tokio::spawn(async {
                let intake = current_thread_nice().unwrap();
                let spawned = spawn(Builder::new(), || current_thread_nice().unwrap())
                    .unwrap()
                    .join()
                    .unwrap();
                let loaded = run_blocking("t".into(), || current_thread_nice().unwrap())
                    .await
                    .unwrap();
                // Created by a runtime thread (already raised): still the intake's value.
                let blocking = tokio::task::spawn_blocking(|| current_thread_nice().unwrap())
                    .await
                    .unwrap();
                (intake, spawned, loaded, blocking)
            })
            .await
            .unwrap()
        });
        let background = std::thread::spawn(|| {
            background();
            current_thread_nice().unwrap()
        });
        assert_eq!(background.join().unwrap(), (base + 7).min(19));
        assert_eq!(intake, (base + 7).min(19));
        assert_eq!(blocking, (base + 7).min(19));
        assert_eq!(spawned, base);
        assert_eq!(loaded, base);
        // The main thread (block_on) keeps its value.
        assert_eq!(current_thread_nice().unwrap(), base);
    }
}
