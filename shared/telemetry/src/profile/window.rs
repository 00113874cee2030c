//! [`ProfileWindow`]: rolls a [`ModelProfile`] every `period` and keeps the last
//! `max_closed` closed windows.
//!
//! Windows are aligned to multiples of `period` since the Unix epoch, so the windows of all
//! workers line up and the monitor can merge them by start time. Time is passed in (Unix ms)
//! rather than read, so callers and tests control it. Memory: at most `max_closed + 1`
//! profiles (see the bounds in [`crate::profile`]).

use std::collections::VecDeque;
use std::time::Duration;

use super::model::ModelProfile;

/// A profile of the window `[start_unix_ms, end_unix_ms)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// Window start, Unix ms (inclusive).
    pub start_unix_ms: u64,
    /// Window end, Unix ms (exclusive).
    pub end_unix_ms: u64,
    /// What was observed in it.
    pub profile: ModelProfile,
}

/// The current window's profile plus a bounded history of closed ones.
#[derive(Debug, Clone)]
pub struct ProfileWindow {
    period_ms: u64,
    max_closed: usize,
    start_unix_ms: u64,
    current: ModelProfile,
    closed: VecDeque<ClosedWindow>,
}

impl ProfileWindow {
    /// Starts the window containing `now_unix_ms` with `empty` (an empty profile: its shape
    /// is reused for every later window). `period` is clamped to at least 1 ms.
    pub fn new(empty: ModelProfile, period: Duration, max_closed: usize, now_unix_ms: u64) -> Self {
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            period_ms,
            max_closed,
            start_unix_ms: now_unix_ms - now_unix_ms % period_ms,
            current: empty,
            closed: VecDeque::with_capacity(max_closed),
        }
    }

    /// The window length.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// Start of the current window, Unix ms.
    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms
    }

    /// The profile being filled (observe into it).
    pub fn current_mut(&mut self) -> &mut ModelProfile {
        &mut self.current
    }

    /// The profile being filled.
    pub fn current(&self) -> &ModelProfile {
        &self.current
    }

    /// Closes the current window if `now_unix_ms` is past its end and starts the window
    /// containing `now_unix_ms` (windows in between, when nothing rolled them, had no
    /// traffic and are skipped). Returns the window just closed. The oldest closed window
    /// is dropped beyond `max_closed`.
    pub fn roll(&mut self, now_unix_ms: u64) -> Option<&ClosedWindow> {
        let end = self.start_unix_ms.saturating_add(self.period_ms);
        if now_unix_ms < end {
            return None;
        }
        let next = self.current.empty_like();
        let profile = std::mem::replace(&mut self.current, next);
        self.start_unix_ms = now_unix_ms - now_unix_ms % self.period_ms;
        if self.max_closed == 0 {
            return None;
        }
        if self.closed.len() == self.max_closed {
            self.closed.pop_front();
        }
        self.closed.push_back(ClosedWindow {
            start_unix_ms: end - self.period_ms,
            end_unix_ms: end,
            profile,
        });
        self.closed.back()
    }

    /// Closed windows, oldest first (at most `max_closed`).
    pub fn closed(&self) -> impl ExactSizeIterator<Item = &ClosedWindow> {
        self.closed.iter()
    }

    /// Removes and returns the closed windows, oldest first (e.g. once pushed).
    pub fn drain_closed(&mut self) -> Vec<ClosedWindow> {
        self.closed.drain(..).collect()
    }
}
