//! Recording outcomes: one HDR histogram of latency (µs, 3 significant digits) per gRPC status,
//! a count of requests that were due but not sent, and a per-second series (counts by status
//! and an OK-latency histogram per second, by completion time), and the first error message
//! of each status (so a report says why requests failed).
//!
//! A [`Recorder`] is plain data owned by one task; tasks record locally and [`Recorder::merge`]
//! at the end, so recording takes no lock. Only measured requests are recorded (the load loops
//! drop warm-up samples before they get here).
//!
//! [`Live`] is the exception: a small mutex-protected tally shared by every task of a run and
//! read once a second by the progress display (one uncontended lock per answer).
//!
//! Histograms travel in reports as [`encode_histogram`] strings: HdrHistogram's V2 deflate
//! format in base64, as in HdrHistogram interval logs, so they can be merged losslessly later.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use tokio::time::Instant;
use tonic::Code;

/// The name of the OK status in maps keyed by status name.
pub const OK: &str = "OK";

pub use kiln_proto::edge::code_name;
/// Longest example message kept per status, in characters.
pub const MESSAGE_CHARS: usize = 200;

/// A new auto-resizing latency histogram: µs, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// Records `value` in an auto-resizing histogram (`saturating_record` would clamp to the
/// current size instead of growing).
fn add(hist: &mut Histogram<u64>, value: u64) {
    if hist.record(value).is_err() {
        hist.saturating_record(value);
    }
}

/// `hist` in HdrHistogram's compressed V2 format, base64 (the interval-log encoding).
pub fn encode_histogram(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .expect("serializing into memory succeeds");
    BASE64.encode(bytes)
}

/// The histogram of an [`encode_histogram`] string (V2 or V2 deflate, base64), auto-resizing
/// so that it can absorb others.
pub fn decode_histogram(encoded: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = BASE64
        .decode(encoded.trim())
        .context("histogram is not base64")?;
    let mut hist: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("not an HdrHistogram: {e:?}"))?;
    hist.auto(true);
    Ok(hist)
}

/// Whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One measured request that was sent and answered (or timed out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the request should have been sent: the actual send time in a closed loop, the
    /// scheduled time in an open loop. Latency counts from here.
    pub start: Instant,
    /// When the answer (or the client-side deadline) came.
    pub done: Instant,
    /// The gRPC status of the answer.
    pub code: Code,
}

impl Sample {
    /// `done - start`.
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.start)
    }
}

/// Counts and OK latency of one second of the run (by completion time).
#[derive(Debug, Clone)]
pub struct Second {
    /// Answers by status name.
    pub counts: BTreeMap<&'static str, u64>,
    /// Requests due in this second (by intended time) but not sent.
    pub not_sent: u64,
    /// Latency of the OK answers, µs.
    pub ok_latency: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Self {
            counts: BTreeMap::new(),
            not_sent: 0,
            ok_latency: latency_histogram(),
        }
    }
}

/// The outcomes of the measured part of a run.
#[derive(Debug, Clone)]
pub struct Recorder {
    origin: Instant,
    origin_wall: SystemTime,
    by_status: BTreeMap<&'static str, Histogram<u64>>,
    not_sent: u64,
    send_lag: Histogram<u64>,
    messages: BTreeMap<&'static str, String>,
    seconds: Vec<Second>,
}

impl Recorder {
    /// An empty recorder whose second 0 starts at `origin` (the end of the warm-up).
    pub fn new(origin: Instant) -> Self {
        let now = Instant::now();
        let wall = SystemTime::now();
        let origin_wall = if origin <= now {
            wall.checked_sub(now - origin).unwrap_or(wall)
        } else {
            wall + (origin - now)
        };
        Self {
            origin,
            origin_wall,
            by_status: BTreeMap::new(),
            not_sent: 0,
            send_lag: latency_histogram(),
            messages: BTreeMap::new(),
            seconds: Vec::new(),
        }
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let index = at.saturating_duration_since(self.origin).as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        &mut self.seconds[index]
    }

    /// Records an answered request.
    pub fn record(&mut self, sample: Sample) {
        let micros = micros(sample.latency()).max(1);
        let name = code_name(sample.code);
        add(
            self.by_status.entry(name).or_insert_with(latency_histogram),
            micros,
        );
        let second = self.second(sample.done);
        *second.counts.entry(name).or_default() += 1;
        if sample.code == Code::Ok {
            add(&mut second.ok_latency, micros);
        }
    }

    /// Records a request that was due at `intended` but not sent (client saturated).
    pub fn record_not_sent(&mut self, intended: Instant) {
        self.not_sent += 1;
        self.second(intended).not_sent += 1;
    }

    /// Keeps `message` as the example message of `code` unless one is kept already.
    pub fn note_message(&mut self, code: Code, message: &str) {
        self.messages
            .entry(code_name(code))
            .or_insert_with(|| message.chars().take(MESSAGE_CHARS).collect());
    }

    /// Records how late (µs) an open-loop request was sent after its due time.
    pub fn record_send_lag(&mut self, lag: Duration) {
        add(&mut self.send_lag, micros(lag));
    }

    /// Adds another recorder's outcomes (same origin) to this one.
    pub fn merge(&mut self, other: Recorder) {
        for (name, hist) in other.by_status {
            match self.by_status.get_mut(name) {
                Some(mine) => mine.add(&hist).expect("auto-resizing histograms merge"),
                None => {
                    self.by_status.insert(name, hist);
                }
            }
        }
        self.not_sent += other.not_sent;
        for (name, message) in other.messages {
            self.messages.entry(name).or_insert(message);
        }
        self.send_lag
            .add(&other.send_lag)
            .expect("auto-resizing histograms merge");
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Second::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(other.seconds) {
            for (name, n) in theirs.counts {
                *mine.counts.entry(name).or_default() += n;
            }
            mine.not_sent += theirs.not_sent;
            mine.ok_latency
                .add(&theirs.ok_latency)
                .expect("auto-resizing histograms merge");
        }
    }

    /// Latency histograms (µs) by status name.
    pub fn by_status(&self) -> &BTreeMap<&'static str, Histogram<u64>> {
        &self.by_status
    }

    /// The first error message seen per status name.
    pub fn messages(&self) -> &BTreeMap<&'static str, String> {
        &self.messages
    }

    /// The OK latency histogram, if any request succeeded.
    pub fn ok(&self) -> Option<&Histogram<u64>> {
        self.by_status.get(OK)
    }

    /// Answered requests (any status).
    pub fn answered(&self) -> u64 {
        self.by_status.values().map(Histogram::len).sum()
    }

    /// Requests due but not sent.
    pub fn not_sent(&self) -> u64 {
        self.not_sent
    }

    /// Open loop: how late requests were sent after their due time (µs); empty otherwise.
    pub fn send_lag(&self) -> &Histogram<u64> {
        &self.send_lag
    }

    /// The per-second series, second 0 first.
    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }

    /// The wall-clock time of second 0 (the end of the warm-up).
    pub fn origin_wall(&self) -> SystemTime {
        self.origin_wall
    }
}

/// A live tally of a run in progress: answers by outcome, and the OK latency since the last
/// [`Live::take`]. Shared (`Arc`) between the tasks that complete requests and one reader.
#[derive(Debug, Default)]
pub struct Live {
    state: Mutex<LiveState>,
}

/// What [`Live::take`] returns.
#[derive(Debug, Clone)]
pub struct LiveState {
    /// OK answers so far.
    pub ok: u64,
    /// Non-OK answers so far.
    pub errors: u64,
    /// Latency (µs) of the OK answers since the previous `take`.
    pub recent: Histogram<u64>,
}

impl Default for LiveState {
    fn default() -> Self {
        Self {
            ok: 0,
            errors: 0,
            recent: latency_histogram(),
        }
    }
}

impl Live {
    /// Counts one answer; `latency` is recorded when `ok`.
    pub fn record(&self, ok: bool, latency: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            state.ok += 1;
            add(&mut state.recent, micros(latency).max(1));
        } else {
            state.errors += 1;
        }
    }

    /// The totals so far and the recent OK latency, which is reset.
    pub fn take(&self) -> LiveState {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let recent = std::mem::replace(&mut state.recent, latency_histogram());
        LiveState {
            ok: state.ok,
            errors: state.errors,
            recent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(origin: Instant, start_ms: u64, done_ms: u64, code: Code) -> Sample {
        Sample {
            start: origin + Duration::from_millis(start_ms),
            done: origin + Duration::from_millis(done_ms),
            code,
        }
    }

    #[test]
    fn records_by_status_and_second_and_merges() {
        let origin = Instant::now();
        let mut a = Recorder::new(origin);
        a.record(sample(origin, 0, 5, Code::Ok));
        a.record(sample(origin, 990, 1_010, Code::Ok));
        a.record(sample(origin, 100, 101, Code::ResourceExhausted));
        let mut b = Recorder::new(origin);
        b.record(sample(origin, 2_000, 2_003, Code::Ok));
        b.record_not_sent(origin + Duration::from_millis(2_500));
        a.merge(b);

        assert_eq!(a.answered(), 4);
        assert_eq!(a.not_sent(), 1);
        let ok = a.ok().unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok.max(), ok.highest_equivalent(20_000));
        assert_eq!(a.by_status()["RESOURCE_EXHAUSTED"].len(), 1);
        let seconds = a.seconds();
        assert_eq!(seconds.len(), 3);
        assert_eq!(seconds[0].counts[OK], 1);
        assert_eq!(seconds[0].counts["RESOURCE_EXHAUSTED"], 1);
        assert_eq!(seconds[1].counts[OK], 1, "counted at completion");
        assert_eq!(seconds[2].not_sent, 1);
        assert_eq!(seconds[2].ok_latency.len(), 1);
    }

    #[test]
    fn histograms_round_trip_through_their_encoding() {
        let mut hist = latency_histogram();
        for v in [1, 10, 100, 1_000, 123_456, 10_000_000] {
            add(&mut hist, v);
        }
        let encoded = encode_histogram(&hist);
        assert!(
            encoded.starts_with("HIST"),
            "V2 cookie in base64: {encoded}"
        );
        let mut back = decode_histogram(&encoded).unwrap();
        assert_eq!(back, hist);
        add(&mut back, u64::MAX / 4);
        assert_eq!(back.len(), 7, "decoded histograms auto-resize");
        assert!(decode_histogram("not a histogram").is_err());
        assert!(decode_histogram("AAAA").is_err());
    }

    #[test]
    fn live_tally_resets_only_the_recent_latency() {
        let live = Live::default();
        live.record(true, Duration::from_millis(2));
        live.record(false, Duration::from_millis(9));
        let first = live.take();
        assert_eq!((first.ok, first.errors, first.recent.len()), (1, 1, 1));
        live.record(true, Duration::from_millis(4));
        let second = live.take();
        assert_eq!((second.ok, second.errors), (2, 1));
        assert_eq!(second.recent.len(), 1);
        assert_eq!(second.recent.max(), second.recent.highest_equivalent(4_000));
    }

    #[test]
    fn origin_wall_clock_follows_the_origin() {
        let now = Instant::now();
        let past = Recorder::new(now - Duration::from_secs(5));
        let future = Recorder::new(now + Duration::from_secs(5));
        let gap = future
            .origin_wall()
            .duration_since(past.origin_wall())
            .unwrap();
        assert!((gap.as_secs_f64() - 10.0).abs() < 0.5, "{gap:?}");
    }

    #[test]
    fn names_every_code() {
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::from_i32(3)), "INVALID_ARGUMENT");
    }
}
