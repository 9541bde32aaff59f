//! What the proxy measures and the gate engine reads: per-backend request
//! outcomes and latency, merged over a time window.
//!
//! The proxy records into lock-free sharded buckets laid out by [`bucket`];
//! once per second it folds them into one-second slots, and a [`Window`] is
//! the merge of the slots that fall in the requested span. Latency is in
//! microseconds, held in an HdrHistogram for quantiles and rank tests.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Outcome class of a request: the response's status class, or `Error`
/// when the upstream gave no usable response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeClass {
    /// 1xx
    Informational,
    /// 2xx
    Success,
    /// 3xx
    Redirection,
    /// 4xx
    ClientError,
    /// 5xx
    ServerError,
    /// No response from the upstream (see [`UpstreamErrorKind`]).
    Error,
}

impl CodeClass {
    /// Every class, in label order.
    pub const ALL: [CodeClass; 6] = [
        CodeClass::Informational,
        CodeClass::Success,
        CodeClass::Redirection,
        CodeClass::ClientError,
        CodeClass::ServerError,
        CodeClass::Error,
    ];

    /// The class of an HTTP status code.
    pub fn of_status(code: u16) -> CodeClass {
        match code {
            100..=199 => CodeClass::Informational,
            200..=299 => CodeClass::Success,
            300..=399 => CodeClass::Redirection,
            400..=499 => CodeClass::ClientError,
            _ => CodeClass::ServerError,
        }
    }

    /// Index into per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value: `1xx` … `5xx`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeClass::Informational => "1xx",
            CodeClass::Success => "2xx",
            CodeClass::Redirection => "3xx",
            CodeClass::ClientError => "4xx",
            CodeClass::ServerError => "5xx",
            CodeClass::Error => "error",
        }
    }
}

/// Why a request got no usable upstream response. Bounded: it is the `kind`
/// label of `weir_upstream_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// TCP connect refused or failed.
    Connect,
    /// TCP connect did not finish within `timeouts.connect`.
    ConnectTimeout,
    /// No response headers within `timeouts.upstream_response`.
    Timeout,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// The upstream sent something that is not valid HTTP.
    Protocol,
    /// The backend has no usable address.
    Unavailable,
    /// The TLS handshake with the upstream failed (untrusted, expired or
    /// misnamed certificate, client certificate refused, no common version).
    Tls,
    /// An HTTP/2 upstream refused the stream without processing it
    /// (`REFUSED_STREAM`, or a stream above the last one a graceful GOAWAY
    /// accepted, RFC 9113 §8.7): safe to send again, whatever the method.
    Refused,
}

impl UpstreamErrorKind {
    /// Every kind, in label order.
    pub const ALL: [UpstreamErrorKind; 8] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Unavailable,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Refused,
    ];

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Unavailable => "unavailable",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Refused => "refused",
        }
    }
}

/// Request counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// By [`CodeClass::index`].
    pub by_class: [u64; 6],
    /// By [`UpstreamErrorKind::index`] (a subset of the `Error` class).
    /// Read from any length (a fleet member of another version may know
    /// fewer or more kinds): missing kinds count 0, unknown ones are
    /// dropped (they are in `by_class` and `failed` all the same).
    #[serde(deserialize_with = "by_kind")]
    pub by_error: [u64; UpstreamErrorKind::ALL.len()],
    /// Requests that failed by the route's classifier
    /// ([`crate::classify::Classifier`]: 5xx and every upstream error by
    /// default; for gRPC calls, their `grpc-status`). What gates read.
    pub failed: u64,
}

fn by_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u64; UpstreamErrorKind::ALL.len()], D::Error> {
    let read: Vec<u64> = serde::Deserialize::deserialize(d)?;
    let mut out = [0; UpstreamErrorKind::ALL.len()];
    for (o, n) in out.iter_mut().zip(read) {
        *o = n;
    }
    Ok(out)
}

impl Counts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Requests that count as failures for gates (see [`Counts::failed`]).
    pub fn failures(&self) -> u64 {
        self.failed
    }

    /// Counts of `total` requests, `failures` of them 5xx (the rest 2xx):
    /// what the default classifier makes of them.
    pub fn of(total: u64, failures: u64) -> Counts {
        let mut c = Counts::default();
        c.by_class[CodeClass::Success.index()] = total.saturating_sub(failures);
        c.by_class[CodeClass::ServerError.index()] = failures;
        c.failed = failures;
        c
    }

    /// Failures / total, or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.failures() as f64 / total as f64)
    }

    /// Requests of one class.
    pub fn class(&self, c: CodeClass) -> u64 {
        self.by_class[c.index()]
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        for (a, b) in self.by_error.iter_mut().zip(other.by_error) {
            *a += b;
        }
        self.failed += other.failed;
    }
}

/// The bucket layout of the proxy's lock-free latency shards: exact below
/// 64 µs, then 64 linear sub-buckets per power of two (≤ 1.6 % relative
/// error), up to [`bucket::MAX_MICROS`] (values above are clamped).
pub mod bucket {
    const SUB_BITS: u32 = 6;
    const SUB: u64 = 1 << SUB_BITS;
    /// Largest recorded latency in µs (60 s).
    pub const MAX_MICROS: u64 = 60_000_000;
    /// Number of buckets.
    pub const COUNT: usize = index(MAX_MICROS) + 1;

    /// Bucket of a latency in µs.
    pub const fn index(micros: u64) -> usize {
        let v = if micros > MAX_MICROS { MAX_MICROS } else { micros };
        if v < SUB {
            return v as usize;
        }
        let magnitude = 63 - v.leading_zeros();
        let shift = magnitude - SUB_BITS;
        let sub = (v >> shift) - SUB;
        ((shift as u64 + 1) * SUB + sub) as usize
    }

    /// The middle of a bucket's range, in µs (used when merging).
    pub const fn value(index: usize) -> u64 {
        let i = index as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        low(index) + ((1u64 << shift) >> 1)
    }

    /// The lowest latency a bucket holds, in µs.
    pub const fn low(index: usize) -> u64 {
        let i = index as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        (SUB + i % SUB) << shift
    }
}

/// Latency distribution of a window, in microseconds.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl PartialEq for Latency {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Latency {
    /// An empty distribution (1 µs to 60 s, 2 significant digits).
    #[allow(clippy::expect_used)] // constant bounds that hdrhistogram accepts
    pub fn new() -> Self {
        Latency(Histogram::new_with_bounds(1, bucket::MAX_MICROS, 2).expect("valid histogram bounds"))
    }

    /// Builds a distribution from per-bucket counts laid out by [`bucket`].
    pub fn from_buckets(counts: &[u64]) -> Self {
        let mut l = Latency::new();
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 {
                l.0.saturating_record_n(bucket::value(i).max(1), n);
            }
        }
        l
    }

    /// Records `n` samples of `micros`.
    pub fn record_n(&mut self, micros: u64, n: u64) {
        self.0.saturating_record_n(micros.clamp(1, bucket::MAX_MICROS), n);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1), or `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.0.is_empty()).then(|| Duration::from_micros(self.0.value_at_quantile(q)))
    }

    /// Adds another distribution.
    pub fn add(&mut self, other: &Latency) {
        // Same bounds by construction; an error would only mean saturation.
        let _ = self.0.add(&other.0);
    }

    /// The underlying histogram (for rank tests over buckets).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }
}

/// Synthetic checks sent to the canary since the stage started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checks {
    /// Got their expected status.
    pub passed: u64,
    /// Did not (another status, or no response).
    pub failed: u64,
}

impl Checks {
    /// All checks.
    pub fn total(&self) -> u64 {
        self.passed + self.failed
    }
}

/// What weir itself sent to the canary since the stage started: synthetic
/// checks (failed = wrong status) and shadow copies (failed = answer differed
/// from stable's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probes {
    /// Synthetic checks.
    pub synthetic: Checks,
    /// Shadow comparisons.
    pub shadow: Checks,
}

/// One second of one backend: requests and failures (5xx and upstream
/// errors). The gates read bursts and short spans from these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Second {
    /// The second (in the recorder's own count, only compared with others).
    pub sec: u64,
    /// Requests.
    pub total: u64,
    /// Failed requests among them.
    pub failures: u64,
}

/// One backend's requests over a window of time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// The span the window covers.
    pub span: Duration,
    /// Requests by outcome.
    pub counts: Counts,
    /// Latency from request received to upstream response headers.
    pub latency: Latency,
    /// The same requests second by second, oldest first (seconds without
    /// requests left out).
    pub seconds: Vec<Second>,
}

impl Window {
    /// Requests and failures of the last `secs` seconds of the window
    /// (counted back from its newest second).
    pub fn recent(&self, secs: u64) -> (u64, u64) {
        let Some(newest) = self.seconds.last().map(|s| s.sec) else { return (0, 0) };
        self.seconds
            .iter()
            .rev()
            .take_while(|s| s.sec + secs > newest)
            .fold((0, 0), |(n, x), s| (n + s.total, x + s.failures))
    }

    /// Requests and failures of the seconds from `sec` on.
    pub fn since(&self, sec: u64) -> (u64, u64) {
        self.seconds.iter().filter(|s| s.sec >= sec).fold((0, 0), |(n, x), s| (n + s.total, x + s.failures))
    }

    /// Counts `n` requests still unanswered long after they were sent as
    /// failed (upstream timeouts) in second `sec`, the window's newest: a
    /// hung backend then shows as failing before any timeout fires.
    pub fn add_unanswered(&mut self, sec: u64, n: u64) {
        if n == 0 {
            return;
        }
        let mut c = Counts::default();
        c.by_class[CodeClass::Error.index()] = n;
        c.by_error[UpstreamErrorKind::Timeout.index()] = n;
        c.failed = n;
        let sec = self.seconds.last().map_or(sec, |s| s.sec.max(sec));
        self.push_second(sec, &c);
    }

    /// Records one second of counts (simulations and tests; the proxy
    /// builds windows from its own slots).
    pub fn push_second(&mut self, sec: u64, counts: &Counts) {
        self.counts.add(counts);
        let (total, failures) = (counts.total(), counts.failures());
        match self.seconds.last_mut() {
            Some(last) if last.sec == sec => {
                last.total += total;
                last.failures += failures;
            }
            _ if total > 0 => self.seconds.push(Second { sec, total, failures }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_layout_is_monotonic_and_accurate() {
        let mut last = 0;
        for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 50_000, 1_000_000, 59_999_999, 60_000_000, u64::MAX] {
            let i = bucket::index(v);
            assert!(i >= last, "{v}");
            assert!(i < bucket::COUNT);
            last = i;
            if (1..=bucket::MAX_MICROS).contains(&v) {
                let mid = bucket::value(i) as f64;
                assert!((mid - v as f64).abs() / v as f64 <= 0.016, "{v} → {mid}");
            }
        }
        const { assert!(bucket::COUNT < 1400) };
    }

    /// A fleet member of an older version (7 error kinds, before
    /// `refused`) or a newer one still has its report read.
    #[test]
    fn counts_read_from_another_versions_error_kinds() {
        let mut c = Counts::of(100, 3);
        c.by_error[UpstreamErrorKind::Reset.index()] = 2;
        let mut json = serde_json::to_value(c).unwrap_or_default();
        let short: Vec<u64> = c.by_error[..7].to_vec();
        json["by_error"] = serde_json::json!(short);
        let read: Counts = serde_json::from_value(json.clone()).unwrap_or_default();
        assert_eq!(read, c);
        let mut long = c.by_error.to_vec();
        long.push(9);
        json["by_error"] = serde_json::json!(long);
        assert_eq!(serde_json::from_value::<Counts>(json).ok(), Some(c));
    }

    #[test]
    fn window_math() {
        let mut c = Counts::default();
        c.by_class[CodeClass::Success.index()] = 90;
        c.by_class[CodeClass::ServerError.index()] = 6;
        c.by_class[CodeClass::Error.index()] = 4;
        c.failed = 10;
        assert_eq!(c.total(), 100);
        assert_eq!(c.error_rate(), Some(0.1));
        assert_eq!(Counts::default().error_rate(), None);
        assert_eq!(CodeClass::of_status(204), CodeClass::Success);
        assert_eq!(CodeClass::of_status(503).as_str(), "5xx");

        let mut buckets = vec![0u64; bucket::COUNT];
        buckets[bucket::index(50_000)] = 99;
        buckets[bucket::index(2_000)] = 1;
        let l = Latency::from_buckets(&buckets);
        assert_eq!(l.count(), 100);
        let p50 = l.quantile(0.5).unwrap().as_micros() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.03, "{p50}");
        assert!(Latency::new().quantile(0.5).is_none());
    }
}
