//! The load generator's own CPU over the measured window (`"client_cpu"` in the JSON).
//!
//! A load generator that runs out of CPU measures itself: answers wait in its own run queue
//! before their latency is taken, and in a closed loop its callers queue there instead of at
//! the server. Locust warns above 90 % CPU for the same reason; so does the summary table
//! ([`SATURATED`]). The figures are the process's user + system time (`getrusage`) between the
//! end of the warm-up and the last answer, per request sent in the window, and as a share of
//! the CPUs the process may run on (its affinity mask and cgroup quota, as
//! [`std::thread::available_parallelism`] reads them).

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Utilization of its CPUs from which the load generator counts as saturated.
pub const SATURATED: f64 = 0.9;

/// The load generator's CPU over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientCpu {
    /// CPUs the process may run on.
    pub cpus: usize,
    /// User + system CPU time used, seconds.
    pub cpu_s: f64,
    /// `cpu_s` per request sent in the window, µs (0 without requests).
    pub us_per_request: f64,
    /// `cpu_s / (wall seconds × cpus)`: 1.0 is every allowed CPU busy all the time.
    pub utilization: f64,
}

impl ClientCpu {
    /// The figures for `used` CPU time over `wall` on `cpus` CPUs, `requests` sent.
    pub fn of(used: Duration, wall: Duration, cpus: usize, requests: u64) -> Self {
        let cpu_s = used.as_secs_f64();
        let capacity = wall.as_secs_f64() * cpus.max(1) as f64;
        Self {
            cpus,
            cpu_s: round(cpu_s, 1e3),
            us_per_request: if requests == 0 {
                0.0
            } else {
                round(cpu_s * 1e6 / requests as f64, 1e1)
            },
            utilization: if capacity > 0.0 {
                round(cpu_s / capacity, 1e3)
            } else {
                0.0
            },
        }
    }

    /// Whether the load generator was short of CPU ([`SATURATED`]).
    pub fn saturated(&self) -> bool {
        self.utilization >= SATURATED
    }
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// User + system CPU time of this process so far; `None` where it cannot be read.
pub fn process_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: the call succeeded, so the struct is initialized.
        let usage = unsafe { usage.assume_init() };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Some(time(usage.ru_utime) + time(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A reading of the process's CPU time at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    cpu: Duration,
    at: Instant,
}

impl Mark {
    /// The CPU used from this mark to `end`, for `requests` requests.
    pub fn to(&self, end: &Mark, requests: u64) -> ClientCpu {
        ClientCpu::of(
            end.cpu.saturating_sub(self.cpu),
            end.at.saturating_duration_since(self.at),
            allowed_cpus(),
            requests,
        )
    }

    /// Now; `None` where CPU time cannot be read.
    pub fn now() -> Option<Self> {
        Some(Self {
            cpu: process_time()?,
            at: Instant::now(),
        })
    }
}

/// Runs `load` (which measures from `warmup` on, for `limit` if it is time-limited) and reads
/// the CPU it used over its measured window: from the end of the warm-up to the end of the
/// window, or to the end of `load` if that comes first (a request-limited or interrupted run).
/// Not until later: the wait for answers still out at the end, or the reads after it, would
/// spread the same work over a longer time. Returns `load`'s output and the figure (`None`
/// where CPU time cannot be read), for `requests` of the output.
pub async fn around<T>(
    warmup: Duration,
    limit: Option<Duration>,
    load: impl Future<Output = T>,
    requests: impl FnOnce(&T) -> u64,
) -> (T, Option<ClientCpu>) {
    let start = async {
        tokio::time::sleep(warmup).await;
        Mark::now()
    };
    let window_end = async {
        match limit {
            Some(limit) => {
                tokio::time::sleep(warmup + limit).await;
                Mark::now()
            }
            None => std::future::pending().await,
        }
    };
    let run = async {
        tokio::pin!(load, window_end);
        tokio::select! {
            biased;
            out = &mut load => (out, Mark::now()),
            end = &mut window_end => (load.await, end),
        }
    };
    let (start, (out, end)) = tokio::join!(start, run);
    let cpu = start
        .zip(end)
        .map(|(start, end)| start.to(&end, requests(&out)));
    (out, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cpu_time_over_requests_and_allowed_cpus() {
        let c = ClientCpu::of(Duration::from_secs(3), Duration::from_secs(2), 2, 100_000);
        assert_eq!(c.cpus, 2);
        assert_eq!(c.cpu_s, 3.0);
        assert_eq!(c.us_per_request, 30.0);
        assert_eq!(c.utilization, 0.75);
        assert!(!c.saturated());
        let busy = ClientCpu::of(Duration::from_millis(1900), Duration::from_secs(1), 2, 1);
        assert!(busy.saturated(), "95 % of two CPUs");
        let idle = ClientCpu::of(Duration::ZERO, Duration::ZERO, 0, 0);
        assert_eq!((idle.us_per_request, idle.utilization), (0.0, 0.0));
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_share_busy_is_over_the_window_not_the_wait_after_it() {
        // 300 ms of spinning fill a 300 ms window; the 1.2 s of waiting for a late answer after
        // it must not spread that work over 1.5 s.
        let load = async {
            tokio::task::spawn_blocking(|| {
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(1200)).await;
            7u64
        };
        let window = Some(Duration::from_millis(300));
        let (n, cpu) = around(Duration::ZERO, window, load, |n| *n).await;
        let cpu = cpu.expect("getrusage works on unix");
        assert_eq!(n, 7);
        let one_cpu_busy = cpu.utilization * cpu.cpus as f64;
        assert!(one_cpu_busy > 0.6, "{cpu:?}");
    }

    #[cfg(unix)]
    #[test]
    fn measures_this_process_spinning() {
        let mark = Mark::now().expect("getrusage works on unix");
        let start = process_time().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spins = 0u64;
        while process_time().unwrap() < start + Duration::from_millis(20) {
            assert!(
                Instant::now() < deadline,
                "no CPU time counted while spinning"
            );
            spins = std::hint::black_box(spins + 1);
        }
        let c = mark.to(&Mark::now().unwrap(), 10);
        assert!(c.cpu_s >= 0.02, "{c:?}");
        assert!(c.us_per_request >= 2_000.0, "{c:?}");
        assert!(c.utilization > 0.0 && c.cpus >= 1, "{c:?}");
    }
}
