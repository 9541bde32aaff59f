//! Per (route, backend) recording: lock-free on the request path, folded
//! into one-second slots off it.
//!
//! Each [`BackendStats`] has a few shards (a power of two ≥ the core count);
//! a thread always writes to the same shard, so two threads rarely touch the
//! same cache line. Recording a request is a few relaxed `fetch_add`s on the
//! shard (outcome, latency bucket). Once a second, and whenever a window or
//! `/metrics` is read, the shards are swapped to zero into the slot of the
//! current second, and the same deltas are added to the Prometheus handles
//! resolved when the route was built; a window is the merge of its slots.
//!
//! Feeding Prometheus from the harvest rather than per request keeps the
//! exporter's shared atomics (and its per-sample clock read) off the request
//! path: with two threads recording into one backend, per-request updates of
//! the exporter's handles cost ~300 ns a record; the shards cost ~15 ns.
//! The price: histogram samples carry the shard bucket's resolution (≤ 1.6 %),
//! so a latency within 1.6 % of a Prometheus bucket bound may land in the
//! neighbouring bucket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::counters::PromCounters;
use weir_control::classify::GRPC_CODES;
use weir_control::sample::{bucket, CodeClass, Counts, Latency, Second, UpstreamErrorKind, Window};

/// Prometheus series of one (route, backend), rendered by
/// [`super::Telemetry::render`].
#[derive(Debug)]
pub(crate) struct Handles {
    /// `{route="…",backend="…"` ([`super::histogram::series`]).
    pub(crate) labels: Box<str>,
    /// Requests by [`CodeClass`] index.
    pub(crate) requests: PromCounters<{ CodeClass::ALL.len() }>,
    /// Upstream errors by [`UpstreamErrorKind`] index.
    pub(crate) errors: PromCounters<{ UpstreamErrorKind::ALL.len() }>,
    pub(crate) duration: super::histogram::PromHistogram,
    /// `weir_grpc_responses_total`, registered per code when first seen
    /// (an HTTP-only route exports none of them).
    pub(crate) grpc: Option<super::GrpcHandles>,
}

/// A finished request's outcome, as the route's classifier decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The status class (or `Error`: no usable answer).
    pub class: CodeClass,
    /// Why the upstream gave no usable answer.
    pub error: Option<UpstreamErrorKind>,
    /// A failure by the route's classifier.
    pub failed: bool,
    /// The call's `grpc-status` (0..=16), for a gRPC call.
    pub grpc: Option<u8>,
}

#[repr(align(128))] // keep shards on separate cache lines
#[derive(Debug)]
struct Shard {
    class: [AtomicU64; 6],
    error: [AtomicU64; UpstreamErrorKind::ALL.len()],
    failed: AtomicU64,
    /// gRPC calls by `grpc-status`.
    grpc: [AtomicU64; GRPC_CODES.len()],
    recorded: AtomicU64,
    /// Latency buckets, allocated at the first request this shard records
    /// (10 KiB: a route, backend or kind of traffic that sees no requests,
    /// or a thread that serves none of them, costs none).
    buckets: OnceLock<Box<[AtomicU64]>>,
    /// Requests sent and not yet answered, by the second they were sent
    /// (`sec % PENDING_SECS`); a request may end on another thread's shard,
    /// so one shard's count can go below zero: only the sum means anything.
    /// Allocated at the first request too.
    pending: OnceLock<Box<[AtomicI64]>>,
}

/// Seconds of sending time [`BackendStats::begin`] tells apart (older
/// requests count in the oldest).
const PENDING_SECS: u64 = 128;

impl Shard {
    fn new() -> Self {
        Shard {
            class: Default::default(),
            error: Default::default(),
            failed: AtomicU64::new(0),
            grpc: Default::default(),
            recorded: AtomicU64::new(0),
            buckets: OnceLock::new(),
            pending: OnceLock::new(),
        }
    }

    fn buckets(&self) -> &[AtomicU64] {
        self.buckets.get_or_init(|| (0..bucket::COUNT).map(|_| AtomicU64::new(0)).collect())
    }

    fn pending(&self) -> &[AtomicI64] {
        self.pending.get_or_init(|| (0..PENDING_SECS).map(|_| AtomicI64::new(0)).collect())
    }
}

/// A request sent to a backend and not yet answered: counted by
/// [`BackendStats::unanswered`] until it is dropped (when the response
/// headers, or the failure, came back).
#[derive(Debug)]
pub(crate) struct Pending<'a> {
    stats: &'a BackendStats,
    slot: usize,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.stats.shard().pending()[self.slot].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One second of data, latency kept sparse.
#[derive(Debug, Default)]
struct Slot {
    /// Order of creation, across every [`BackendStats`] of the process (see
    /// [`BackendStats::cut`]).
    seq: u64,
    sec: u64,
    counts: Counts,
    buckets: Vec<(u16, u32)>,
}

/// The next [`Slot::seq`].
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// The slots, and whether the newest is closed to more data (a cut).
#[derive(Debug, Default)]
struct Ring {
    slots: VecDeque<Slot>,
    closed: bool,
}

/// Measurements of one backend of one route.
#[derive(Debug)]
pub struct BackendStats {
    shards: Box<[Shard]>,
    ring: Mutex<Ring>,
    handles: Option<Handles>,
}

thread_local! {
    static THREAD_SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 16).next_power_of_two()
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats::new(None)
    }
}

impl BackendStats {
    /// The Prometheus handles, if any.
    pub(crate) fn handles(&self) -> Option<&Handles> {
        self.handles.as_ref()
    }

    /// Stats with the given Prometheus handles (`None`: windows only).
    pub(crate) fn new(handles: Option<Handles>) -> Self {
        BackendStats {
            shards: (0..shard_count()).map(|_| Shard::new()).collect(),
            ring: Mutex::new(Ring::default()),
            handles,
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[THREAD_SHARD.with(|s| *s) & (self.shards.len() - 1)]
    }

    /// A request is sent: it counts as unanswered until the returned
    /// [`Pending`] is dropped. Lock-free (one add on this thread's shard,
    /// one subtract at the end; no shared reference count).
    pub(crate) fn begin(&self, now_sec: u64) -> Pending<'_> {
        let slot = (now_sec % PENDING_SECS) as usize;
        self.shard().pending()[slot].fetch_add(1, Ordering::Relaxed);
        Pending { stats: self, slot }
    }

    /// Requests sent surely more than `older_than_secs` before `now_sec`
    /// (both in whole seconds of the clock given to [`BackendStats::begin`],
    /// so in a second at least `older_than_secs + 1` back) and still
    /// unanswered: a hung backend answers nothing, so its completed requests
    /// alone never show it.
    pub fn unanswered(&self, now_sec: u64, older_than_secs: u64) -> u64 {
        let mut n: i64 = 0;
        for age in older_than_secs + 1..PENDING_SECS {
            let Some(sec) = now_sec.checked_sub(age) else { break };
            let slot = (sec % PENDING_SECS) as usize;
            let at = |s: &Shard| s.pending.get().map_or(0, |p| p[slot].load(Ordering::Relaxed));
            n += self.shards.iter().map(at).sum::<i64>();
        }
        n.max(0) as u64
    }

    /// Records one finished request, failed if it is 5xx or got no answer
    /// (the default classifier's verdict). Lock-free.
    pub fn record(&self, class: CodeClass, error: Option<UpstreamErrorKind>, latency: Duration) {
        let failed = matches!(class, CodeClass::ServerError | CodeClass::Error);
        self.record_outcome(Recorded { class, error, failed, grpc: None }, latency);
    }

    /// Records one finished request with its classified outcome. Lock-free.
    pub fn record_outcome(&self, r: Recorded, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let shard = self.shard();
        shard.class[r.class.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(k) = r.error {
            shard.error[k.index()].fetch_add(1, Ordering::Relaxed);
        }
        if r.failed {
            shard.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(code) = r.grpc {
            let code = if usize::from(code) < GRPC_CODES.len() { code } else { weir_control::classify::grpc::UNKNOWN };
            shard.grpc[usize::from(code)].fetch_add(1, Ordering::Relaxed);
        }
        shard.buckets()[bucket::index(micros)].fetch_add(1, Ordering::Relaxed);
        shard.recorded.fetch_add(1, Ordering::Relaxed);
    }

    fn publish(&self, counts: &Counts, grpc: &[u64; GRPC_CODES.len()], dense: &[u64]) {
        let Some(h) = &self.handles else { return };
        for (i, &n) in counts.by_class.iter().enumerate() {
            if n > 0 {
                h.requests.add(i, n);
            }
        }
        for (i, &n) in counts.by_error.iter().enumerate() {
            if n > 0 {
                h.errors.add(i, n);
            }
        }
        if let Some(g) = &h.grpc {
            for (code, &n) in grpc.iter().enumerate() {
                if n > 0 {
                    g.increment(code, n);
                }
            }
        }
        for (i, &n) in dense.iter().enumerate() {
            if n > 0 {
                h.duration.record_many(bucket::value(i), n);
            }
        }
    }

    /// Folds what the shards hold into the slot of second `now_sec` and
    /// forgets slots older than `keep_secs`.
    pub fn rotate(&self, now_sec: u64, keep_secs: u64) {
        self.fold(now_sec, keep_secs, false);
    }

    /// [`BackendStats::rotate`]; with `close`, the slot folded into is
    /// closed to more data, and the mark of what comes after is returned.
    fn fold(&self, now_sec: u64, keep_secs: u64, close: bool) -> u64 {
        // Drained under the ring's lock: two folds (the ticker's, a
        // window's, a cut's) never cross, so what a cut closes holds every
        // request recorded before it and none after.
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = Counts::default();
        let mut grpc = [0u64; GRPC_CODES.len()];
        let mut dense: Option<Vec<u64>> = None;
        for shard in self.shards.iter() {
            if shard.recorded.swap(0, Ordering::Relaxed) == 0 {
                continue;
            }
            for (c, a) in counts.by_class.iter_mut().zip(&shard.class) {
                *c += a.swap(0, Ordering::Relaxed);
            }
            for (c, a) in counts.by_error.iter_mut().zip(&shard.error) {
                *c += a.swap(0, Ordering::Relaxed);
            }
            counts.failed += shard.failed.swap(0, Ordering::Relaxed);
            for (c, a) in grpc.iter_mut().zip(&shard.grpc) {
                if a.load(Ordering::Relaxed) != 0 {
                    *c += a.swap(0, Ordering::Relaxed);
                }
            }
            let d = dense.get_or_insert_with(|| vec![0; bucket::COUNT]);
            for (slot, b) in d.iter_mut().zip(shard.buckets().iter()) {
                if b.load(Ordering::Relaxed) != 0 {
                    *slot += b.swap(0, Ordering::Relaxed);
                }
            }
        }
        if let Some(d) = &dense {
            self.publish(&counts, &grpc, d);
        }
        if let Some(d) = dense {
            put(&mut ring, now_sec, &counts, d);
        }
        trim(&mut ring, now_sec, keep_secs);
        if close {
            ring.closed = true;
        }
        NEXT_SEQ.load(Ordering::Relaxed)
    }

    /// What the slots of second `sec` hold (a cut splits a second in two
    /// slots: both), for a recording. `None` when nothing was served then.
    pub fn second(&self, sec: u64) -> Option<(Counts, Vec<(u16, u32)>)> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = Counts::default();
        let mut dense: Option<Vec<u64>> = None;
        for slot in ring.slots.iter().filter(|s| s.sec == sec) {
            counts.add(&slot.counts);
            add_sparse(dense.get_or_insert_with(|| vec![0; bucket::COUNT]), &slot.buckets);
        }
        dense.map(|d| (counts, sparse(&d)))
    }

    /// Adds a recorded second (`weir replay`): as if its requests had been
    /// recorded and folded at `sec`.
    pub fn add_second(&self, sec: u64, counts: &Counts, buckets: &[(u16, u32)], keep_secs: u64) {
        let mut dense = vec![0u64; bucket::COUNT];
        add_sparse(&mut dense, buckets);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        put(&mut ring, sec, counts, dense);
        trim(&mut ring, sec, keep_secs);
    }

    /// Folds what the shards hold into the current slot and closes it: the
    /// requests recorded from now on go to newer slots. Returns the mark
    /// that [`BackendStats::window_from`] takes to read only those: a
    /// rollout's transition cuts its backends' data in two, exactly.
    pub fn cut(&self, now_sec: u64, keep_secs: u64) -> u64 {
        self.fold(now_sec, keep_secs, true)
    }

    /// The merged data of the last `span_secs` seconds (the current one
    /// included), after folding in what the shards hold.
    pub fn window(&self, now_sec: u64, span_secs: u64, keep_secs: u64) -> Window {
        self.window_from(now_sec, span_secs, 0, keep_secs)
    }

    /// [`BackendStats::window`], of the slots after the [`BackendStats::cut`]
    /// that returned `mark` only.
    pub fn window_from(&self, now_sec: u64, span_secs: u64, mark: u64, keep_secs: u64) -> Window {
        self.merged(now_sec, span_secs, keep_secs, |s| s.sec + span_secs > now_sec && s.seq >= mark)
    }

    /// The merged data of the last second that is over (`now_sec - 1`):
    /// whole, unlike the current one.
    pub fn last_second(&self, now_sec: u64, keep_secs: u64) -> Window {
        self.merged(now_sec, 1, keep_secs, |s| s.sec + 1 == now_sec)
    }

    fn merged(&self, now_sec: u64, span_secs: u64, keep_secs: u64, keep: impl Fn(&Slot) -> bool) -> Window {
        self.rotate(now_sec, keep_secs);
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = Counts::default();
        let mut dense = vec![0u64; bucket::COUNT];
        let mut seconds = Vec::new();
        for slot in ring.slots.iter().filter(|s| keep(s)) {
            counts.add(&slot.counts);
            add_sparse(&mut dense, &slot.buckets);
            if slot.counts.total() > 0 {
                seconds.push(Second { sec: slot.sec, total: slot.counts.total(), failures: slot.counts.failures() });
            }
        }
        Window { span: Duration::from_secs(span_secs), counts, latency: Latency::from_buckets(&dense), seconds }
    }
}

/// Adds one fold's data (latency `dense`) to the slot of second `sec`: the
/// newest one if it is that second's and not closed by a cut, else a new one.
fn put(ring: &mut Ring, sec: u64, counts: &Counts, mut dense: Vec<u64>) {
    let closed = std::mem::replace(&mut ring.closed, false);
    match ring.slots.back_mut() {
        Some(last) if last.sec == sec && !closed => {
            add_sparse(&mut dense, &last.buckets);
            last.counts.add(counts);
            last.buckets = sparse(&dense);
        }
        _ => {
            let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
            ring.slots.push_back(Slot { seq, sec, counts: *counts, buckets: sparse(&dense) });
        }
    }
}

/// Forgets the slots older than `keep_secs` at `now_sec`.
fn trim(ring: &mut Ring, now_sec: u64, keep_secs: u64) {
    while ring.slots.front().is_some_and(|s| s.sec + keep_secs <= now_sec) {
        ring.slots.pop_front();
    }
}

fn sparse(dense: &[u64]) -> Vec<(u16, u32)> {
    dense
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| (i as u16, n.min(u64::from(u32::MAX)) as u32))
        .collect()
}

fn add_sparse(dense: &mut [u64], sparse: &[(u16, u32)]) {
    for &(i, n) in sparse {
        if let Some(d) = dense.get_mut(usize::from(i)) {
            *d += u64::from(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_slots_and_forget_old_ones() {
        let s = BackendStats::new(None);
        for _ in 0..90 {
            s.record(CodeClass::Success, None, Duration::from_millis(2));
        }
        s.rotate(10, 300);
        for _ in 0..10 {
            s.record(CodeClass::Error, Some(UpstreamErrorKind::Connect), Duration::from_millis(50));
        }
        let w = s.window(12, 5, 300);
        assert_eq!(w.counts.total(), 100);
        assert_eq!(w.counts.by_error[UpstreamErrorKind::Connect.index()], 10);
        assert_eq!(w.counts.error_rate(), Some(0.1));
        assert_eq!(w.latency.count(), 100);
        let per_sec: Vec<(u64, u64, u64)> = w.seconds.iter().map(|s| (s.sec, s.total, s.failures)).collect();
        assert_eq!(per_sec, [(10, 90, 0), (12, 10, 10)]);
        // Only the last two seconds: the 90 successes at second 10 are out.
        let w = s.window(12, 2, 300);
        assert_eq!(w.counts.total(), 10);
        let p50 = w.latency.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_millis(49) && p50 <= Duration::from_millis(51), "{p50:?}");
        // A cut: what comes after it is read apart from what came before,
        // even within the same second.
        let mark = s.cut(12, 300);
        s.record(CodeClass::Success, None, Duration::from_millis(2));
        let after = s.window_from(12, 300, mark, 300);
        assert_eq!((after.counts.total(), after.counts.failures()), (1, 0));
        assert_eq!(s.window(12, 300, 300).counts.total(), 101);
        // Past keep_secs, slots are dropped.
        s.rotate(400, 300);
        assert_eq!(s.window(400, 300, 300).counts.total(), 0);
    }

    #[test]
    fn unanswered_requests_are_counted_by_age() {
        let s = BackendStats::new(None);
        let old: Vec<Pending> = (0..3).map(|_| s.begin(100)).collect();
        let recent = s.begin(104);
        assert_eq!(s.unanswered(105, 4), 3);
        assert_eq!(s.unanswered(105, 0), 4);
        assert_eq!(s.unanswered(105, 5), 0, "sent at 100: not surely more than 5 s ago");
        // Answered on another thread: still counted off.
        std::thread::scope(|t| {
            t.spawn(move || drop(old));
        });
        assert_eq!(s.unanswered(105, 0), 1);
        drop(recent);
        assert_eq!(s.unanswered(105, 0), 0);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let s = std::sync::Arc::new(BackendStats::new(None));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        s.record(CodeClass::Success, None, Duration::from_micros(i % 5000));
                    }
                })
            })
            .collect();
        // Rotate while writers run: every record lands in some slot.
        for sec in 0..20 {
            s.rotate(sec, 300);
        }
        for t in threads {
            t.join().unwrap();
        }
        let w = s.window(20, 300, 300);
        assert_eq!(w.counts.total(), 200_000);
        assert_eq!(w.latency.count(), 200_000);
    }
}
