//! Batch forming for the dynamic batcher, as pure data structures and functions (no threads, no
//! clocks of their own), so the policy is unit-tested apart from the executor that drives it.
//!
//! Guarantees:
//! - [`Queues`] holds two priority levels; within a level requests leave in arrival order, and
//!   every high-priority request leaves before any normal one;
//! - [`take_first`] and [`fill`] never put a dead request (deadline passed, caller gone) in a
//!   batch: they move it to the caller's `dead` list, to be answered without compute;
//! - [`fill`] only adds a request whose non-batch signature equals the batch's first request and
//!   whose rows keep the batch within `max_batch_size`; it never skips past a request that cannot
//!   join (arrival order is kept), never merges when `max_batch_size` is 0, stops as soon as a
//!   preferred size or the maximum is reached, and otherwise says how long to wait for more
//!   (until the oldest request has waited `max_queue_delay`; a delay of 0 never waits);
//! - [`prune`] removes members that died while the batch waited, just before compute;
//! - [`concat`] and [`split`] are inverses along dim 0: each request gets exactly its own rows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kiln_model::{HostData, HostTensor, Manifest};

use crate::executor::Tensors;

/// Priority of a request. Follows Triton's numbering of the `priority` request parameter, where
/// lower numbers are served first: 1 is [`Priority::High`]; 0 (the default), 2 and above are
/// [`Priority::Normal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Served before every normal request.
    High,
    /// The default.
    #[default]
    Normal,
}

impl Priority {
    /// The level of a `priority` parameter value (Triton's convention: 1 is the highest).
    pub fn from_level(level: u64) -> Self {
        if level == 1 {
            Priority::High
        } else {
            Priority::Normal
        }
    }
}

/// What the batch former needs to know about a queued request.
pub trait Pending {
    /// Rows the request contributes to a batch (its first dimension).
    fn rows(&self) -> usize;
    /// Whether the request can share a batch with `other` (same inputs, datatypes and non-batch
    /// dims).
    fn merges_with(&self, other: &Self) -> bool;
    /// Whether the request still wants an answer at `now` (deadline not passed, caller there).
    fn is_live(&self, now: Instant) -> bool;
    /// When the request was queued.
    fn enqueued(&self) -> Instant;
}

/// The two priority levels of one model version's queue.
#[derive(Debug)]
pub struct Queues<T> {
    high: VecDeque<T>,
    normal: VecDeque<T>,
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Self {
            high: VecDeque::new(),
            normal: VecDeque::new(),
        }
    }
}

impl<T> Queues<T> {
    /// Queues `item` at the back of its level.
    pub fn push(&mut self, item: T, priority: Priority) {
        match priority {
            Priority::High => self.high.push_back(item),
            Priority::Normal => self.normal.push_back(item),
        }
    }

    /// The next request to serve.
    pub fn peek(&self) -> Option<&T> {
        self.high.front().or_else(|| self.normal.front())
    }

    /// Removes the next request to serve.
    pub fn pop(&mut self) -> Option<T> {
        self.high.pop_front().or_else(|| self.normal.pop_front())
    }

    /// Requests queued, both levels.
    pub fn len(&self) -> usize {
        self.high.len() + self.normal.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The batching knobs of one model version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Largest batch in rows; 0 = the model has no batch dimension, requests never merge.
    pub max_batch_size: usize,
    /// Sizes at which a batch is sent at once.
    pub preferred: Vec<usize>,
    /// Longest the oldest request of a batch waits for others.
    pub max_queue_delay: Duration,
}

impl Policy {
    /// The policy a manifest declares.
    pub fn from_manifest(m: &Manifest) -> Self {
        Self {
            max_batch_size: m.max_batch_size as usize,
            preferred: m
                .batching
                .preferred_batch_size
                .iter()
                .map(|b| *b as usize)
                .collect(),
            max_queue_delay: Duration::from_micros(m.batching.max_queue_delay_microseconds),
        }
    }

    /// A policy that never merges requests (each runs alone, as it arrived).
    pub fn unbatched() -> Self {
        Self {
            max_batch_size: 0,
            preferred: Vec::new(),
            max_queue_delay: Duration::ZERO,
        }
    }
}

/// What the batch former should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run the batch now.
    Run,
    /// Nothing more can join now; wait for arrivals until this instant, then call [`fill`] again.
    WaitUntil(Instant),
}

/// Removes the next live request; dead ones met on the way go to `dead`.
pub fn take_first<T: Pending>(queue: &mut Queues<T>, dead: &mut Vec<T>, now: Instant) -> Option<T> {
    while let Some(item) = queue.pop() {
        if item.is_live(now) {
            return Some(item);
        }
        dead.push(item);
    }
    None
}

/// Moves queued requests into `batch` (which holds at least its first request) as the policy
/// allows; dead ones met on the way go to `dead`. Says whether to run now or wait for more.
pub fn fill<T: Pending>(
    queue: &mut Queues<T>,
    batch: &mut Vec<T>,
    dead: &mut Vec<T>,
    policy: &Policy,
    now: Instant,
) -> Step {
    let Some(first) = batch.first() else {
        return Step::Run;
    };
    if policy.max_batch_size == 0 {
        return Step::Run;
    }
    let oldest = first.enqueued();
    let mut rows: usize = batch.iter().map(Pending::rows).sum();
    loop {
        if rows >= policy.max_batch_size || policy.preferred.contains(&rows) {
            return Step::Run;
        }
        let Some(next) = queue.peek() else { break };
        if !next.is_live(now) {
            dead.extend(queue.pop());
            continue;
        }
        if !next.merges_with(&batch[0]) || rows + next.rows() > policy.max_batch_size {
            // The next request cannot join; waiting would only delay both.
            return Step::Run;
        }
        rows += next.rows();
        batch.extend(queue.pop());
    }
    let until = oldest + policy.max_queue_delay;
    if now >= until {
        Step::Run
    } else {
        Step::WaitUntil(until)
    }
}

/// Moves the members of a formed batch that died while it waited (deadline passed, caller
/// gone) to `dead`, just before compute.
pub fn prune<T: Pending>(batch: &mut Vec<T>, dead: &mut Vec<T>, now: Instant) {
    let (live, gone): (Vec<T>, Vec<T>) = std::mem::take(batch)
        .into_iter()
        .partition(|item| item.is_live(now));
    *batch = live;
    dead.extend(gone);
}

/// The rows of a request: the first dim of its first input (1 without a batch dimension).
pub fn rows_of(inputs: &Tensors, batching: bool) -> usize {
    if !batching {
        return 1;
    }
    inputs
        .first()
        .and_then(|(_, t)| t.shape.first().copied())
        .unwrap_or(1)
}

/// Whether two requests' inputs can be concatenated along dim 0.
pub fn same_signature(a: &Tensors, b: &Tensors) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ta), (nb, tb))| {
            na == nb
                && ta.datatype() == tb.datatype()
                && !ta.shape.is_empty()
                && ta.shape.len() == tb.shape.len()
                && ta.shape[1..] == tb.shape[1..]
        })
}

fn append(into: &mut HostData, from: &HostData) -> Result<(), String> {
    match (into, from) {
        (HostData::F32(a), HostData::F32(b)) => a.extend_from_slice(b),
        (HostData::F64(a), HostData::F64(b)) => a.extend_from_slice(b),
        (HostData::I32(a), HostData::I32(b)) => a.extend_from_slice(b),
        (HostData::I64(a), HostData::I64(b)) => a.extend_from_slice(b),
        (HostData::U8(a), HostData::U8(b)) => a.extend_from_slice(b),
        (HostData::Bool(a), HostData::Bool(b)) => a.extend_from_slice(b),
        (HostData::Bytes(a), HostData::Bytes(b)) => a.extend_from_slice(b),
        _ => return Err("datatypes differ".into()),
    }
    Ok(())
}

/// Concatenates requests' inputs along dim 0, input by input (they must share a signature);
/// the requests are left as they are.
pub fn concat(requests: &[&Tensors]) -> Result<Tensors, String> {
    let Some((first, rest)) = requests.split_first() else {
        return Ok(Vec::new());
    };
    let mut merged: Tensors = (*first).clone();
    for request in rest {
        if request.len() != merged.len() {
            return Err("requests have different inputs".into());
        }
        for ((name, into), (other, from)) in merged.iter_mut().zip(request.iter()) {
            if name != other || into.shape.is_empty() || into.shape.get(1..) != from.shape.get(1..)
            {
                return Err(format!("input {name:?} differs between requests"));
            }
            into.shape[0] += from.shape[0];
            append(&mut into.data, &from.data)?;
        }
    }
    Ok(merged)
}

fn take_rows(data: &mut HostData, n: usize) -> HostData {
    fn front<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
        let rest = v.split_off(n.min(v.len()));
        std::mem::replace(v, rest)
    }
    match data {
        HostData::F32(v) => HostData::F32(front(v, n)),
        HostData::F64(v) => HostData::F64(front(v, n)),
        HostData::I32(v) => HostData::I32(front(v, n)),
        HostData::I64(v) => HostData::I64(front(v, n)),
        HostData::U8(v) => HostData::U8(front(v, n)),
        HostData::Bool(v) => HostData::Bool(front(v, n)),
        HostData::Bytes(v) => HostData::Bytes(front(v, n)),
    }
}

/// Splits a batch's outputs back into one set per request, `rows[i]` rows for request `i`:
/// outputs whose first dim is the batch's total rows are cut along dim 0; any other output is
/// given whole to every request.
pub fn split(outputs: Tensors, rows: &[usize]) -> Vec<Tensors> {
    let total: usize = rows.iter().sum();
    let mut per_request: Vec<Tensors> = rows.iter().map(|_| Vec::new()).collect();
    for (name, mut tensor) in outputs {
        if tensor.shape.first() != Some(&total) {
            for out in &mut per_request {
                out.push((name.clone(), tensor.clone()));
            }
            continue;
        }
        let row_len: usize = tensor.shape[1..].iter().product();
        for (out, &n) in per_request.iter_mut().zip(rows) {
            let mut shape = tensor.shape.clone();
            shape[0] = n;
            let data = take_rows(&mut tensor.data, n * row_len);
            out.push((name.clone(), HostTensor { shape, data }));
        }
    }
    per_request
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
